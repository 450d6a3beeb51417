"""Trio client library for geminid's local protocol.

::

    async with open_client() as c:                 # $GEMINID_SOCKET or the default path
        await c.open("kitchen", {"model": "models/gemini-3.8-live", "outputAudioTranscription": {}})
        await c.attach("kitchen")                  # live events from now on
        seq = await c.send("kitchen", {"clientContent": {...}})   # durable ack
        async for method, params in c.events():   # ("session.message", {...}), ...
            ...

Errors from the daemon raise :class:`RemoteError` (``code``, ``message``, ``data``); a daemon that
cannot be reached raises :class:`DaemonUnreachable`; a connection that drops while a call waits
raises :class:`ConnectionLost`. All three derive from :class:`GeminidError`.

``open_client(path, reconnect=True)`` survives daemon restarts: it reconnects with capped
exponential backoff and re-attaches every attached session with ``since`` = the last event seq it
received, so the daemon replays what was missed, or announces the gap with ``session.lagged``.
Calls made while disconnected wait for the reconnection (bound them with your own timeout);
calls in flight when the connection dropped fail with ConnectionLost, since the client cannot
know whether the daemon executed them, except ``send()``: it carries a message id and is repeated
with it after the reconnection, so it completes exactly once (see :meth:`Client.send`).
Besides the daemon's notifications, a reconnecting client's ``events()`` yields three
client-local ones (never on the wire): ``client.disconnected {reason}``,
``client.reconnected {attempt}`` and ``client.reattach_failed {session, code, message}``.

The client never blocks its socket reader on a slow consumer of ``events()``: past
``max_events`` buffered events it drops them and yields one ``session.lagged`` per session, like
the daemon does.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .acks import SendAck
from .constants import PROTOCOL_VERSION, SOCKET_ENV
from .constants import default_socket_path as _daemon_default_socket_path
from .errors import SHUTTING_DOWN, ConnectionLost, DaemonUnreachable, RemoteError
from .eventbuffer import EventBuffer
from .framing import LineFramer, Oversize
from .jsonrpc import (
    ErrorResponse,
    Notification,
    ProtocolViolation,
    Response,
    encode_request,
    parse_incoming,
)

#: The longest line a client accepts from the daemon (both clients: one owner).
CLIENT_MAX_LINE = 256 * 1024 * 1024

Trace = Callable[[str, bytes], None]


def default_socket_path() -> Path:
    """``$GEMINID_SOCKET``, else the daemon's default (:func:`.constants.default_socket_path`)."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env)
    return _daemon_default_socket_path()


def _reason(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def connect_unix(path: os.PathLike[str] | str) -> trio.SocketStream:
    try:
        return await trio.open_unix_socket(os.fspath(path))
    except OSError as exc:
        raise DaemonUnreachable(path, _reason(exc)) from None


class _Slot:
    __slots__ = ("method", "done", "outcome", "on_result")

    def __init__(self, method: str, on_result: Callable[[Any], None] | None) -> None:
        self.method = method
        self.done = trio.Event()
        self.outcome: tuple[bool, Any] | None = None
        self.on_result = on_result


class Client:
    """A connection to geminid. Create it with :func:`open_client`."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        *,
        reconnect: bool = False,
        backoff_initial: float = 0.1,
        backoff_cap: float = 5.0,
        max_events: int = 10_000,
        trace: Trace | None = None,
        client_name: str = "geminid.protocol.client",
    ) -> None:
        self.path = Path(path)
        self.reconnect = reconnect
        self._backoff = (backoff_initial, backoff_cap)
        self._trace = trace
        self._client_name = client_name
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._stream: trio.SocketStream | None = None
        self._send_lock = trio.StrictFIFOLock()
        self._connected = trio.Event()
        self._closed = False
        #: The bounded, de-duplicating event buffer (shared with the asyncio client).
        self._buffer = EventBuffer(max_events)
        self._events_lot = trio.lowlevel.ParkingLot()
        #: sessions attached through this client (re-attached after a reconnect).
        self.attached: set[str] = set()
        self.hello: dict[str, Any] = {}
        self.connection_error: BaseException | None = None

    # -- public API -------------------------------------------------------------------------

    async def open(self, session: str, setup: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("session.open", {"session": session, "setup": setup})
        return result

    async def send(self, session: str, message: dict[str, Any], *, id: str | None = None) -> SendAck:
        """Send one Gemini client message; return its ack (a :class:`SendAck`, an int: the seq).

        Idempotent: every call carries a message id (``id``, or a fresh random one), which the
        daemon de-duplicates durably. With ``reconnect=True``, a send whose connection drops
        before its reply (the daemon restarted, even after kill -9) is repeated with the same id
        once the client has reconnected, and a daemon that is shutting down is asked again after
        the reconnection: the message reaches the session exactly once, and this returns its ack
        (``duplicate`` if the daemon had accepted the first attempt). Bound the wait with your own
        timeout. Without ``reconnect`` a drop raises ConnectionLost: call ``send`` again with the
        same ``id`` to retry without a duplicate. ``ack.durable`` is False when the daemon could
        not write the message's checkpoint: it is delivered, but not crash-safe (don't resend).
        """
        params = {"session": session, "message": message, "id": id or uuid.uuid4().hex}
        while True:
            try:
                return SendAck.from_result(await self.call("session.send", params))
            except ConnectionLost:
                if not self.reconnect or self._closed:
                    raise
            except RemoteError as exc:
                if exc.code != SHUTTING_DOWN or not self.reconnect or self._closed:
                    raise
                await trio.sleep(self._backoff[0])  # the connection closes soon: then wait for the next

    async def attach(self, session: str, since: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"session": session}
        if since is not None:
            params["since"] = since

        def on_result(result: Any) -> None:
            # Runs in the reader, before the backlog that follows the reply is processed.
            self.attached.add(session)
            self.last_seq[session] = since if since is not None else int(result["last_seq"])

        result: dict[str, Any] = await self.call("session.attach", params, on_result=on_result)
        return result

    async def detach(self, session: str) -> None:
        self.attached.discard(session)
        await self.call("session.detach", {"session": session})

    async def close(self, session: str) -> dict[str, Any]:
        self.attached.discard(session)
        result: dict[str, Any] = await self.call("session.close", {"session": session})
        return result

    async def sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = (await self.call("session.list"))["sessions"]
        return sessions

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("daemon.status")
        return result

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_result: Callable[[Any], None] | None = None,
    ) -> Any:
        """Send one request and wait for its reply; raise RemoteError for an error reply."""
        if self._closed:
            raise ConnectionLost("client is closed")
        if not self._connected.is_set():  # (wait() would pass the scheduler even when set)
            await self._connected.wait()
        if self._stream is None:
            raise ConnectionLost(f"connection to {self.path} lost")
        rid = next(self._ids)
        slot = _Slot(method, on_result)
        self._pending[rid] = slot
        try:
            await self._write(encode_request(rid, method, params))
            await slot.done.wait()
        finally:
            self._pending.pop(rid, None)
        assert slot.outcome is not None
        ok, value = slot.outcome
        if ok:
            return value
        raise value

    @property
    def last_seq(self) -> dict[str, int]:
        """session -> the last event seq received (``since`` for a re-attach)."""
        return self._buffer.last_seq

    def events(self) -> _EventIterator:
        """Notifications in arrival order, as (method, params), via ``async for``. Ends when the
        client is closed or (without ``reconnect``) when the connection is lost. A plain async
        iterator (not a generator), so breaking out of the loop is safe."""
        return _EventIterator(self)

    async def _next_event(self) -> tuple[str, dict[str, Any]]:
        while True:
            item = self._buffer.pop()
            if item is not None:
                return item
            if self._closed or (self._stream is None and not self.reconnect and self._ever):
                raise StopAsyncIteration
            await self._events_lot.park()

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        try:
            return await self._next_event()
        except StopAsyncIteration:
            raise ConnectionLost(f"connection to {self.path} lost") from None

    # -- internals ---------------------------------------------------------------------------

    _ever = False

    async def _write(self, line: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionLost(f"connection to {self.path} lost")
        if self._trace is not None:
            self._trace("out", line)
        # Uncontended, the lock is taken without its own schedule point: the line is written now
        # (send_all still checkpoints, after writing).
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            await stream.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(f"connection to {self.path} lost: {exc}") from None
        finally:
            self._send_lock.release()

    def _queue_event(self, method: str, params: Any) -> None:
        if self._buffer.push(method, params):
            self._events_lot.unpark_all()

    def _fail_pending(self, exc: BaseException) -> None:
        for slot in list(self._pending.values()):
            if slot.outcome is None:
                slot.outcome = (False, exc)
                slot.done.set()

    async def _read_loop(self, stream: trio.SocketStream) -> str:
        framer = LineFramer(CLIENT_MAX_LINE)
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                return f"read failed: {exc}"
            if not data:
                return "daemon closed the connection"
            for line in framer.feed(data):
                if isinstance(line, Oversize):
                    return "daemon sent an oversize line"
                if not line.strip():
                    continue
                if self._trace is not None:
                    self._trace("in", line + b"\n")
                try:
                    msg = parse_incoming(line)
                except ProtocolViolation as exc:
                    return str(exc)
                self._dispatch(msg)

    def _dispatch(self, msg: Response | ErrorResponse | Notification) -> None:
        if isinstance(msg, Notification):
            self._queue_event(msg.method, msg.params)
            return
        slot = self._pending.get(msg.id) if isinstance(msg.id, int) else None
        if slot is None:
            if isinstance(msg, ErrorResponse):
                # id null: a connection-level error (oversize line, permission denied...).
                err = RemoteError(msg.code, msg.message, msg.data)
                self.connection_error = err
                self._queue_event("client.error", {"code": msg.code, "message": msg.message})
            return
        if isinstance(msg, ErrorResponse):
            slot.outcome = (False, RemoteError(msg.code, msg.message, msg.data, method=slot.method))
        else:
            if slot.on_result is not None:
                slot.on_result(msg.result)
            slot.outcome = (True, msg.result)
        slot.done.set()

    async def _handshake(self) -> None:
        rid = next(self._ids)
        slot = _Slot("rpc.hello", None)
        self._pending[rid] = slot
        try:
            await self._write(
                encode_request(
                    rid, "rpc.hello", {"protocol": PROTOCOL_VERSION, "client": self._client_name}
                )
            )
            await slot.done.wait()
        finally:
            self._pending.pop(rid, None)
        assert slot.outcome is not None
        ok, value = slot.outcome
        if not ok:
            raise value
        self.hello = value

    async def _reattach(self) -> None:
        for session in sorted(self.attached):
            since = self.last_seq.get(session)
            params: dict[str, Any] = {"session": session}
            if since is not None:
                params["since"] = since
            rid = next(self._ids)
            slot = _Slot("session.attach", None)
            self._pending[rid] = slot
            try:
                await self._write(encode_request(rid, "session.attach", params))
                await slot.done.wait()
            finally:
                self._pending.pop(rid, None)
            assert slot.outcome is not None
            ok, value = slot.outcome
            if not ok:
                if isinstance(value, RemoteError):
                    self.attached.discard(session)
                    self._queue_event(
                        "client.reattach_failed",
                        {"session": session, "code": value.code, "message": value.message},
                    )
                else:
                    raise value

    async def _session(self, stream: trio.SocketStream, attempt: int, task_status: Any) -> str:
        """One connection: handshake, re-attach, then read until it ends; returns why."""
        self._stream = stream
        reason = ""
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    nonlocal reason
                    reason = await self._read_loop(stream)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(reader)
                try:
                    await self._handshake()
                    if attempt:
                        # Announced first: the replayed backlog follows it.
                        self._queue_event("client.reconnected", {"attempt": attempt})
                        await self._reattach()
                except (RemoteError, ConnectionLost) as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
                else:
                    self._ever = True
                    self._connected.set()
                    task_status.started()
        finally:
            self._stream = None
            # A fresh event only once the old one fired: callers waiting on an unset one (a
            # reconnection that failed in its handshake) must be woken by the next success.
            if self._connected.is_set():
                self._connected = trio.Event()
            await trio.aclose_forcefully(stream)
        if isinstance(failure, RemoteError):
            self.connection_error = failure
        reason = reason or str(failure or "connection closed")
        self._fail_pending(ConnectionLost(f"connection to {self.path} lost: {reason}"))
        return reason

    async def _run(self, first: trio.SocketStream, *, task_status: Any) -> None:
        """Own the connection(s) until cancelled."""
        status = task_status
        stream = first
        attempt = 0
        while True:
            reason = await self._session(stream, attempt, status)
            if not self._ever:
                # The first connection never got through its handshake.
                raise self.connection_error or ConnectionLost(reason)
            status = trio.TASK_STATUS_IGNORED
            if not self.reconnect or self._closed:
                self._events_lot.unpark_all()
                self._connected.set()  # wake waiting callers: they get ConnectionLost
                return
            self._queue_event("client.disconnected", {"reason": reason})
            delay = self._backoff[0]
            while True:
                attempt += 1
                await trio.sleep(delay)
                try:
                    stream = await connect_unix(self.path)
                    break
                except DaemonUnreachable:
                    delay = min(self._backoff[1], delay * 2)

    async def aclose(self) -> None:
        self._closed = True
        self._events_lot.unpark_all()
        self._fail_pending(ConnectionLost("client closed"))


class _EventIterator:
    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        return await self._client._next_event()


@asynccontextmanager
async def open_client(
    path: os.PathLike[str] | str | None = None,
    *,
    reconnect: bool = False,
    backoff_initial: float = 0.1,
    backoff_cap: float = 5.0,
    max_events: int = 10_000,
    trace: Trace | None = None,
    client_name: str = "geminid.protocol.client",
    connect_timeout: float = math.inf,
) -> AsyncIterator[Client]:
    """Connect (raising :class:`DaemonUnreachable` if nobody listens), run ``rpc.hello``, yield a
    :class:`Client`; closing the block closes the connection."""
    path = Path(path) if path is not None else default_socket_path()
    client = Client(
        path,
        reconnect=reconnect,
        backoff_initial=backoff_initial,
        backoff_cap=backoff_cap,
        max_events=max_events,
        trace=trace,
        client_name=client_name,
    )
    with trio.fail_after(connect_timeout):
        stream = await connect_unix(path)
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(client._run, stream)
            except ConnectionLost as exc:
                raise DaemonUnreachable(path, str(exc)) from None
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Only the caller's block and the connection task run in this nursery, and the latter
        # does not raise once started: give the caller its own exception back, unwrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


__all__ = [
    "Client",
    "ConnectionLost",
    "DaemonUnreachable",
    "RemoteError",
    "connect_unix",
    "default_socket_path",
    "open_client",
]
