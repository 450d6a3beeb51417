"""geminid.daemon.sdnotify against real sockets: notify, watchdog, socket activation."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
import structlog
import trio

from geminid.daemon import logsetup, sdnotify


@pytest.fixture
def dgram(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield path, s
    s.close()


def drain(s: socket.socket) -> list[bytes]:
    got = []
    s.setblocking(False)
    try:
        while True:
            got.append(s.recv(4096))
    except BlockingIOError:
        pass
    s.settimeout(2)
    return got


def test_notify_to_path_socket(dgram):
    path, s = dgram
    assert sdnotify.notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": path})
    assert s.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_to_abstract_socket():
    name = f"geminid-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(2)
        assert sdnotify.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert s.recv(4096) == b"WATCHDOG=1"


def test_notify_without_socket_is_a_noop(tmp_path):
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"}) is False
    assert sdnotify.Notifier(environ={}).ready() is False


def test_notifier_messages(dgram):
    path, s = dgram
    n = sdnotify.Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.enabled
    n.ready("2 sessions")
    n.status("line\nbreak")
    n.reloading()
    n.watchdog()
    n.stopping()
    n.extend_timeout(1.5)
    msgs = [m.decode() for m in drain(s)]
    assert msgs[0] == f"READY=1\nSTATUS=2 sessions\nMAINPID={os.getpid()}"
    assert msgs[1] == "STATUS=line break"
    assert msgs[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert msgs[3:] == ["WATCHDOG=1", "STOPPING=1", "EXTEND_TIMEOUT_USEC=1500000"]


def test_watchdog_interval():
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None


async def test_run_watchdog_pings_at_half_interval(dgram, autojump_clock):
    path, s = dgram
    n = sdnotify.Notifier(environ={"NOTIFY_SOCKET": path})
    with trio.move_on_after(10.5):
        await sdnotify.run_watchdog(n, 4.0)
    assert drain(s) == [b"WATCHDOG=1"] * 6  # t = 0, 2, 4, 6, 8, 10


async def test_run_watchdog_skips_pings_when_unhealthy(dgram, autojump_clock):
    path, s = dgram
    n = sdnotify.Notifier(environ={"NOTIFY_SOCKET": path})
    healthy = iter([True, False, "boom"])

    def health():
        v = next(healthy, True)
        if v == "boom":
            raise RuntimeError("check failed")
        return v

    with trio.move_on_after(7):
        await sdnotify.run_watchdog(n, 4.0, health=health)
    assert len(drain(s)) == 2  # t=0 ok, t=2 unhealthy, t=4 raised, t=6 ok


async def test_run_watchdog_without_interval_returns():
    await sdnotify.run_watchdog(sdnotify.Notifier(environ={}), None)


async def test_wedged_loop_stops_pings_and_logs_lag(dgram):
    path, s = dgram
    buf = io.StringIO()
    logsetup.configure_logging("info", "json", stream=buf)
    n = sdnotify.Notifier(environ={"NOTIFY_SOCKET": path})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sdnotify.run_watchdog, n, 0.2)
        await trio.sleep(0.05)
        time.sleep(0.5)  # wedge the loop: no pings can happen meanwhile  # noqa: ASYNC251
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    pings = drain(s)
    # ~0.6 s with a 0.1 s period would be 6 pings; the wedge allows 2 or 3
    assert 1 <= len(pings) <= 3
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    lags = [e for e in events if e["event"] == "watchdog.loop_lag"]
    assert lags and lags[0]["lag_ms"] >= 300
    logsetup.configure_logging("info", "json", stream=io.StringIO())
    structlog.contextvars.clear_contextvars()


CHILD = r"""
import json, os, socket, sys
os.dup2(int(sys.argv[1]), 3)
os.close(int(sys.argv[1]))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "geminid.socket"
from geminid.daemon import sdnotify
from geminid.daemon.errors import ConfigError
try:
    socks = sdnotify.listen_fds()
except ConfigError as exc:
    print(json.dumps({"error": exc.message}), flush=True)
    sys.exit(0)
left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
(s,) = socks
print(json.dumps({"fd": s.fileno(), "left": left, "inheritable": os.get_inheritable(3)}), flush=True)
conn, _ = s.accept()
conn.sendall(b"hello from fd 3\n")
conn.close()
s.close()
"""


def run_child(sock_or_fd) -> tuple[subprocess.Popen, dict]:
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(fd)], pass_fds=(fd,), stdout=subprocess.PIPE, text=True
    )
    first = json.loads(proc.stdout.readline())
    return proc, first


def test_listen_fds_with_a_real_listening_socket(tmp_path):
    path = str(tmp_path / "api.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lsock:
        lsock.bind(path)
        lsock.listen()
        proc, first = run_child(lsock)
    try:
        assert first == {"fd": 3, "left": [], "inheritable": False}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(path)
            assert c.makefile("rb").readline() == b"hello from fd 3\n"
        assert proc.wait(10) == 0
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("dgram", "fd 3 is not a SOCK_STREAM socket"),
        ("unlistened", "fd 3 is not listening"),
        ("tcp", "fd 3 is not an AF_UNIX socket"),
        ("file", "fd 3 is not a socket"),
    ],
)
def test_listen_fds_refuses_wrong_fds(tmp_path, kind, reason):
    if kind == "file":
        f = open(tmp_path / "plain", "w")  # noqa: SIM115
        obj, closer = f.fileno(), f.close
    else:
        fam = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
        typ = socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_STREAM
        sock = socket.socket(fam, typ)
        if kind == "tcp":
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        obj, closer = sock, sock.close
    try:
        proc, first = run_child(obj)
        proc.stdout.close()
        assert proc.wait(10) == 0
        assert first == {"error": f"socket activation: {reason}"} or first["error"].startswith(
            f"socket activation: {reason}"
        )
    finally:
        closer()


def test_listen_fds_for_another_pid_or_nothing():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert sdnotify.listen_fds(env) == []
    assert env == {}
    assert sdnotify.listen_fds({}) == []
    from geminid.daemon.errors import ConfigError

    with pytest.raises(ConfigError, match="malformed"):
        sdnotify.listen_fds({"LISTEN_PID": "x", "LISTEN_FDS": "1"})
