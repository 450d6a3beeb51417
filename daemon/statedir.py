"""Claiming the state directory before a single checkpoint is read from it.

Three checks, each of which used to fail late and badly (issue #11, points 9-11):

1. **It is our directory**: created 0700 if missing; a path that exists but is not a directory
   is refused (it used to be chmod'ed 0700 first); the mode of an existing directory is tightened
   only if we own it (chmod on somebody else's directory fails, or worse, succeeds as root).
2. **Nobody else uses it**: an exclusive ``flock`` on :data:`LOCK_NAME` inside it, held for the
   daemon's lifetime. A second daemon with another socket and the same state dir would restore
   the first one's sessions, fight it for their handles and overwrite its checkpoints.
3. **It can be written**: a probe file is created, written, fsync'ed and removed. A read-only
   directory used to let the daemon report READY and then hang every ``session.open`` on a
   checkpoint that could never be written.

Each failure is a :class:`ConfigError` with one line naming the directory; ``geminid run``
prints it and exits 2. The lock and probe file names start with ``.`` so they never collide
with a checkpoint (``<session>.ckpt``) and the loader ignores them.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import attrs
import structlog

from geminid.daemon import pidlock
from geminid.daemon.errors import ConfigError

log = structlog.get_logger("geminid.statedir")

LOCK_NAME = ".geminid.lock"
PROBE_PREFIX = ".geminid.probe-"


def _fail(directory: Path, reason: str) -> ConfigError:
    return ConfigError(f"state_dir: {directory}: {reason}", data={"key": "state_dir"})


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` 0700 (parents as needed) or check that it is a directory; tighten
    its mode to 0700 only if it is ours. Raises :class:`ConfigError`."""
    try:
        os.mkdir(directory, 0o700)
        log.info("checkpoint.dir_created", directory=str(directory))
        return
    except FileExistsError:
        pass
    except FileNotFoundError:
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(directory, 0o700)
        except OSError as exc:
            raise _fail(directory, f"cannot create it: {exc.strerror or exc}") from None
        log.info("checkpoint.dir_created", directory=str(directory))
        return
    except OSError as exc:
        raise _fail(directory, f"cannot create it: {exc.strerror or exc}") from None
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise _fail(directory, f"cannot stat it: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _fail(directory, "exists and is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode == 0o700:
        return
    if st.st_uid != os.geteuid():
        # Not ours: leave its mode alone (the writability probe decides whether we can use it).
        log.warning("checkpoint.dir_not_ours", directory=str(directory), owner=st.st_uid, mode=oct(mode))
        return
    os.chmod(directory, 0o700)
    log.warning("checkpoint.dir_mode_fixed", directory=str(directory), was=oct(mode))


def probe_writable(directory: Path) -> None:
    """Create, write, fsync and remove a probe file in ``directory``; ConfigError if any fails."""
    path = directory / f"{PROBE_PREFIX}{secrets.token_hex(4)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"geminid write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(path)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise _fail(directory, f"not writable: {exc.strerror or exc}") from None


@attrs.define
class StateDir:
    """A claimed state directory: the lock is held until :meth:`release`."""

    path: Path
    _lock_fd: int | None

    def release(self) -> None:
        if self._lock_fd is not None:
            pidlock.release(self._lock_fd)
            self._lock_fd = None


def claim(directory: Path) -> StateDir:
    """Make sure ``directory`` is ours, lock it and prove it writable (blocking: run in a
    thread). Raises :class:`ConfigError` with one line on any failure, holding nothing."""
    directory = Path(directory)
    ensure_dir(directory)
    lock_path = directory / LOCK_NAME
    try:
        fd = pidlock.acquire(lock_path)
    except pidlock.LockHeld as held:
        who = f"pid {held.pid}" if held.pid is not None else "another process"
        raise _fail(directory, f"in use by another geminid ({who} holds {lock_path})") from None
    except OSError as exc:
        raise _fail(directory, f"not writable: cannot open {LOCK_NAME}: {exc.strerror or exc}") from None
    try:
        probe_writable(directory)
    except BaseException:
        pidlock.release(fd)
        raise
    return StateDir(directory, fd)
