"""The Unix-socket server over a real socket: methods, errors, framing, policies, permissions."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys

import pytest
import trio
from client_harness import MemoryService, collect, raw

from geminid.daemon.config import ServerConfig
from geminid.daemon.errors import ConfigError
from geminid.daemon.server import serve_unix
from geminid.protocol.client import RemoteError
from geminid.protocol.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LINE_TOO_LONG,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PERMISSION_DENIED,
    SETUP_MISMATCH,
    UNKNOWN_SESSION,
)

TURN = {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}}


def req(id, method, params=None):
    m = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        m["params"] = params
    return m


async def test_every_method_and_notification(server, connect, traffic):
    svc: MemoryService = server.service
    async with connect(server.path) as c:
        assert c.hello["protocol"] == 1 and "session.send" in c.hello["methods"]
        r = await c.open("kitchen", {"model": "m"})
        assert r == {"session": "kitchen", "status": "live", "created": True, "restored": False, "last_seq": 1}
        assert (await c.open("kitchen", {"model": "m"}))["created"] is False
        a = await c.attach("kitchen", since=0)
        assert a == {"session": "kitchen", "last_seq": 1, "backlog": 1, "gap": None}
        assert await c.send("kitchen", TURN) == 1
        svc.publish("kitchen", "session.tool_call_lost", {"ids": ["c1"]})
        svc.publish("kitchen", "session.context_lost", {"reason": "handle expired"})
        svc.publish("kitchen", "session.status", {"status": "backoff", "reason": "1011", "attempt": 1, "retry_in": 0.5})
        evs = await collect(c, 8)
        assert [m for m, _ in evs] == ["session.status"] + ["session.message"] * 4 + [
            "session.tool_call_lost", "session.context_lost", "session.status"]
        assert [p["seq"] for _, p in evs] == list(range(1, 9))
        assert evs[2][1]["message"]["serverContent"]["modelTurn"]["parts"][0]["text"] == "hi"
        sessions = await c.sessions()
        assert sessions[0]["session"] == "kitchen" and sessions[0]["subscribers"] == 1
        st = await c.status()
        assert st["server"]["clients"] == 1 and st["sessions"] == 1
        await c.detach("kitchen")
        assert svc.hub("kitchen").subscriber_count == 0
        await c.attach("kitchen")
        assert (await c.close("kitchen"))["status"] == "closed"
        m, p = await c.next_event()
        assert m == "session.ended" and p["reason"] == "closed by client"
        # a gap: the ring holds 64 events
        await c.open("big", {})
        for i in range(100):
            svc.publish("big", "session.message", {"message": {"i": i}})
        a = await c.attach("big", since=3)
        assert a["gap"] == {"first": 4, "last": 37, "missed": 34} and a["backlog"] == 64
        evs = await collect(c, 65)
        assert evs[0] == ("session.lagged", {"session": "big", "first": 4, "last": 37, "missed": 34})
        assert [p["seq"] for _, p in evs[1:]] == list(range(38, 102))
    assert {"session.lagged.params", "session.ended.params", "session.attach.result",
            "rpc.hello.result", "daemon.status.result", "session.list.result"} <= traffic.seen


@pytest.mark.parametrize(
    "method, params, field",
    [
        ("session.open", {"setup": {}}, "params.session"),
        ("session.open", {"session": 5, "setup": {}}, "params.session"),
        ("session.open", {"session": ".hidden", "setup": {}}, "params.session"),
        ("session.open", {"session": "a" * 65, "setup": {}}, "params.session"),
        ("session.open", {"session": "sp ace", "setup": {}}, "params.session"),
        ("session.open", {"session": "ok"}, "params.setup"),
        ("session.open", {"session": "ok", "setup": []}, "params.setup"),
        ("session.open", {"session": "ok", "setup": {"sessionResumption": {}}}, "params.setup.sessionResumption"),
        ("session.open", {"session": "ok", "setup": {"session_resumption": {}}}, "params.setup.session_resumption"),
        ("session.open", {"session": "ok", "setup": {}, "extra": 1}, "params.extra"),
        ("session.send", {"session": "ok"}, "params.message"),
        ("session.send", {"session": "ok", "message": "text"}, "params.message"),
        ("session.attach", {"session": "ok", "since": -1}, "params.since"),
        ("session.attach", {"session": "ok", "since": "3"}, "params.since"),
        ("session.attach", {"session": "ok", "since": True}, "params.since"),
        ("session.detach", {}, "params.session"),
        ("session.close", {"session": None}, "params.session"),
        ("session.list", {"x": 1}, "params.x"),
        ("daemon.status", ["a"], "params"),
        ("rpc.hello", {}, "params.protocol"),
        ("rpc.hello", {"protocol": 2}, "params.protocol"),
    ],
)
async def test_invalid_params_name_the_field(server, method, params, field):
    c = await raw(server.path)
    await c.request(req(7, method, params))
    r = await c.line()
    assert r["id"] == 7 and r["error"]["code"] == INVALID_PARAMS, r
    assert r["error"]["data"]["field"] == field
    assert r["error"]["message"].startswith(field)
    await c.aclose()


async def test_errors_map_generically(server, service):
    c = await raw(server.path)
    await c.request(req(1, "nope.method"))
    r = await c.line()
    assert r["error"]["code"] == METHOD_NOT_FOUND and r["error"]["data"] == {"method": "nope.method"}
    await c.request(req(2, "session.send", {"session": "ghost", "message": {}}))
    r = await c.line()
    assert r["error"] == {"code": UNKNOWN_SESSION, "message": "no session named 'ghost'", "data": {"session": "ghost"}}
    await c.request(req(3, "session.open", {"session": "s", "setup": {"model": "a"}}))
    await c.line()
    await c.request(req(4, "session.open", {"session": "s", "setup": {"model": "b"}}))
    assert (await c.line())["error"]["code"] == SETUP_MISMATCH
    service.fail_with = RuntimeError("secret internals /etc/key")
    await c.request(req(5, "session.send", {"session": "s", "message": {}}))
    r = await c.line()
    assert r["error"]["code"] == INTERNAL_ERROR and r["error"]["message"] == "internal error"
    assert "secret" not in json.dumps(r) and set(r["error"]["data"]) == {"incident"}
    service.fail_with = None
    await c.request(req(6, "daemon.status"))
    assert (await c.line())["id"] == 6  # still serving
    await c.aclose()


async def test_client_notifications_are_executed_not_answered(server, service):
    c = await raw(server.path)
    await c.request(req(1, "session.open", {"session": "s", "setup": {}}))
    await c.line()
    await c.request({"jsonrpc": "2.0", "method": "session.send", "params": {"session": "s", "message": {"a": 1}}})
    await c.request({"jsonrpc": "2.0", "method": "no.such"})  # not answered either
    await c.request({"jsonrpc": "2.0", "method": "session.send", "params": {}})  # bad params: silent
    await c.request(req(2, "session.list"))
    r = await c.line()
    assert r["id"] == 2
    assert service.sessions["s"].sent == [{"a": 1}]
    await c.aclose()


async def test_framing_over_socket(serve, service):
    server = await serve(max_line_bytes=1000)
    c = await raw(server.path)
    await c.send(b'{"jsonrpc":"2.0","id":1,"method":"session.list"}\r\n\n   \n')
    assert (await c.line())["id"] == 1
    await c.send(b"{" + b" " * 5000 + b"}\n")
    r = await c.line()
    assert r["id"] is None and r["error"]["code"] == LINE_TOO_LONG
    assert r["error"]["data"]["max_line_bytes"] == 1000
    await c.send(b"not json\n")
    assert (await c.line())["error"]["code"] == PARSE_ERROR
    await c.send(b'[{"jsonrpc":"2.0","id":1,"method":"session.list"}]\n')
    r = await c.line()
    assert r["error"]["code"] == INVALID_REQUEST and "batch" in r["error"]["message"]
    # a truncated last line is an error, not a request; the half-closed client still gets replies
    await c.send(b'{"jsonrpc":"2.0","id":2,"method":"session.open","params":{"session":"x","setup":{}}}\n')
    await c.send(b'{"jsonrpc":"2.0","id":3,"method":"session.open","params":{"session":"y","setup":{}}}')
    await c.stream.send_eof()
    assert (await c.line())["id"] == 2
    r = await c.line()
    assert r["id"] is None and r["error"]["code"] == PARSE_ERROR and "truncated" in r["error"]["message"]
    with pytest.raises(EOFError):
        await c.line()
    assert set(service.sessions) == {"x"}
    await c.aclose()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError


async def test_100mib_line_refused_with_bounded_memory(server):
    c = await raw(server.path)
    chunk = b"7" * (1 << 20)
    before = _rss_kib()
    await c.send(b'{"jsonrpc":"2.0","id":1,"method":"x","params":"')

    async def reader():
        return await c.line(timeout=60)

    async with trio.open_nursery() as n:
        got = []
        n.start_soon(lambda: _store(got, reader()))
        for _ in range(100):
            await c.send(chunk)
        await c.send(b'"}\n{"jsonrpc":"2.0","id":2,"method":"session.list"}\n')
    growth_mib = (_rss_kib() - before) / 1024
    assert got[0]["error"]["code"] == LINE_TOO_LONG and got[0]["id"] is None
    assert (await c.line())["id"] == 2
    assert growth_mib < 24, growth_mib  # the limit is 4 MiB; 100 MiB was streamed through
    await c.aclose()


async def _store(box, coro):
    box.append(await coro)


async def test_send_acks_may_come_out_of_order(server, service):
    c = await raw(server.path)
    for i, name in enumerate(["slow", "fast"]):
        await c.request(req(i, "session.open", {"session": name, "setup": {}}))
        await c.line()
    service.gates["slow"] = trio.Event()
    await c.request(req("a", "session.send", {"session": "slow", "message": {"n": 1}}))
    await c.request(req("b", "session.send", {"session": "slow", "message": {"n": 2}}))
    await c.request(req("c", "session.send", {"session": "fast", "message": {"n": 3}}))
    await c.request(req("d", "session.list"))
    assert {(await c.line())["id"] for _ in range(2)} == {"c", "d"}
    service.gates["slow"].set()
    acks = {}
    for _ in range(2):
        r = await c.line()
        acks[r["id"]] = r["result"]["seq"]
    assert acks == {"a": 1, "b": 2}  # seqs follow request order
    assert service.sessions["slow"].sent == [{"n": 1}, {"n": 2}]
    await c.aclose()


async def test_two_clients_get_every_event_in_order(server, connect, service):
    async with connect(server.path) as a, connect(server.path) as b:
        await a.open("s", {})
        await a.attach("s")
        await b.attach("s")
        for i in range(500):
            service.publish("s", "session.message", {"message": {"i": i}})
            if i % 50 == 0:
                await trio.lowlevel.checkpoint()
        for c in (a, b):
            evs = await collect(c, 500)
            assert [p["seq"] for _, p in evs] == list(range(2, 502))


async def test_lines_written_through_while_the_client_is_not_reading_arrive_whole(serve, service):
    """An idle client's events go straight to its socket (ClientConnection._write_through). A
    line the kernel takes only in part has its rest queued for the writer, and the lines after
    it queue behind that rest: read later, every line is whole and in order."""
    server = await serve(client_queue=64)
    slow = await raw(server.path)
    await slow.request(req(1, "session.open", {"session": "s", "setup": {}}))
    await slow.line()
    await slow.request(req(2, "session.attach", {"session": "s"}))
    assert (await slow.line())["result"]["last_seq"] == 1
    big = "y" * 300_000  # larger than a Unix socket's send buffer: a partial write
    sizes = [10, 300_000, 10, 300_000, 10]
    for i, size in enumerate(sizes):
        service.publish("s", "session.message", {"message": {"pad": big[:size], "i": i}})
    got = []
    with trio.fail_after(10):
        while len(got) < len(sizes):
            m = await slow.line()
            got.append(m["params"]["message"])
    assert [(m["i"], len(m["pad"])) for m in got] == list(enumerate(sizes))
    await slow.aclose()


async def test_slow_client_is_dropped_and_told_others_unaffected(serve, connect, service):
    server = await serve(client_queue=16)
    big = "x" * 20000
    slow = await raw(server.path)
    await slow.request(req(1, "session.open", {"session": "s", "setup": {}}))
    await slow.line()
    await slow.request(req(2, "session.attach", {"session": "s"}))
    assert (await slow.line())["result"]["last_seq"] == 1
    async with connect(server.path) as fast:
        await fast.attach("s")
        n = 400  # ~8 MB: far beyond the socket buffers and the 16-line queue
        got = []

        async def consume():
            got.extend(await collect(fast, n, timeout=20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for i in range(n):
                service.publish("s", "session.message", {"message": {"pad": big, "i": i}})
                await trio.lowlevel.checkpoint()
        assert [p["seq"] for _, p in got] == list(range(2, n + 2))  # fast saw everything
        status = await fast.status()
        assert status["server"]["events_dropped"] > 0
    # now the slow client reads: every seq is either delivered or inside an announced range
    covered = []
    lagged = 0
    while not covered or covered[-1] < n + 1:
        m = await slow.line()
        if m["method"] == "session.lagged":
            lagged += 1
            covered.extend(range(m["params"]["first"], m["params"]["last"] + 1))
        else:
            covered.append(m["params"]["seq"])
        if lagged and covered[-1] == n + 1:
            break
        if not lagged and covered[-1] == n + 1:
            break
    assert lagged >= 1
    assert covered == list(range(2, n + 2))
    await slow.aclose()


async def test_reattach_since_gets_exactly_what_was_missed(server, connect, service):
    async with connect(server.path) as c:
        await c.open("s", {})
        await c.attach("s", since=0)
        evs = await collect(c, 1)
        last = evs[-1][1]["seq"]
    for i in range(10):
        service.publish("s", "session.message", {"message": {"i": i}})
    async with connect(server.path) as c:
        a = await c.attach("s", since=last)
        assert a["backlog"] == 10 and a["gap"] is None
        evs = await collect(c, 10)
        assert [p["seq"] for _, p in evs] == list(range(last + 1, last + 11))
        service.publish("s", "session.message", {"message": {}})
        assert (await c.next_event())[1]["seq"] == last + 11


async def test_socket_mode_0600_and_unlinked_on_exit(sockdir, service):
    path = sockdir / "sub" / "g.sock"
    async with trio.open_nursery() as n:
        got = await n.start(serve_unix, service, ServerConfig(socket_path=path))
        assert got == path
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        n.cancel_scope.cancel()
    assert not path.exists()


async def test_socket_mode_0660_with_group(sockdir, service):
    import grp

    group = grp.getgrall()[-1]
    path = sockdir / "d" / "g.sock"
    async with trio.open_nursery() as n:
        await n.start(serve_unix, service, ServerConfig(socket_path=path, socket_group=group.gr_name))
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group.gr_gid
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
        n.cancel_scope.cancel()


async def test_unknown_group_is_a_config_error(sockdir, service):
    with pytest.raises(ConfigError, match="no such group"):
        await serve_unix(service, ServerConfig(socket_path=sockdir / "g.sock", socket_group="no-such-grp-x"))


async def test_refuses_a_live_socket(sockdir, service):
    path = sockdir / "g.sock"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen()
    try:
        with pytest.raises(ConfigError, match="another geminid is listening"):
            await serve_unix(service, ServerConfig(socket_path=path))
        assert path.exists()
    finally:
        other.close()


async def test_refuses_a_second_daemon_and_keeps_the_first(server, service):
    with pytest.raises(ConfigError, match="another geminid"):
        await serve_unix(service, server.cfg)
    c = await raw(server.path)
    await c.request(req(1, "session.list"))
    assert (await c.line())["id"] == 1
    await c.aclose()


async def test_replaces_a_stale_socket_not_a_file(sockdir, service):
    path = sockdir / "g.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening
    async with trio.open_nursery() as n:
        await n.start(serve_unix, service, ServerConfig(socket_path=path))
        c = await raw(path)
        await c.request(req(1, "session.list"))
        assert (await c.line())["id"] == 1
        await c.aclose()
        # someone else replaced our socket: it must not be unlinked on exit
        os.unlink(path)
        path.write_text("not ours")
        n.cancel_scope.cancel()
    assert path.read_text() == "not ours"
    with pytest.raises(ConfigError, match="not a socket"):
        await serve_unix(service, ServerConfig(socket_path=path))


async def test_overlong_socket_path_is_a_config_error(service):
    with pytest.raises(ConfigError, match="AF_UNIX"):
        await serve_unix(service, ServerConfig(socket_path="/tmp/" + "x" * 120))


async def test_activated_socket_is_used_and_left_alone(sockdir, service):
    path = sockdir / "act.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    async with trio.open_nursery() as n:
        await n.start(lambda task_status: serve_unix(service, ServerConfig(socket_path=sockdir / "x"), sock=s, task_status=task_status))
        c = await raw(path)
        await c.request(req(1, "daemon.status"))
        assert (await c.line())["result"]["server"]["socket"] == str(path)
        await c.aclose()
        n.cancel_scope.cancel()
    assert path.exists()


SYSTEM_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
UID_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"rpc.hello","params":{"protocol":1}}\n')
except OSError:
    pass
buf = b""
while not buf.endswith(b"\n"):
    d = s.recv(4096)
    if not d:
        break
    buf += d
print(buf.decode().strip())
"""


@pytest.mark.parametrize("allowed", [False, True])
async def test_peer_uid_refused_or_allowed(serve, sockdir, allowed):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    server = await serve(allowed_uids=(65534,) if allowed else ())
    os.chmod(sockdir, 0o755)
    os.chmod(server.path, 0o666)  # let uid 65534 reach the socket at the file-system level
    py = SYSTEM_PY
    proc = await trio.run_process(
        [py, "-c", UID_CLIENT, str(server.path)],
        capture_stdout=True, capture_stderr=True, user=65534, group=65534, extra_groups=[],
    )
    reply = json.loads(proc.stdout)
    if allowed:
        assert reply["result"]["protocol"] == 1
    else:
        assert reply["id"] is None and reply["error"]["code"] == PERMISSION_DENIED
        assert reply["error"]["data"] == {"uid": 65534}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_fd_or_task_leaks_over_many_connections(server, connect):
    async with connect(server.path) as probe:
        await probe.open("s", {})
        before = _fds()
        for i in range(1500):
            s = await trio.open_unix_socket(str(server.path))
            kind = i % 5
            if kind == 1:
                await s.send_all(b'{"jsonrpc":"2.0","id":1,"method":"session.attach","params":{"session":"s"}}\n')
            elif kind == 2:
                await s.send_all(b'{"jsonrpc":"2.0","id":1,"meth')  # vanish mid-line
            elif kind == 3:
                await s.send_all(b'{"jsonrpc":"2.0","id":1,"method":"session.list"}\n')
                await s.receive_some(100)
            await s.aclose()
        with trio.fail_after(10):
            while (await probe.status())["server"]["clients"] != 1:
                await trio.sleep(0.01)
        assert _fds() <= before + 2
        assert server.service.hub("s").subscriber_count == 0


async def test_server_survives_remote_error_in_client_lib(server, connect):
    async with connect(server.path) as c:
        with pytest.raises(RemoteError) as ei:
            await c.send("ghost", {})
        assert ei.value.code == UNKNOWN_SESSION and "ghost" in str(ei.value)
