"""One WebSocket connection to Gemini Live, and how every way it can end becomes one outcome.

trio-websocket 0.12.2 has two defects that matter here (TRIO_NOTES.md): its ``connect_timeout``
is not a hard bound, and a client's TCP socket can outlive a server-initiated close. So this
module opens the TCP (or TLS) stream itself, performs the handshake inside its own
``trio.fail_after``, and always force-closes the stream when the link is done. The link lives in a
nursery owned by the caller (the session actor), never in a context manager kept open across
reconnects.

Every ending (close frame, HTTP rejection, timeout, stall, OS error) is reported as an
:class:`~geminid.daemon.classify.Ending`, the single input of the close classifier.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from geminid.daemon.classify import Ending, EndingKind
from geminid.protocol import live
from geminid.protocol.errors import ConfigError, FrameError

log = structlog.get_logger("geminid.upstream")

#: The library's receive queue is small and a reader that falls behind stops answering pings;
#: the session actor drains it in a dedicated task, and this bounds the burst it can absorb.
MESSAGE_QUEUE_SIZE = 64


class Ended(Exception):
    """Raised inside the link when the connection is over; carries the typed ending."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending)
        self.ending = ending


@attrs.frozen
class Endpoint:
    """A parsed ws:// or wss:// BidiGenerateContent URL (the key is never part of it)."""

    scheme: str
    host: str
    port: int
    resource: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"upstream.endpoint: must be a ws:// or wss:// URL, got {url!r}")
        query = urllib.parse.parse_qs(parts.query)
        if "key" in query or "access_token" in query:
            raise ConfigError("upstream.endpoint: must not carry a key; use api_key_file or GEMINI_API_KEY")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, resource)

    @property
    def vertex(self) -> bool:
        return "aiplatform" in self.resource


@attrs.frozen
class Dial:
    endpoint: Endpoint
    #: Called at every dial so that a key rotated by SIGHUP takes effect at the next reconnect.
    api_key: Callable[[], str | None]
    connect_timeout: float
    setup_timeout: float
    max_message_size: int
    ssl_context: ssl.SSLContext | None = None
    #: Test seam: open the byte stream some other way (e.g. trio.testing.memory_stream_pair, so
    #: that MockClock's autojump never races real socket I/O). None = TCP (+TLS for wss).
    connector: Callable[[Endpoint], Awaitable[trio.abc.Stream]] | None = None


def ending_from_exception(exc: BaseException, *, stage: str) -> Ending | None:
    """Map a transport exception to an Ending; None if it is not one of ours (a real bug)."""
    if isinstance(exc, Ended):
        return exc.ending
    if isinstance(exc, ConnectionRejected):
        return Ending(EndingKind.REJECTED, http_status=exc.status_code, reason=_body(exc))
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        code = int(reason.code) if reason is not None else 1006
        text = (reason.reason or "") if reason is not None else ""
        return Ending(EndingKind.CLOSED, code=code, reason=text)
    if isinstance(exc, trio.TooSlowError):
        kind = EndingKind.SETUP_TIMEOUT if stage == "setup" else EndingKind.CONNECT_TIMEOUT
        return Ending(kind, reason=f"no answer within the {stage} timeout")
    if isinstance(exc, HandshakeError):
        return Ending(EndingKind.CONNECT_TIMEOUT, reason=type(exc).__name__)
    if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError)):
        return Ending(EndingKind.NETWORK, reason=f"{type(exc).__name__}: {exc}")
    if isinstance(exc, FrameError):
        # The peer sent something that is not a JSON object frame: not Gemini, or broken.
        return Ending(EndingKind.CLOSED, code=1007, reason=f"undecodable server frame: {exc}")
    return None


def ending_from_group(exc: BaseException, *, stage: str) -> Ending | None:
    """Like :func:`ending_from_exception` but looks through (nested) exception groups.

    trio's nurseries always wrap child errors in groups; the websocket's reader task is such a
    child (it raises ConnectionRejected). Returns None when any leaf is not a transport error,
    so that cancellation and genuine bugs propagate untouched.
    """
    if isinstance(exc, BaseExceptionGroup):
        endings = [ending_from_group(e, stage=stage) for e in exc.exceptions]
        if not endings or any(e is None for e in endings):
            return None
        return endings[0]
    return ending_from_exception(exc, stage=stage)


def _body(exc: ConnectionRejected) -> str:
    body = exc.body or b""
    return body[:200].decode("utf-8", "replace")


class UpstreamLink:
    """An open, set-up connection. Only the session actor's tasks touch it."""

    def __init__(self, ws: WebSocketConnection, stream: trio.abc.Stream) -> None:
        self._ws = ws
        self._stream = stream
        self.bytes_up = 0
        self.bytes_down = 0

    async def send(self, wire: str) -> None:
        try:
            await self._ws.send_message(wire)
        except ConnectionClosed as exc:
            raise Ended(ending_from_exception(exc, stage="relay")) from None
        self.bytes_up += len(wire)

    async def receive(self) -> live.ServerMessage:
        """The next non-empty server message (bare ``{}`` frames are skipped)."""
        while True:
            try:
                data = await self._ws.get_message()
            except ConnectionClosed as exc:
                raise Ended(ending_from_exception(exc, stage="relay")) from None
            self.bytes_down += len(data)
            try:
                msg = live.parse_server_frame(data)
            except FrameError as exc:
                raise Ended(ending_from_exception(exc, stage="relay")) from None
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


async def open_link(nursery: trio.Nursery, dial: Dial, setup_wire: str) -> tuple[UpstreamLink, float]:
    """Dial, handshake, send setup and wait for ``setupComplete``.

    Returns the link and the setup latency in seconds. Raises :class:`Ended` for every
    transport-level failure; the websocket reader task runs in ``nursery``, which must be the
    caller's per-connection nursery (it raises ConnectionRejected there, hence
    :func:`ending_from_group`).
    """
    ep = dial.endpoint
    key = dial.api_key()
    headers = [(b"x-goog-api-key", key.encode())] if key else []
    stream: trio.abc.Stream | None = None
    started = trio.current_time()
    try:
        with trio.fail_after(dial.connect_timeout):
            if dial.connector is not None:
                stream = await dial.connector(ep)
            elif ep.scheme == "wss":
                ctx = dial.ssl_context or ssl.create_default_context()
                stream = await trio.open_ssl_over_tcp_stream(ep.host, ep.port, ssl_context=ctx)
            else:
                stream = await trio.open_tcp_stream(ep.host, ep.port)
            ws = await wrap_client_stream(
                nursery,
                stream,
                ep.host if ep.port in (80, 443) else f"{ep.host}:{ep.port}",
                ep.resource,
                extra_headers=headers,
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=dial.max_message_size,
            )
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        ending = ending_from_exception(exc, stage="connect")
        if ending is None:
            raise
        raise Ended(ending) from None
    link = UpstreamLink(ws, stream)
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
