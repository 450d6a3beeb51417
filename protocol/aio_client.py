"""asyncio client for geminid's local protocol, with the trio client's behaviour.

::

    async with await AioClient.connect(reconnect=True) as c:   # $GEMINID_SOCKET or the default
        await c.open("kitchen", setup)
        await c.attach("kitchen")
        seq = await c.send("kitchen", message)
        async for method, params in c.events():
            ...

Same exceptions as :mod:`geminid.protocol.client` (RemoteError, DaemonUnreachable,
ConnectionLost), same pure JSON-RPC code, and the same rules:

- **A lost daemon is never silent.** Without ``reconnect``, ``events()`` raises
  :class:`ConnectionLost` once the buffered events are consumed (it ends normally only when the
  client is closed), and so does every call.
- **Reconnection** (``reconnect=True``): capped exponential backoff (``backoff_initial`` ..
  ``backoff_cap``), then ``rpc.hello`` and a re-attach of every attached session with ``since`` =
  the last event seq received, so the daemon replays what was missed or announces the gap with
  ``session.lagged``. ``events()`` yields the client-local ``client.disconnected {reason}``,
  ``client.reconnected {attempt}`` and ``client.reattach_failed {session, code, message}``.
  Calls made while disconnected wait for the reconnection; calls in flight when it dropped fail
  with ConnectionLost (the client cannot know whether the daemon executed them), except
  ``send()``, which carries a message id and is repeated with it (exactly once, see ``send``).
- **Giving up**: after ``give_up_after`` seconds without a connection (None: never), the client
  stops trying; ``events()`` and every call then raise :class:`ConnectionLost` saying so.
- **A bounded buffer**: past ``max_events`` buffered events, new ones are dropped and one
  ``session.lagged`` per session follows once the consumer catches up
  (:class:`~geminid.protocol.eventbuffer.EventBuffer`); the socket reader never waits for the
  consumer, so calls keep working while events pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geminid.protocol.acks import SendAck
from geminid.protocol.client import (
    CLIENT_MAX_LINE,
    ConnectionLost,
    DaemonUnreachable,
    RemoteError,
    _reason,
    default_socket_path,
)
from geminid.protocol.constants import PROTOCOL_VERSION
from geminid.protocol.errors import SHUTTING_DOWN
from geminid.protocol.eventbuffer import EventBuffer
from geminid.protocol.jsonrpc import (
    ErrorResponse,
    Notification,
    ProtocolViolation,
    Response,
    encode_request,
    parse_incoming,
)

_OnResult = Callable[[Any], None]


class _Connection:
    """One Unix-socket connection: its streams and the task reading it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[str] | None = None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


class AioClient:
    """A connection to geminid. Create it with :meth:`connect`."""

    def __init__(
        self,
        path: os.PathLike[str] | str | None = None,
        *,
        reconnect: bool = False,
        backoff_initial: float = 0.1,
        backoff_cap: float = 5.0,
        max_events: int = 10_000,
        give_up_after: float | None = 60.0,
        client_name: str = "geminid.aio_client",
    ) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self.reconnect = reconnect
        self._backoff = (backoff_initial, backoff_cap)
        self._give_up_after = give_up_after
        self._client_name = client_name
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any], _OnResult | None]] = {}
        self._buffer = EventBuffer(max_events)
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set once the client has given up (or, without reconnect, lost its connection).
        self._lost: ConnectionLost | None = None
        self._closed = False
        #: sessions attached through this client (re-attached after a reconnect).
        self.attached: set[str] = set()
        self.hello: dict[str, Any] = {}

    @property
    def last_seq(self) -> dict[str, int]:
        """session -> the last event seq received (``since`` for a re-attach)."""
        return self._buffer.last_seq

    @classmethod
    async def connect(
        cls,
        path: os.PathLike[str] | str | None = None,
        *,
        reconnect: bool = False,
        backoff_initial: float = 0.1,
        backoff_cap: float = 5.0,
        max_events: int = 10_000,
        give_up_after: float | None = 60.0,
        client_name: str = "geminid.aio_client",
    ) -> AioClient:
        """Connect (raising :class:`DaemonUnreachable` if nobody listens) and run ``rpc.hello``."""
        self = cls(
            path,
            reconnect=reconnect,
            backoff_initial=backoff_initial,
            backoff_cap=backoff_cap,
            max_events=max_events,
            give_up_after=give_up_after,
            client_name=client_name,
        )
        conn = await self._dial()
        try:
            await self._start(conn, attempt=0)
        except ConnectionLost as exc:
            await self.aclose()
            raise DaemonUnreachable(self.path, str(exc)) from None
        except BaseException:
            await self.aclose()
            raise
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        return self

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public API -------------------------------------------------------------------------

    async def open(self, session: str, setup: dict[str, Any]) -> dict[str, Any]:
        return _object(await self.call("session.open", {"session": session, "setup": setup}))

    async def send(self, session: str, message: dict[str, Any], *, id: str | None = None) -> SendAck:
        """Send one Gemini client message; return its ack (a :class:`SendAck`, an int: the seq).

        Idempotent, as the trio client's :meth:`geminid.protocol.client.Client.send`: every call
        carries a message id (``id``, or a fresh random one); with ``reconnect=True`` a send whose
        connection drops before its reply is repeated with the same id after the reconnection
        (and one refused by a daemon that is shutting down, after the next connection), so it
        reaches the session exactly once. It raises ConnectionLost only once the client gave up
        (or without ``reconnect``: then repeat it with the same ``id``).
        """
        params = {"session": session, "message": message, "id": id or uuid.uuid4().hex}
        while True:
            try:
                return SendAck.from_result(_object(await self.call("session.send", params)))
            except ConnectionLost:
                if not self.reconnect or self._closed or self._lost is not None:
                    raise
            except RemoteError as exc:
                if exc.code != SHUTTING_DOWN or not self.reconnect or self._closed:
                    raise
                await asyncio.sleep(self._backoff[0])

    async def attach(self, session: str, since: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"session": session}
        if since is not None:
            params["since"] = since

        def on_result(result: Any) -> None:
            # Runs in the reader, before the backlog that follows the reply is read.
            self.attached.add(session)
            self.last_seq[session] = since if since is not None else int(result["last_seq"])

        return _object(await self.call("session.attach", params, on_result=on_result))

    async def detach(self, session: str) -> None:
        self.attached.discard(session)
        await self.call("session.detach", {"session": session})

    async def close(self, session: str) -> dict[str, Any]:
        self.attached.discard(session)
        return _object(await self.call("session.close", {"session": session}))

    async def sessions(self) -> list[dict[str, Any]]:
        sessions = _object(await self.call("session.list"))["sessions"]
        assert isinstance(sessions, list)
        return sessions

    async def status(self) -> dict[str, Any]:
        return _object(await self.call("daemon.status"))

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_result: _OnResult | None = None,
    ) -> Any:
        """Send one request and wait for its reply; RemoteError for an error reply. While
        reconnecting, waits for the connection; ConnectionLost once the client gave up."""
        while True:
            if self._closed:
                raise ConnectionLost("client is closed")
            if self._lost is not None:
                raise self._lost
            if self._connected.is_set() and self._conn is not None:
                return await self._request(self._conn, method, params, on_result)
            await self._connected.wait()

    def events(self) -> _AioEvents:
        """Notifications in arrival order, as (method, params), via ``async for``. Ends when the
        client is closed; raises ConnectionLost when the connection is lost for good."""
        return _AioEvents(self)

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        """The next notification; ConnectionLost if there will be none (closed or lost)."""
        try:
            return await self._next_event()
        except StopAsyncIteration:
            raise ConnectionLost("client is closed") from None

    async def aclose(self) -> None:
        self._closed = True
        self._wake()
        self._connected.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)
        self._fail_pending(ConnectionLost("client closed"))

    # -- internals ---------------------------------------------------------------------------

    async def _next_event(self) -> tuple[str, dict[str, Any]]:
        while True:
            item = self._buffer.pop()
            if item is not None:
                return item
            if self._closed:
                raise StopAsyncIteration
            if self._lost is not None:
                raise self._lost
            self._wakeup.clear()
            await self._wakeup.wait()

    def _wake(self) -> None:
        self._wakeup.set()

    def _event(self, method: str, params: Any) -> None:
        if self._buffer.push(method, params):
            self._wake()

    async def _dial(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(
                os.fspath(self.path), limit=CLIENT_MAX_LINE
            )
        except OSError as exc:
            raise DaemonUnreachable(self.path, _reason(exc)) from None
        return _Connection(reader, writer)

    async def _start(self, conn: _Connection, attempt: int) -> None:
        """Read ``conn``, say hello and (after a reconnect) re-attach; then it is the connection."""
        conn.task = asyncio.get_running_loop().create_task(self._read_loop(conn))
        try:
            hello = await self._request(
                conn, "rpc.hello", {"protocol": PROTOCOL_VERSION, "client": self._client_name}
            )
            self.hello = _object(hello)
            if attempt:
                # Announced first: the replayed backlog follows it.
                self._event("client.reconnected", {"attempt": attempt})
                await self._reattach(conn)
        except BaseException:
            await self._drop(conn)
            raise
        self._conn = conn
        self._connected.set()

    async def _reattach(self, conn: _Connection) -> None:
        for session in sorted(self.attached):
            since = self.last_seq.get(session)
            params: dict[str, Any] = {"session": session}
            if since is not None:
                params["since"] = since
            try:
                await self._request(conn, "session.attach", params)
            except RemoteError as exc:
                self.attached.discard(session)
                self._event(
                    "client.reattach_failed",
                    {"session": session, "code": exc.code, "message": exc.message},
                )

    async def _request(
        self,
        conn: _Connection,
        method: str,
        params: dict[str, Any] | None,
        on_result: _OnResult | None = None,
    ) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (method, fut, on_result)
        try:
            conn.writer.write(encode_request(rid, method, params))
            await conn.writer.drain()
        except (OSError, ConnectionError) as exc:
            self._pending.pop(rid, None)
            raise ConnectionLost(f"connection to {self.path} lost: {exc}") from None
        try:
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self, conn: _Connection) -> str:
        """Read until the connection ends; return why. Never waits for the events consumer."""
        try:
            while True:
                line = await conn.reader.readline()
                if not line.endswith(b"\n"):
                    return "daemon closed the connection"
                if not line.strip():
                    continue
                self._dispatch(parse_incoming(line.rstrip(b"\r\n")))
        except (OSError, ConnectionError, ValueError, ProtocolViolation) as exc:
            return f"read failed: {exc}"
        finally:
            self._fail_pending(ConnectionLost(f"connection to {self.path} lost"))

    def _dispatch(self, msg: Response | ErrorResponse | Notification) -> None:
        if isinstance(msg, Notification):
            self._event(msg.method, msg.params)
            return
        entry = self._pending.pop(msg.id, None) if isinstance(msg.id, int) else None
        if entry is None:
            if isinstance(msg, ErrorResponse):  # id null: a connection-level error
                self._event("client.error", {"code": msg.code, "message": msg.message})
            return
        method, fut, on_result = entry
        if fut.done():
            return
        if isinstance(msg, ErrorResponse):
            fut.set_exception(RemoteError(msg.code, msg.message, msg.data, method=method))
            return
        if on_result is not None:
            on_result(msg.result)
        fut.set_result(msg.result)

    def _fail_pending(self, exc: ConnectionLost) -> None:
        for _, fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def _drop(self, conn: _Connection) -> None:
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.task
        await conn.close()

    async def _supervise(self) -> None:
        """Own the connection(s): on a loss, reconnect (or give up) and say so in events()."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            conn = self._conn
            assert conn is not None and conn.task is not None
            try:
                reason = await conn.task
            except Exception as exc:  # a bug in the reader must not end the client silently
                reason = f"reader failed: {type(exc).__name__}: {exc}"
            self._connected.clear()
            self._conn = None
            await conn.close()
            if not self.reconnect:
                self._give_up(ConnectionLost(f"connection to {self.path} lost: {reason}"))
                return
            self._event("client.disconnected", {"reason": reason})
            delay, since = self._backoff[0], loop.time()
            while True:
                attempt += 1
                await asyncio.sleep(delay)
                try:
                    await self._start(await self._dial(), attempt)
                    break
                except (DaemonUnreachable, ConnectionLost, RemoteError) as exc:
                    reason = str(exc)
                waited = loop.time() - since
                if self._give_up_after is not None and waited >= self._give_up_after:
                    self._give_up(ConnectionLost(
                        f"gave up reconnecting to {self.path} after {attempt} attempts in "
                        f"{waited:.0f} s: {reason}"
                    ))
                    return
                delay = min(self._backoff[1], delay * 2)

    def _give_up(self, exc: ConnectionLost) -> None:
        self._lost = exc
        self._fail_pending(exc)
        self._connected.set()  # waiting callers wake up and raise it
        self._wake()


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConnectionLost(f"daemon sent a malformed result: {type(value).__name__}")
    return value


class _AioEvents:
    def __init__(self, client: AioClient) -> None:
        self._client = client

    def __aiter__(self) -> _AioEvents:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        return await self._client._next_event()
