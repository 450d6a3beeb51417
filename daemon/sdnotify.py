"""systemd glue without libsystemd: sd_notify, the watchdog, socket activation.

* :func:`notify` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
  socket). Without the variable it does nothing and returns False, so the daemon runs the same
  outside systemd. It never blocks the event loop (``MSG_DONTWAIT``): a full queue loses the
  message rather than wedging the loop.
* :class:`Notifier` names the messages geminid sends (READY, STATUS, STOPPING, RELOADING,
  WATCHDOG, EXTEND_TIMEOUT_USEC).
* :func:`watchdog_interval` and :func:`run_watchdog` implement ``WatchdogSec=``.
* :func:`listen_fds` takes the listening socket(s) of ``geminid.socket`` (fd 3...).

The protocol is documented in sd_notify(3) and sd_listen_fds(3); it is stable and small.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping, MutableMapping

import structlog
import trio

from geminid.daemon.errors import ConfigError

SD_LISTEN_FDS_START = 3

log = structlog.get_logger("geminid.sdnotify")


def _address(env_value: str) -> str | bytes | None:
    if env_value.startswith("@"):
        return b"\0" + env_value[1:].encode()
    if env_value.startswith("/"):
        return env_value
    return None  # vsock: and other forms are not supported


def notify(*lines: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) as one datagram to ``$NOTIFY_SOCKET``.

    Returns True when the datagram was sent, False when there is no (usable) notify socket or
    the send failed. Never raises for a missing or dead socket: notification is best effort.
    """
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET")
    if not target or not lines:
        return False
    address = _address(target)
    if address is None:
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(payload, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, address)
    except OSError:
        return False
    return True


class Notifier:
    """The messages geminid sends to its service manager. Every method returns :func:`notify`'s
    result. ``environ`` is read at each call, so a test can point it at its own socket."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self._environ = environ

    @property
    def enabled(self) -> bool:
        env = os.environ if self._environ is None else self._environ
        return bool(env.get("NOTIFY_SOCKET"))

    def send(self, *lines: str) -> bool:
        return notify(*lines, environ=self._environ)

    def ready(self, status: str | None = None) -> bool:
        """Startup finished (socket listening, sessions restored): systemd starts dependants.
        Also sent after a reload, to end RELOADING=1."""
        lines = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        return self.send(*lines, f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by ``systemctl status``."""
        return self.send("STATUS=" + text.replace("\n", " "))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """Start of a SIGHUP reload; follow with :meth:`ready` when done. MONOTONIC_USEC is
        what newer systemd (Type=notify-reload) wants; systemd 252 ignores it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time in a start or stop phase (long checkpoint flush at shutdown)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """``WatchdogSec=`` in seconds, or None when the watchdog is off or meant for another
    process (``WATCHDOG_PID`` set and not ours) or the variables are malformed."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000


#: A tick later than this fraction of the ping period is reported as loop lag.
LAG_FRACTION = 0.25


async def run_watchdog(
    notifier: Notifier,
    interval: float | None,
    *,
    health: Callable[[], bool] = lambda: True,
    lag_threshold: float | None = None,
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval / 2`` seconds, for as long as the task runs.

    This runs as an ordinary task on the trio event loop, on purpose: the pings are proof that
    the loop itself is turning. If some code blocks the loop (a synchronous fsync, a CPU-bound
    loop, a deadlock in a C extension), this task is not scheduled either, the pings stop, and
    systemd kills and restarts the daemon after ``WatchdogSec=``. A thread pinging on its own
    would keep a wedged daemon alive forever.

    ``health`` is asked before each ping; when it returns False (or raises) the ping is
    skipped and ``watchdog.unhealthy`` logged, so a daemon that knows it is broken (the
    supervisor has escalated but cannot exit) is restarted too.

    Each tick also measures how late it woke up. A tick later than ``lag_threshold``
    (default: a quarter of the ping period) logs ``watchdog.loop_lag`` with ``lag_ms``: an early
    warning that something blocks the loop, before the watchdog actually fires.

    With ``interval`` None (no watchdog configured) it returns at once.
    """
    if not interval or interval <= 0:
        return
    period = interval / 2
    threshold = period * LAG_FRACTION if lag_threshold is None else lag_threshold
    deadline = trio.current_time()
    while True:
        try:
            healthy = bool(health())
        except Exception as exc:  # a broken health check means: not healthy
            log.warning("watchdog.health_check_failed", error=repr(exc))
            healthy = False
        if healthy:
            notifier.watchdog()
        else:
            log.warning("watchdog.unhealthy")
        deadline += period
        await trio.sleep_until(deadline)
        lag = trio.current_time() - deadline
        if lag > threshold:
            log.warning("watchdog.loop_lag", lag_ms=round(lag * 1000, 1))
            deadline = trio.current_time()  # don't try to catch up with a burst of pings


def _check_listening(sock: socket.socket, fd: int) -> str | None:
    if sock.family != socket.AF_UNIX:
        return f"fd {fd} is not an AF_UNIX socket (family {sock.family!r})"
    if sock.type != socket.SOCK_STREAM:
        return f"fd {fd} is not a SOCK_STREAM socket (type {sock.type!r})"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return f"fd {fd} is not listening (use ListenStream= in the .socket unit)"
    return None


def listen_fds(
    environ: MutableMapping[str, str] | None = None, *, unset_environment: bool = True
) -> list[socket.socket]:
    """The sockets passed by systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``).

    Returns ``[]`` when nothing was passed to this process (no variables, or ``LISTEN_PID``
    names another process, e.g. a parent that did not clean up). Every passed fd must be a
    listening AF_UNIX stream socket (``ListenStream=/path``); anything else raises
    :class:`ConfigError` naming the fd and the reason, and closes the fds. The fds are marked
    close-on-exec, and ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` are removed from the
    environment (unless ``unset_environment=False``) so that no child inherits them.
    """
    env = os.environ if environ is None else environ
    pid_s, fds_s = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
    if not pid_s or not fds_s:
        return []
    try:
        pid, count = int(pid_s), int(fds_s)
    except ValueError:
        raise ConfigError(
            f"socket activation: malformed LISTEN_PID={pid_s!r} / LISTEN_FDS={fds_s!r}"
        ) from None
    if pid != os.getpid():
        return []
    if count < 0:
        raise ConfigError(f"socket activation: LISTEN_FDS={count} is negative")
    sockets: list[socket.socket] = []
    problem: str | None = None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            problem = f"fd {fd} is not open ({exc.strerror})"
            break
        if not stat.S_ISSOCK(mode):
            problem = f"fd {fd} is not a socket"
            break
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sockets.append(sock)
        problem = _check_listening(sock, fd)
        if problem:
            break
    if problem:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        raise ConfigError(f"socket activation: {problem}")
    return sockets
