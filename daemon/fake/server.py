"""FakeUpstream: the listener, the HTTP upgrade (routing, auth, refusals), the shared state
(conversations, handles, records) and the live fault actions.

The fake owns its TCP listener and wraps each stream itself (``wrap_server_stream``), so that it
holds the raw stream: that is how a drop closes TCP with no close frame and a stall stops reading.
:meth:`FakeUpstream.serve_stream` serves any trio stream, e.g. one end of
``trio.testing.memory_stream_pair()`` for exact-timing tests under ``MockClock``.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections import deque

import structlog
import trio
from trio_websocket import WebSocketRequest, wrap_server_stream

from . import routing
from .connection import MAX_MESSAGE_BYTES, FakeConnection
from .faults import Fault, Planned, make_trigger
from .handles import HandleStore
from .model import Conversation
from .options import FakeOptions
from .records import ConnectionRecord

log = structlog.get_logger()

_STATUS_TEXT = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request is missing required authentication credential."),
    403: ("PERMISSION_DENIED", "API key not valid. Please pass a valid API key."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
}


def _error_body(status: int) -> bytes:
    name, message = _STATUS_TEXT.get(status, ("UNKNOWN", "Error."))
    return json.dumps({"error": {"code": status, "message": message, "status": name}}).encode()


class FakeUpstream:
    """A fake Gemini Live service. See the package docstring for the API in one place."""

    def __init__(self, options: FakeOptions | None = None) -> None:
        self.options = options or FakeOptions()
        self.handles = HandleStore(self.options.handle_ttl, self.options.seed)
        self.dials = 0
        self.connections: list[ConnectionRecord] = []
        #: (record id, what) in the order the fake saw it: "accepted" (the upgrade), "setup"
        #: (the setup message read), "ended" (either side ended it). For order checks that
        #: timestamps cannot make under MockClock (equal times).
        self.timeline: list[tuple[int, str]] = []
        self.conversations: dict[str, Conversation] = {}
        self.port: int | None = None
        self.host = self.options.host
        self._conns: dict[int, FakeConnection] = {}
        self._script: deque[Planned] = deque()
        self._refusals: deque[int] = deque()
        self._rng = random.Random(self.options.seed + 1)
        self._call_ids: set[str] = set()
        self._accepted = 0

    # ------------------------------------------------------------------ serving

    async def serve(self, *, task_status: trio.TaskStatus[FakeUpstream] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``options.host:options.port`` (0: any free port) until cancelled."""
        listeners = await trio.open_tcp_listeners(self.options.port, host=self.options.host)
        try:
            self.port = listeners[0].socket.getsockname()[1]
            log.info("fake.listening", url=self.url())
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self.serve_stream, listeners)
                task_status.started(self)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def url(self, version: str = "v1beta", *, vertex: bool = False, constrained: bool = False) -> str:
        """``ws://HOST:PORT/ws/...BidiGenerateContent`` for this fake (after ``serve`` started)."""
        if vertex and version not in routing.VERTEX_VERSIONS:
            version = "v1beta1"
        return f"ws://{self.host}:{self.port}" + routing.ws_path(
            version, vertex=vertex, constrained=constrained
        )

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: what google-genai takes as ``http_options.base_url``."""
        return f"http://{self.host}:{self.port}"

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one client on ``stream`` (a TCP stream, or a memory stream in tests)."""
        conn: FakeConnection | None = None
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(self.options.handshake_timeout):
                    request = await wrap_server_stream(
                        nursery, stream, max_message_size=MAX_MESSAGE_BYTES
                    )
                if request is not None:
                    conn = await self._handshake(request)
                    if conn is not None:
                        self._conns[conn.record.id] = conn
                        await conn.run()
                nursery.cancel_scope.cancel()
            if conn is not None and conn.ending == "stall":
                await conn.wait_stall_end()
        finally:
            if conn is not None:
                if conn.record.closed_by is None:
                    conn.record.closed_by, conn.record.close_code = "shutdown", 1006
                conn.end(conn.ending or "shutdown")
                if conn.drop_rst and isinstance(stream, trio.SocketStream):
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.aclose_forcefully(stream)
            if conn is not None:
                conn.record.closed_at = trio.current_time()
                self._conns.pop(conn.record.id, None)
                log.info(
                    "fake.closed", conn=conn.record.id, by=conn.record.closed_by,
                    code=conn.record.close_code,
                )
                conn.finished.set()

    async def _handshake(self, request: WebSocketRequest) -> FakeConnection | None:
        self.dials += 1
        record = ConnectionRecord(id=self.dials, path=request.path, opened_at=trio.current_time())
        self.connections.append(record)
        path, query = routing.split_target(request.path)
        route = routing.route(path)
        if route is not None:
            record.route, record.version = route.api, route.version
        status: int | None = None
        if self._refusals:
            status = self._refusals.popleft()
        elif route is None:
            status = 404
        else:
            if route.vertex and self.options.bearer_check is not None:
                # The token issuer's rule replaces the API-key rule on Vertex (Vertex takes no
                # API key; the Developer path of the same fake keeps its key).
                status = routing.bearer_status(request.headers, self.options.bearer_check)
            else:
                status = routing.auth_status(
                    routing.credentials(request.headers, query), self.options.api_key
                )
            record.auth_ok = status is None
        if status is not None:
            record.status = status
            log.info("fake.refused", conn=record.id, status=status, path=path)
            await request.reject(status, body=_error_body(status))
            return None
        assert route is not None
        ws = await request.accept()
        record.status, record.accepted = 101, True
        record.opened_at = trio.current_time()
        plans = list(self.options.faults)
        if self._script:
            plans.append(self._script.popleft())
        self._accepted += 1
        self.timeline.append((record.id, "accepted"))
        log.info("fake.accepted", conn=record.id, path=path)
        transparent_allowed = route.vertex or self.options.transparent
        return FakeConnection(self, record, ws, transparent_allowed, plans)

    # ------------------------------------------------------------------ shared state

    def new_conversation(self, model: str) -> Conversation:
        conv = Conversation(id=f"c{len(self.conversations) + 1}", model=model)
        self.conversations[conv.id] = conv
        return conv

    def new_call_id(self) -> str:
        while True:
            call_id = f"fc_{self._rng.getrandbits(48):012x}"
            if call_id not in self._call_ids:
                self._call_ids.add(call_id)
                return call_id

    def connection(self, record_id: int) -> FakeConnection | None:
        return self._conns.get(record_id)

    def open_connections(self) -> list[FakeConnection]:
        return [c for c in self._conns.values() if c.is_open]

    def open_sessions(self) -> list[FakeConnection]:
        """Open connections that have sent their setup: what the session quota
        (``max_sessions``) counts. A connection dialled ahead of its setup is not one yet."""
        return [c for c in self.open_connections() if c.setup_seen]

    def conversation_for_handle(self, handle: str) -> Conversation | None:
        """The conversation a handle was issued for (whether or not it is still valid)."""
        entry = self.handles.entry(handle)
        return entry.conversation if entry is not None else None

    @property
    def live_connections(self) -> int:
        """Connections currently open (accepted, not ended by either side, not stalled)."""
        return len(self.open_connections())

    @property
    def accepted(self) -> list[ConnectionRecord]:
        """Records of the accepted connections only."""
        return [r for r in self.connections if r.accepted]

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        fault: Fault,
        *,
        on_setup: bool = False,
        after_setup: bool = False,
        after_messages: int | None = None,
        after_chunks: int | None = None,
        after_tool_call: bool = False,
        after_turns: int | None = None,
        after_seconds: float | None = None,
    ) -> None:
        """Arm ``fault`` for the next accepted connection not yet scripted (FIFO, one per call).

        Refused dials do not consume entries. The trigger keywords are described in
        :func:`geminid.daemon.fake.faults.make_trigger`; with none the fault fires at the upgrade.
        Use ``Fault.none()`` to let a connection through and script the one after it.
        """
        trigger = make_trigger(
            on_setup=on_setup, after_setup=after_setup, after_messages=after_messages,
            after_chunks=after_chunks, after_tool_call=after_tool_call,
            after_turns=after_turns, after_seconds=after_seconds,
        )
        self._script.append(Planned(fault, trigger))

    def refuse_next(self, n: int = 1, status: int = 429) -> None:
        """Refuse the next ``n`` upgrade attempts with HTTP ``status`` (before routing and auth)."""
        self._refusals.extend([status] * n)

    def expire_handles(self) -> None:
        """Forget every handle issued so far: resuming with one closes 1008."""
        n = self.handles.expire_all()
        log.info("fake.handles_expired", count=n)

    # ------------------------------------------------------------------ live actions

    def _current(self) -> list[FakeConnection]:
        return list(self._conns.values())

    @staticmethod
    async def _wait(conns: list[FakeConnection]) -> None:
        for conn in conns:
            await conn.finished.wait()

    async def drop_all(self, *, rst: bool = False) -> None:
        """Drop every connection's TCP now (no close frame), stalled ones too; wait until closed."""
        conns = self._current()
        for conn in conns:
            conn.drop_now(rst=rst)
        await self._wait(conns)

    async def close_all(self, code: int = 1011, reason: str = "The service is currently unavailable.") -> None:
        """Close every open connection with ``code``/``reason`` (behind frames already queued);
        stalled ones are dropped. Waits until all are closed."""
        conns = self._current()
        for conn in conns:
            if conn.ending == "stall":
                conn.drop_now()
            else:
                conn.queue_fault(Fault.close(code, reason))
        await self._wait(conns)

    async def stall_all(self, duration: float | None = None) -> None:
        """Stall every open connection now (see ``Fault.stall``)."""
        for conn in self._current():
            conn.stall_now(duration)
        await trio.lowlevel.checkpoint()

    async def goaway_all(self, time_left: float = 1.0) -> None:
        """Send goAway now to every connection that has sent its setup (the service sends none
        before setupComplete); each is cut ``time_left`` s later."""
        for conn in self._current():
            if not conn.setup_seen:
                continue
            conn.queue_fault(Fault.goaway(time_left))
        await trio.lowlevel.checkpoint()
