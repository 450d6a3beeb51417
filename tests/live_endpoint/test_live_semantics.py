"""The Live endpoint's own behaviour (#12, Build 2-4), with a plain WebSocket client in trio
(trio-websocket) so that every frame and close code is seen as sent:

- geminid's planned shutdown sends ``goAway {timeLeft}`` then closes 1000, and a client that
  resumes with its handle after the restart continues the conversation;
- ``/sessions/NAME`` binds to the named session JSON-RPC clients see: a JSON-RPC observer attached
  to it sees the same replies; a second Live setup that differs is refused 1007; a newer Live
  connection with the same setup takes the session over (the older one is closed 1000);
- a context loss closes the client (1011, with the reason) unless it opted in with
  ``?context_loss=continue``; then it goes on in the new conversation.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from live_harness import MODEL, LiveDaemon
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from geminid.protocol.client import open_client

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = {"model": f"models/{MODEL}", "generationConfig": {"responseModalities": ["TEXT"]}}


class Live:
    """One raw Live client: what it was sent, frame by frame."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.handle: str | None = None

    async def recv(self) -> dict[str, Any]:
        msg = json.loads(await self.ws.get_message())
        self.frames.append(msg)
        upd = msg.get("sessionResumptionUpdate")
        if upd and upd.get("newHandle"):
            self.handle = upd["newHandle"]
        return dict(msg)

    async def setup(self, handle: str | None = None, **extra: Any) -> None:
        await self.ws.send_message(json.dumps({"setup": {**SETUP, **extra,
                                                         "sessionResumption": {"handle": handle}}}))
        assert "setupComplete" in await self.recv()

    async def turn(self, text: str) -> str:
        await self.ws.send_message(json.dumps({"clientContent": {
            "turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}}))
        return await self.until_turn_complete()

    async def until_turn_complete(self) -> str:
        out = ""
        while True:
            msg = await self.recv()
            sc = msg.get("serverContent") or {}
            out += "".join(p.get("text", "") for p in (sc.get("modelTurn") or {}).get("parts", []))
            if sc.get("turnComplete"):
                return out

    async def closed(self) -> tuple[int | None, str | None, list[dict[str, Any]]]:
        """Read until the close: (code, reason, the frames before it)."""
        before = len(self.frames)
        with trio.fail_after(30):
            try:
                while True:
                    await self.recv()
            except ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason, self.frames[before:]


def _url(live: dict[str, Any], prefix: str = "", query: str = "") -> str:
    return "wss://" + live["base_url"].split("://", 1)[1] + prefix + PATH + query


@contextlib.asynccontextmanager
async def _connect(nursery: trio.Nursery, proc: LiveDaemon, url: str) -> AsyncIterator[WebSocketConnection]:
    """A wss:// client on a stream this test owns and closes (trio-websocket leaves the socket of
    a TLS connection the server closed to the garbage collector: a ResourceWarning)."""
    ctx = ssl.create_default_context(cafile=proc.live["ca_file"])
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=parts.hostname, https_compatible=True)
    try:
        ws = await wrap_client_stream(
            nursery, stream, parts.hostname, parts.path + ("?" + parts.query if parts.query else ""),
            extra_headers=[(b"x-goog-api-key", proc.token().encode())])
        try:
            yield ws
        finally:
            with trio.move_on_after(5):
                await ws.aclose()
    finally:
        await trio.aclose_forcefully(stream)


async def test_planned_shutdown_sends_goaway_then_1000_and_the_client_resumes(tmp_path, nursery, fake):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = LiveDaemon(tmp_path, fake.url(), port=port)
    try:
        live = await proc.start_live()
        async with _connect(nursery, proc, _url(live)) as ws:
            c = Live(ws)
            await c.setup()
            assert (await c.turn("my name is Ada")) == 'turn 1: heard "my name is Ada".'
            await c.recv()  # the fresh handle after turnComplete
            handle = c.handle
            async with trio.open_nursery() as n:
                n.start_soon(proc.terminate)
                code, reason, frames = await c.closed()
        assert [f for f in frames if "goAway" in f] == [{"goAway": {"timeLeft": "10s"}}]
        assert frames[-1] == {"goAway": {"timeLeft": "10s"}}  # the last frame before the close
        assert (code, reason) == (1000, "geminid is shutting down")
        assert proc.proc is not None and proc.proc.returncode == 0
        await proc.start_live()
        async with _connect(nursery, proc, _url(live)) as ws:
            c = Live(ws)
            await c.setup(handle)
            assert (await c.turn("recall")) == ('turn 2: heard "recall"; previous "my name is Ada"; '
                                                'recall ["my name is Ada"].')
    finally:
        await proc.aclose()


async def test_named_session_shared_with_a_jsonrpc_observer(tmp_path, nursery, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        url = _url(live, "/sessions/kitchen")
        async with _connect(nursery, proc, url) as ws, open_client(proc.sock_path) as rpc:
            c = Live(ws)
            await c.setup()
            listed = {s["session"]: s for s in await rpc.sessions()}
            assert "kitchen" in listed
            await rpc.attach("kitchen")
            assert (await c.turn("hello")) == 'turn 1: heard "hello".'
            seen = ""
            with trio.fail_after(20):
                while True:
                    method, params = await rpc.next_event()
                    if method != "session.message":
                        continue
                    sc = params["message"].get("serverContent") or {}
                    seen += "".join(p.get("text", "") for p in (sc.get("modelTurn") or {}).get("parts", []))
                    if sc.get("turnComplete"):
                        break
            assert seen == 'turn 1: heard "hello".'
            # a JSON-RPC client may also send into it: the Live client sees the reply
            await rpc.send("kitchen", {"clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "from rpc"}]}], "turnComplete": True}})
            text = ""
            while True:
                sc = (await c.recv()).get("serverContent") or {}
                text += "".join(p.get("text", "") for p in (sc.get("modelTurn") or {}).get("parts", []))
                if sc.get("turnComplete"):
                    break
            assert text == 'turn 2: heard "from rpc"; previous "hello".'

            # a different setup for the same name: 1007, as the service answers a bad setup
            async with _connect(nursery, proc, url) as ws2:
                other = Live(ws2)
                await ws2.send_message(json.dumps({"setup": {**SETUP, "systemInstruction": {
                    "parts": [{"text": "something else"}]}}}))
                code, reason, _ = await other.closed()
                assert code == 1007 and "different setup" in (reason or "")
            # the same setup: the newer connection takes the session over, the older one is closed
            async with _connect(nursery, proc, url) as ws3:
                newer = Live(ws3)
                await newer.setup()
                code, reason, _ = await c.closed()
                assert code == 1000 and "newer connection" in (reason or "")
                assert (await newer.turn("still here")).startswith('turn 3: heard "still here"')
    finally:
        await proc.aclose()


@pytest.mark.parametrize("opt_in", [False, True])
async def test_context_loss_closes_the_client_unless_it_opted_in(tmp_path, nursery, fake, opt_in):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        async with _connect(nursery, proc, _url(live, query="?context_loss=continue" if opt_in else "")) as ws:
            c = Live(ws)
            await c.setup()
            assert (await c.turn("my name is Ada")) == 'turn 1: heard "my name is Ada".'
            fake.expire_handles()
            await fake.drop_all()  # the resume is refused 1008 "not found": a fresh conversation
            if not opt_in:
                code, reason, _ = await c.closed()
                assert code == 1011 and "context lost" in (reason or ""), (code, reason)
            else:
                # the client goes on, in the new conversation (the fake counts from 1 again)
                with trio.fail_after(30):
                    while len(fake.accepted) < 2 or fake.accepted[-1].resumed_handle is not None:
                        await trio.sleep(0.05)
                # (a turn the old conversation took after its last handle is replayed into the
                # new one first, and "again" may interrupt its reply: read to the answer)
                got = await c.turn("again")
                with trio.fail_after(30):
                    while 'heard "again"' not in got:
                        got = await c.until_turn_complete()
                assert got.startswith(("turn 1: ", "turn 2: ")), json.dumps(c.frames[4:])
    finally:
        await proc.aclose()


@pytest.mark.parametrize(("code", "reason"), [
    (1007, "Request contains an invalid argument."),
    (1008, "Permission denied for this model."),
])
async def test_a_fatal_upstream_close_reaches_the_client_as_the_service_sent_it(tmp_path, nursery, fake,
                                                                                code, reason):
    from geminid.daemon.fake.faults import Fault

    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        async with _connect(nursery, proc, _url(live)) as ws:
            c = Live(ws)
            await c.setup()
            assert (await c.turn("hello")) == 'turn 1: heard "hello".'
            [conn] = fake.open_connections()
            conn.queue_fault(Fault.close(code, reason))
            got_code, got_reason, _ = await c.closed()
            assert (got_code, got_reason) == (code, reason)
    finally:
        await proc.aclose()


async def test_the_unix_socket_endpoint_needs_no_token_and_is_owner_only(tmp_path, nursery, fake):
    import os
    import stat

    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        path = live["socket"]
        assert path and stat.S_IMODE(os.stat(path).st_mode) == 0o600  # peers: by credentials
        stream = await trio.open_unix_socket(path)
        try:
            ws = await wrap_client_stream(nursery, stream, "localhost", PATH)  # no key at all
            c = Live(ws)
            await c.setup()
            assert (await c.turn("over unix")) == 'turn 1: heard "over unix".'
            await ws.aclose()
        finally:
            await trio.aclose_forcefully(stream)
    finally:
        await proc.aclose()
