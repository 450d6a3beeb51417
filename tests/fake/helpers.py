"""A minimal trio-websocket client for testing the fake upstream over loopback or memory streams.

It follows TRIO_NOTES' workaround: open the stream ourselves, wrap it, always close it forcefully.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from geminid.daemon.fake import FakeUpstream
from geminid.daemon.fake.routing import ws_path
from geminid.protocol import live

#: The model the generic tests use, with TEXT replies: the fake's generic mechanics (resumption,
#: faults, framing) are asserted on text, so conftest's fakes use text_catalogue() (TEXT on 3.8 is
#: UNCONFIRMED on the Developer API; Vertex lists it). test_catalogue/test_live_2026 test the
#: strict 2026 catalogue itself.
MODEL = "models/gemini-3.8-live"


class Client:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.empty_frames = 0
        self.received: list[dict] = []

    async def send(self, msg: dict | str | bytes) -> None:
        if isinstance(msg, dict):
            msg = json.dumps(msg)
        await self.ws.send_message(msg)

    async def recv(self, *, keep_empty: bool = False, limit: float = 10) -> dict:
        """Next server message (binary frames required); ``{}`` frames skipped unless asked."""
        with trio.fail_after(limit):
            while True:
                raw = await self.ws.get_message()
                assert isinstance(raw, bytes), "the server must send binary frames"
                msg = json.loads(raw.decode("utf-8"))
                if msg == {} and not keep_empty:
                    self.empty_frames += 1
                    continue
                self.received.append(msg)
                return msg

    async def recv_until(self, pred: Any, *, limit: float = 10) -> list[dict]:
        """Messages up to and including the first one for which ``pred(msg)`` is true."""
        out = []
        with trio.fail_after(limit):
            while True:
                msg = await self.recv(limit=limit)
                out.append(msg)
                if pred(msg):
                    return out

    async def turn(self, *, limit: float = 10) -> list[dict]:
        """Messages up to and including the next turnComplete."""
        return await self.recv_until(lambda m: m.get("serverContent", {}).get("turnComplete"), limit=limit)

    async def closed(self, *, limit: float = 10) -> tuple[int, str | None]:
        """Drain until the connection closes; the close code and reason."""
        with trio.fail_after(limit):
            while True:
                try:
                    await self.ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason is not None
                    return exc.reason.code, exc.reason.reason

    async def setup(self, *, resumption: dict | None = None, **kwargs: Any) -> list[dict]:
        """Send setup; return setupComplete and, with resumption, the first update."""
        kwargs.setdefault("session_resumption", resumption)
        if "model" not in kwargs:
            kwargs.setdefault("response_modalities", ["TEXT"])
        await self.send(live.setup(kwargs.pop("model", MODEL), **kwargs))
        first = await self.recv()
        assert "setupComplete" in first, first
        out = [first]
        if kwargs.get("session_resumption") is not None:
            out.append(await self.recv())
            assert "sessionResumptionUpdate" in out[-1], out[-1]
        return out

    async def say(self, text: str, *, turn_complete: bool = True) -> None:
        await self.send(live.client_content(text, turn_complete=turn_complete))


def text_of(msgs: list[dict]) -> str:
    out = []
    for m in msgs:
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "text" in part:
                out.append(part["text"])
    return "".join(out)


def handles_in(msgs: list[dict]) -> list[str]:
    return [
        m["sessionResumptionUpdate"]["newHandle"]
        for m in msgs
        if m.get("sessionResumptionUpdate", {}).get("resumable")
    ]


@asynccontextmanager
async def _wrapped(stream: trio.abc.Stream, path: str, headers: list[tuple[bytes, bytes]]) -> AsyncIterator[Client]:
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", path, extra_headers=headers)
            try:
                yield Client(ws)
                with trio.move_on_after(2):
                    await ws.aclose()
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def _headers(key: str | None, extra: list[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
    headers = list(extra or [])
    if key is not None:
        headers.append((b"x-goog-api-key", key.encode()))
    return headers


@asynccontextmanager
async def connect(
    fake: FakeUpstream,
    *,
    key: str | None = "test-key",
    path: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Client]:
    """A client over loopback TCP to ``fake`` (which must be serving)."""
    assert fake.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", fake.port)
    async with _wrapped(stream, path or ws_path(), _headers(key, headers)) as client:
        yield client


@asynccontextmanager
async def connect_memory(
    fake: FakeUpstream,
    nursery: trio.Nursery,
    *,
    key: str | None = "test-key",
    path: str | None = None,
) -> AsyncIterator[Client]:
    """A client over an in-memory stream pair (exact timing under MockClock)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(fake.serve_stream, server_stream)
    async with _wrapped(client_stream, path or ws_path(), _headers(key, None)) as client:
        yield client


def transcript_of(msgs: list[dict]) -> str:
    """The ``outputTranscription`` fragments of ``msgs``, joined: an audio reply's text."""
    return "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for m in msgs
        if "outputTranscription" in m.get("serverContent", {})
    )


def status_of(msg: dict) -> str | None:
    """The ``interactionStatus`` of a server message (None when absent)."""
    return msg.get("serverContent", {}).get("interactionStatus")


def is_idle(msg: dict) -> bool:
    """A message that ends the interaction (the SDK's rule, :func:`live.interaction_complete`)."""
    parsed = live.parse_server_frame(json.dumps(msg)) if msg else None
    return parsed is not None and parsed.interaction_complete
