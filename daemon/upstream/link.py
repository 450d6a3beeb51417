"""One WebSocket connection to Gemini Live: dial it, set it up, relay over it, end it.

trio-websocket 0.12.2 has two defects that matter here (TRIO_NOTES.md): its ``connect_timeout``
is not a hard bound, and a client's TCP socket can outlive a server-initiated close. So this
module opens the TCP (or TLS) stream itself, performs the handshake inside its own
``trio.fail_after``, and always force-closes the stream when the link is done. The link lives in a
nursery owned by the caller (the session actor), never in a context manager kept open across
reconnects.

Every ending (close frame, HTTP rejection, timeout, stall, OS error) is reported as an
:class:`~.endings.Ending`, the single input of the close classifier. What the dial presents
(an API key header today, a bearer token tomorrow) comes from the dial's :mod:`.auth`
credentials, awaited inside the connect timeout at every dial; this module knows no header name.
"""

from __future__ import annotations

import os
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from geminid.protocol import live
from geminid.protocol.errors import FrameError

from ..errors import ConfigError
from .auth import Credentials
from .endings import Ended
from .endpoint import Endpoint
from .translate import ending_from_closed, ending_from_exception, ending_from_frame_error

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

log = structlog.get_logger("geminid.upstream")

#: The library's receive queue is small and a reader that falls behind stops answering pings;
#: the session actor drains it in a dedicated task, and this bounds the burst it can absorb.
MESSAGE_QUEUE_SIZE = 64


@attrs.frozen
class Dial:
    """Everything needed to open one link; the same value serves every dial of a session."""

    endpoint: Endpoint
    #: Asked at every dial, so that a key rotated by SIGHUP (or a refreshed token) is used at the
    #: next reconnect.
    credentials: Credentials
    connect_timeout: float
    setup_timeout: float
    max_message_size: int
    ssl_context: ssl.SSLContext | None = None
    #: Test seam: open the byte stream some other way (e.g. trio.testing.memory_stream_pair, so
    #: that MockClock's autojump never races real socket I/O). None = TCP (+TLS for wss).
    connector: Callable[[Endpoint], Awaitable[trio.abc.Stream]] | None = None
    #: The upstream's name for the setup's model (Vertex: the full resource name); None = as given.
    model_name: Callable[[str], str] | None = None

    def upstream_setup(self, message: dict[str, object]) -> dict[str, object]:
        """``{"setup": ...}`` with the model named as this upstream wants it (a copy; pure).

        A name the rule refuses is sent as it is: the server's refusal (1008, model not found)
        is then classified like any other, instead of crashing the dial here.
        """
        body = message.get("setup")
        if self.model_name is None or not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return message
        try:
            model = self.model_name(body["model"])
        except ConfigError:
            return message
        return {**message, "setup": {**body, "model": model}}


#: The trio-websocket internals ``send_many`` relies on (0.12: no public batched send). A release
#: that renames them makes ``send_many`` fall back to one ``send_message`` per frame: slower,
#: never wrong.
_BATCH_ATTRS = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")


def _can_batch(ws: object) -> bool:
    return all(hasattr(ws, name) for name in _BATCH_ATTRS)


_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def client_text_frames(wires: Sequence[str], keys: bytes) -> bytes:
    """Complete, masked client text frames (RFC 6455 5.2, 5.3) for ``wires``, one 4-byte masking
    key each from ``keys``: byte for byte what wsproto's ``FrameProtocol.send_data`` writes for
    an unfragmented message with no extension, at about half its cost (the XOR runs on one
    integer per frame instead of four translated slices). Pure: the caller draws the keys."""
    out: list[bytes] = []
    for i, wire in enumerate(wires):
        payload = wire.encode("utf-8")
        n = len(payload)
        if n < 126:
            head = bytes((0x81, 0x80 | n))
        elif n < 65536:
            head = _LEN16.pack(0x81, 0xFE, n)
        else:
            head = _LEN64.pack(0x81, 0xFF, n)
        key = keys[4 * i : 4 * i + 4]
        mask = int.from_bytes((key * (n // 4 + 1))[:n], "little")
        out += (head, key, (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little"))
    return b"".join(out)


def _plain_text_frames_ok(ws: Any) -> bool:
    """Whether ``client_text_frames`` may stand in for wsproto on this connection: an open
    client connection, no extension negotiated (no compression bit to set), no fragmented
    message half sent. Otherwise wsproto serialises, as before."""
    from wsproto.connection import ConnectionState  # loaded by then, with trio_websocket

    conn = getattr(ws._wsproto, "connection", None)
    proto = getattr(conn, "_proto", None)
    return (
        conn is not None
        and proto is not None
        and getattr(conn, "state", None) is ConnectionState.OPEN
        and getattr(proto, "client", False) is True
        and not getattr(proto, "extensions", True)
        and getattr(proto, "_outbound_opcode", 0) is None
    )


class UpstreamLink:
    """An open, set-up connection. Only the session actor's tasks touch it."""

    def __init__(self, ws: WebSocketConnection, stream: trio.abc.Stream) -> None:
        from trio_websocket import ConnectionClosed  # loaded by then: open_link imported it

        self._closed: type[ConnectionClosed] = ConnectionClosed
        self._ws = ws
        self._stream = stream
        self._batchable = _can_batch(ws)  # (once: the library does not change under a link)
        self.bytes_up = 0
        self.bytes_down = 0

    async def send(self, wire: str) -> None:
        try:
            await self._ws.send_message(wire)
        except self._closed as exc:
            raise Ended(ending_from_closed(exc)) from None
        self.bytes_up += len(wire)

    async def send_many(self, wires: Sequence[str]) -> None:
        """Send one or more text frames, in order, with one ``send_all`` (one syscall, one lock).

        trio-websocket 0.12 has no batched send: this does what its ``send_message`` does for
        each frame (serialise it; with :func:`client_text_frames` when that is exact, else through
        its wsproto connection) and writes the bytes together, under its stream lock so that a
        concurrent ping or pong cannot interleave mid-frame.
        """
        ws = self._ws
        if not self._batchable:
            for wire in wires:
                await self.send(wire)
            return
        from wsproto.events import TextMessage  # loaded by then, with trio_websocket

        if ws._close_reason is not None:
            raise Ended(ending_from_closed(self._closed(ws._close_reason))) from None
        if _plain_text_frames_ok(ws):
            data = client_text_frames(wires, os.urandom(4 * len(wires)))
        else:
            data = b"".join([ws._wsproto.send(TextMessage(data=wire)) for wire in wires])
        lock = ws._stream_lock
        # Uncontended, taken without the lock's own schedule point: the frame goes out now,
        # not after one more pass of the scheduler (send_all still checkpoints, after writing).
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            assert ws._close_reason is not None
            raise Ended(ending_from_closed(self._closed(ws._close_reason))) from None
        finally:
            lock.release()
        self.bytes_up += sum(len(wire) for wire in wires)

    async def receive(self) -> live.ServerMessage:
        """The next non-empty server message (bare ``{}`` frames are skipped)."""
        while True:
            try:
                data = await self._ws.get_message()
            except self._closed as exc:
                raise Ended(ending_from_closed(exc)) from None
            self.bytes_down += len(data)
            try:
                msg = live.parse_server_frame(data)
            except FrameError as exc:
                raise Ended(ending_from_frame_error(exc)) from None
            if msg is not None:
                return msg

    async def ping(self) -> None:
        await self._ws.ping()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a close frame (bounded), then force the TCP stream shut."""
        with trio.move_on_after(2.0, shield=True):
            try:
                await self._ws.aclose(code, reason or None)
            except Exception:  # noqa: BLE001 - closing a broken link must not raise
                pass
        await self.abort()

    async def abort(self) -> None:
        await trio.aclose_forcefully(self._stream)


@attrs.define(eq=False)
class Handshaken:
    """A dialled connection whose WebSocket handshake is done and whose ``setup`` is not sent
    yet: the first half of a dial (:func:`dial_socket`), the second is :func:`setup_link`."""

    ws: WebSocketConnection
    stream: trio.abc.Stream
    #: trio time when the handshake completed, and how long the dial took.
    ready_at: float
    dial_s: float

    @property
    def closed(self) -> bool:
        """The peer (or a transport error) ended it: it can no longer carry a setup."""
        return self.ws.closed is not None

    async def close(self, code: int = 1000) -> None:
        """Close it unused: a close frame (bounded), then the TCP stream."""
        await UpstreamLink(self.ws, self.stream).close(code, "")


async def dial_socket(nursery: trio.Nursery, dial: Dial) -> Handshaken:
    """Dial and handshake within ``dial.connect_timeout`` (credentials, TCP, TLS, upgrade), and
    send nothing: the setup is :func:`setup_link`'s. Raises :class:`Ended` for every transport
    failure; the websocket reader task runs in ``nursery`` (it raises ConnectionRejected there,
    hence :func:`ending_from_group`) and must outlive the link.
    """
    # Here, not at the top: trio_websocket (+ wsproto, h11) is ~50 ms a start-up can skip.
    from trio_websocket import wrap_client_stream

    ep = dial.endpoint
    stream: trio.abc.Stream | None = None
    started = trio.current_time()
    #: Where the dial is, for the ending: "tls" tells a TLS failure from a TCP or upgrade one.
    stage = "connect"
    try:
        with trio.fail_after(dial.connect_timeout):
            auth = await dial.credentials.auth_for_dial()
            if dial.connector is not None:
                stream = await dial.connector(ep)
            elif ep.scheme == "wss":
                ctx = dial.ssl_context or ssl.create_default_context()
                tls = await trio.open_ssl_over_tcp_stream(ep.host, ep.port, ssl_context=ctx)
                stream = tls
                # Explicitly, not on the first write: a failure here is then known to be TLS's.
                stage = "tls"
                await tls.do_handshake()
                stage = "connect"
            else:
                stream = await trio.open_tcp_stream(ep.host, ep.port)
            ws = await wrap_client_stream(
                nursery,
                # Any trio Stream works (the memory connector of the tests is one); the library's
                # annotation names only the two it opens itself.
                stream,  # type: ignore[arg-type]
                ep.authority,
                ep.resource_with(auth.query),
                extra_headers=list(auth.headers),
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=dial.max_message_size,
            )
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        ending = ending_from_exception(exc, stage=stage)
        if ending is None:
            raise
        raise Ended(ending) from None
    now = trio.current_time()
    return Handshaken(ws, stream, ready_at=now, dial_s=now - started)


async def setup_link(sock: Handshaken, dial: Dial, setup_wire: str) -> tuple[UpstreamLink, float]:
    """Send ``setup`` on a handshaken connection and wait for ``setupComplete`` (within
    ``dial.setup_timeout``). Returns the link and the seconds from the send to setupComplete;
    raises :class:`Ended` (the connection aborted) for every transport failure."""
    link = UpstreamLink(sock.ws, sock.stream)
    started = trio.current_time()
    try:
        await link.send(setup_wire)
        with trio.fail_after(dial.setup_timeout):
            while True:
                msg = await link.receive()
                if msg.kind == "setupComplete":
                    break
                # Nothing but setupComplete is expected first; anything else is logged and
                # ignored (tolerant parsing), the timeout still bounds the wait.
                log.debug("upstream.unexpected_before_setup", kind=msg.kind)
    except BaseException as exc:
        await link.abort()
        ending = ending_from_exception(exc, stage="setup")
        if ending is None:
            raise
        raise Ended(ending) from None
    return link, trio.current_time() - started


async def open_link(nursery: trio.Nursery, dial: Dial, setup_wire: str) -> tuple[UpstreamLink, float]:
    """Dial, handshake, send setup and wait for ``setupComplete``: :func:`dial_socket`, then
    :func:`setup_link`.

    Returns the link and the dial + setup latency in seconds. Raises :class:`Ended` for every
    transport-level failure; the websocket reader task runs in ``nursery``, which must be the
    caller's per-connection nursery (it raises ConnectionRejected there, hence
    :func:`ending_from_group`).
    """
    sock = await dial_socket(nursery, dial)
    link, setup_s = await setup_link(sock, dial, setup_wire)
    return link, sock.dial_s + setup_s
