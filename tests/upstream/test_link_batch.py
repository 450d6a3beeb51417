"""``UpstreamLink.send_many``: several frames in one write, each still its own WebSocket frame.

The relay's writer hands every queued frame to one ``send_many`` call (one syscall per batch,
not per frame). A real trio-websocket server over a memory stream reads them back: same frames,
same order; the client's stream saw a single ``send_all`` for the batch.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager, contextmanager

import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st
from trio_websocket import wrap_server_stream

from geminid.daemon.upstream import Dial, Ended, Endpoint, FixedKey, open_link
from geminid.daemon.upstream.link import UpstreamLink, _plain_text_frames_ok, client_text_frames
from geminid.protocol import live

SETUP = live.encode(live.setup("models/gemini-3.8-live"))


class CountingStream(trio.abc.Stream):
    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0

    async def send_all(self, data) -> None:
        self.writes += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _peer(server: trio.abc.Stream, got: list[str], n: int, done: trio.Event) -> None:
    from trio_websocket import ConnectionClosed

    async with trio.open_nursery() as nursery:
        request = await wrap_server_stream(nursery, server)
        ws = await request.accept()
        await ws.get_message()  # setup
        await ws.send_message(json.dumps({"setupComplete": {}}))
        while len(got) < n:
            try:
                got.append(await ws.get_message())
            except ConnectionClosed:
                break
        done.set()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _linked(nursery, n: int):
    """A link over a counting memory stream to a real trio-websocket peer expecting ``n`` frames."""
    client, server = trio.testing.memory_stream_pair()
    counting = CountingStream(client)
    got: list[str] = []
    done = trio.Event()
    nursery.start_soon(_peer, server, got, n, done)

    async def connector(ep: Endpoint) -> trio.abc.Stream:
        return counting

    dial = Dial(Endpoint.parse("ws://127.0.0.1:1/x"), FixedKey("k"), 5, 5, 1 << 20, connector=connector)
    with trio.fail_after(10):
        async with trio.open_nursery() as conn:
            link, _ = await open_link(conn, dial, SETUP)
            yield link, counting, got, done
            conn.cancel_scope.cancel()


async def test_send_many_writes_the_batch_at_once_and_keeps_frames_and_order(nursery):
    wires = [live.encode(live.realtime_text(f"chunk {i}")) for i in range(10)]
    async with _linked(nursery, len(wires)) as (link, counting, got, done):
        before = counting.writes
        await link.send_many(wires)
        assert counting.writes == before + 1
        assert link.bytes_up == len(SETUP) + sum(map(len, wires))
        await done.wait()
        assert got == wires


async def test_send_many_on_a_closed_link_ends_it(nursery):
    client, server = trio.testing.memory_stream_pair()
    got: list[str] = []
    nursery.start_soon(_peer, server, got, 1, trio.Event())

    async def connector(ep: Endpoint) -> trio.abc.Stream:
        return client

    dial = Dial(Endpoint.parse("ws://127.0.0.1:1/x"), FixedKey("k"), 5, 5, 1 << 20, connector=connector)
    with trio.fail_after(10):
        async with trio.open_nursery() as conn:
            link, _ = await open_link(conn, dial, SETUP)
            await link.close()
            try:
                await link.send_many(["{}", "{}"])
            except Ended:
                pass
            else:
                raise AssertionError("send_many on a closed link must raise Ended")
            conn.cancel_scope.cancel()


async def test_send_many_falls_back_to_one_frame_at_a_time_without_the_internals(nursery):
    # A trio-websocket release without the private attributes send_many batches through: the
    # frames still arrive, in order, one write each, instead of an AttributeError mid-relay.
    wires = [live.encode(live.realtime_text(f"chunk {i}")) for i in range(4)]
    async with _linked(nursery, len(wires)) as (link, counting, got, done):
        ws = link._ws

        class Renamed:  # what a future release might expose: the public API only
            def __getattr__(self, name: str):
                if name == "_wsproto":
                    raise AttributeError(name)
                return getattr(ws, name)

        renamed = UpstreamLink(Renamed(), link._stream)  # type: ignore[arg-type]
        before = counting.writes
        await renamed.send_many(wires)
        assert counting.writes == before + len(wires)
        await done.wait()
        assert got == wires


@given(
    st.lists(st.text(max_size=300), min_size=1, max_size=3),
    st.binary(min_size=12, max_size=12),
)
@example(["", "x" * 125, "y" * 126], bytes(12))
@example(["é" * 40_000, "z" * 65_535, "w" * 65_536], bytes(range(12)))
@settings(max_examples=60, deadline=None)
def test_direct_frames_are_wsprotos_bytes(wires, keys):
    """``client_text_frames`` writes exactly what wsproto writes for the same masking keys
    (every length encoding: 7-bit, 16-bit, 64-bit; non-ASCII text; an empty frame)."""
    from wsproto.frame_protocol import FrameProtocol

    try:
        for w in wires:
            w.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate cannot be a text frame (live.encode never makes one)
    proto = FrameProtocol(client=True, extensions=[])
    expected = b""
    for i, wire in enumerate(wires):
        key = keys[4 * i : 4 * i + 4]
        with mock_urandom(key):
            expected += bytes(proto.send_data(wire, True))
    assert client_text_frames(wires, keys) == expected


@contextmanager
def mock_urandom(key: bytes):
    """wsproto draws its masking key with os.urandom(4); hand it the key under test."""
    import os

    saved = os.urandom
    os.urandom = lambda n: key  # type: ignore[assignment]
    try:
        yield
    finally:
        os.urandom = saved


async def test_send_many_uses_the_direct_frames_on_a_plain_connection(nursery):
    wires = [live.encode(live.realtime_audio(bytes(range(256)) * 4)) for _ in range(3)]
    async with _linked(nursery, len(wires)) as (link, counting, got, done):
        assert _plain_text_frames_ok(link._ws)
        await link.send_many(wires)
        await done.wait()
        assert got == wires  # a real trio-websocket server unmasked and decoded them
