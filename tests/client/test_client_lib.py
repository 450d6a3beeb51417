"""The trio client (including reconnect + re-attach), the asyncio client, and geminictl."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
import trio
from client_harness import MemoryService, collect

from geminid.daemon.config import ServerConfig
from geminid.daemon.server import serve_unix
from geminid.protocol.aio_client import AioClient
from geminid.protocol.client import DaemonUnreachable, RemoteError, default_socket_path, open_client
from geminid.protocol.errors import UNKNOWN_SESSION


async def test_unreachable_daemon(sockdir):
    with pytest.raises(DaemonUnreachable, match="no daemon at .*: no such file or directory"):
        async with open_client(sockdir / "none.sock"):
            pass


def test_default_socket_path(monkeypatch):
    monkeypatch.setenv("GEMINID_SOCKET", "/x/y.sock")
    assert str(default_socket_path()) == "/x/y.sock"
    monkeypatch.delenv("GEMINID_SOCKET")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert str(default_socket_path()) == "/run/user/7/geminid/geminid.sock"


async def test_exceptions_escape_the_block_unwrapped(server):
    with pytest.raises(RemoteError) as ei:
        async with open_client(server.path) as c:
            await c.close("ghost")
    assert ei.value.code == UNKNOWN_SESSION and ei.value.method == "session.close"


async def test_reconnect_reattaches_since_last_seq(sockdir, nursery):
    service = MemoryService(ring=16)
    cfg = ServerConfig(socket_path=sockdir / "g.sock")

    async def start():
        scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await serve_unix(service, cfg, task_status=task_status)

        await nursery.start(run)
        return scope

    scope = await start()
    async with open_client(cfg.socket_path, reconnect=True, backoff_initial=0.01, backoff_cap=0.05) as c:
        await c.open("s", {})
        await c.attach("s", since=0)
        assert [p["seq"] for _, p in await collect(c, 1)] == [1]
        scope.cancel()  # the daemon goes away ...
        m, p = await c.next_event()
        assert m == "client.disconnected"
        for i in range(5):  # ... the session lives on (the real one restores from its checkpoint)
            service.publish("s", "session.message", {"message": {"i": i}})
        scope = await start()
        evs = await collect(c, 6, timeout=10)
        assert evs[0][0] == "client.reconnected"
        assert [p["seq"] for _, p in evs[1:]] == [2, 3, 4, 5, 6]
        assert await c.send("s", {"x": 1}) == 1  # calls work again
        # a longer outage than the ring: the gap is announced, then the retained tail follows
        scope.cancel()
        assert (await c.next_event())[0] == "client.disconnected"
        for i in range(40):
            service.publish("s", "session.message", {"message": {"i": i}})
        scope = await start()
        evs = await collect(c, 18, timeout=10)
        assert evs[0][0] == "client.reconnected"
        assert evs[1] == ("session.lagged", {"session": "s", "first": 7, "last": 30, "missed": 24})
        assert [p["seq"] for _, p in evs[2:]] == list(range(31, 47))
        # a session that vanished during the outage is reported
        scope.cancel()
        await c.next_event()
        del service.sessions["s"]
        scope = await start()
        evs = await collect(c, 2, timeout=10)
        assert evs[0][0] == "client.reconnected"
        assert evs[1] == ("client.reattach_failed", {"session": "s", "code": UNKNOWN_SESSION, "message": "no session named 's'"})
    scope.cancel()


async def test_client_side_buffer_bound_yields_lagged(server, service):
    async with open_client(server.path, max_events=10) as c:
        await c.open("s", {})
        await c.attach("s")
        for i in range(50):
            service.publish("s", "session.message", {"message": {"i": i}})
        await c.status()  # round trip: every event is now at the client
        evs = await collect(c, 11)
        assert [p["seq"] for _, p in evs[:10]] == list(range(2, 12))
        assert evs[10] == ("session.lagged", {"session": "s", "first": 12, "last": 51, "missed": 40})


async def test_asyncio_client(server, service):
    def run() -> list:
        async def main():
            async with await AioClient.connect(server.path) as c:
                assert c.hello["protocol"] == 1
                await c.open("a", {})
                await c.attach("a", since=0)
                seq = await c.send("a", {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "yo"}]}]}})
                out = [seq]
                async for m, p in c.events():
                    out.append((m, p["seq"]))
                    if len(out) == 6:
                        break
                try:
                    await c.detach("nope")
                except RemoteError as exc:
                    out.append(exc.code)
                out.append(len(await c.sessions()))
                out.append((await c.status())["server"]["protocol"])
                return out

        return asyncio.run(main())

    out = await trio.to_thread.run_sync(run)
    assert out[0] == 1 and [s for _, s in out[1:6]] == [1, 2, 3, 4, 5]
    assert out[6:] == [1, 1] or out[6:] == [UNKNOWN_SESSION, 1, 1]


# -- geminictl as a real subprocess -------------------------------------------------------------


async def ctl(*args, stdin=b"", sock=None):
    env = dict(os.environ)
    if sock is not None:
        env["GEMINID_SOCKET"] = str(sock)
    proc = await trio.run_process(
        [sys.executable, "-m", "geminid.protocol.ctl", *args],
        stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=env,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_ctl_commands(server, service):
    sock = str(server.path)
    rc, out, err = await ctl("--socket", sock, "status")
    assert rc == 0 and json.loads(out)["server"]["protocol"] == 1, err
    rc, out, err = await ctl("open", "kitchen", "--system", "be brief", sock=sock)
    assert rc == 0 and json.loads(out)["created"] is True, err
    setup = service.sessions["kitchen"].setup
    assert setup == {
        "model": "models/gemini-3.8-live",
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "outputAudioTranscription": {},
    }
    rc, out, err = await ctl("--socket", sock, "say", "kitchen", "hello there")
    assert (rc, out) == (0, "echo: hello there\n"), err
    rc, out, err = await ctl("--socket", sock, "sessions")
    assert rc == 0 and json.loads(out.splitlines()[0])["session"] == "kitchen"
    rc, out, err = await ctl("--socket", sock, "send", "kitchen", stdin=b'{"realtimeInput": {"text": "x"}}')
    assert rc == 0 and json.loads(out) == {"seq": 2}
    # attach runs until the session ends: end it from here
    async with trio.open_nursery() as n:
        res = []

        async def attach():
            res.append(await ctl("--socket", sock, "attach", "kitchen", "--since", "2"))

        n.start_soon(attach)
        with trio.fail_after(10):
            while service.hub("kitchen").subscriber_count == 0:
                await trio.sleep(0.02)
        rc2, out2, err2 = await ctl("--socket", sock, "close", "kitchen")
        assert rc2 == 0 and json.loads(out2)["status"] == "closed"
    rc, out, err = res[0]
    lines = [json.loads(x) for x in out.splitlines()]
    assert rc == 0, err
    assert [x["params"]["seq"] for x in lines] == [3, 4, 5, 6]
    assert lines[-1]["method"] == "session.ended"


async def test_ctl_errors_and_exit_codes(server, sockdir):
    sock = str(server.path)
    rc, out, err = await ctl("--socket", sock, "close", "ghost")
    assert rc == 1 and err == "geminictl: session.close: no session named 'ghost' (code -32001)\n"
    rc, out, err = await ctl("--socket", sock, "send", "ghost", stdin=b"{nope")
    assert rc == 2 and err.startswith("geminictl: stdin is not valid JSON")
    rc, out, err = await ctl("--socket", sock, "open", ".bad")
    assert rc == 1 and "params.session" in err
    rc, out, err = await ctl("--socket", sock, "frobnicate")
    assert rc == 2 and "invalid choice" in err
    missing = sockdir / "nothing.sock"
    rc, out, err = await ctl("--socket", str(missing), "status")
    assert rc == 3 and err == f"geminictl: no daemon at {missing}: no such file or directory\n"
    import socket as _s

    stale = sockdir / "stale.sock"
    s = _s.socket(_s.AF_UNIX)
    s.bind(str(stale))
    s.close()
    rc, out, err = await ctl("--socket", str(stale), "sessions")
    assert rc == 3 and err == f"geminictl: no daemon at {stale}: connection refused\n"
    assert "Traceback" not in err
