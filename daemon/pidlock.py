"""An exclusive, advisory lock on a file that names its holder.

``flock`` rather than a pid file checked by hand: the kernel releases the lock when the holder
dies (kill -9 included), so a stale lock can never keep the next daemon out, and two daemons
racing for it cannot both win. The holder writes its pid into the file, only so that the loser
can say *who* holds it; the pid is never used to decide anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; ``pid`` is what it wrote (None if unreadable)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"{path} is locked by pid {pid if pid is not None else '(unknown)'}")
        self.path = path
        self.pid = pid


def acquire(path: Path) -> int:
    """Take the lock on ``path`` (created 0600) without blocking; return its descriptor.

    The lock lasts until the descriptor is closed (or the process ends). Raises
    :class:`LockHeld` if another process holds it, ``OSError`` if the file cannot be opened.
    """
    # The descriptor kept is read-only (flock does not need write access): a file held open for
    # writing would make the file system "busy" and keep an operator from remounting it
    # read-only. The pid is written through a second, short-lived descriptor.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _read_pid(fd)) from None
        wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(wfd, 0)
            os.pwrite(wfd, f"{os.getpid()}\n".encode(), 0)
        finally:
            os.close(wfd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
