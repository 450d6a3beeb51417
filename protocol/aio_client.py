"""asyncio client for geminid's local protocol (a thin twin of :mod:`geminid.protocol.client`).

::

    async with await AioClient.connect() as c:
        await c.open("kitchen", setup)
        await c.attach("kitchen")
        seq = await c.send("kitchen", message)
        async for method, params in c.events():
            ...

It shares the pure JSON-RPC code and the exceptions (RemoteError, DaemonUnreachable,
ConnectionLost) with the trio client. No automatic reconnection; events are buffered without a
bound (consume them, or don't attach).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

from geminid.protocol.client import (
    ConnectionLost,
    DaemonUnreachable,
    RemoteError,
    _reason,
    default_socket_path,
)
from geminid.protocol.constants import PROTOCOL_VERSION
from geminid.protocol.jsonrpc import (
    ErrorResponse,
    Notification,
    ProtocolViolation,
    encode_request,
    parse_incoming,
)

_END = object()


class AioClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.hello: dict[str, Any] = {}

    @classmethod
    async def connect(cls, path: os.PathLike[str] | str | None = None) -> AioClient:
        path = Path(path) if path is not None else default_socket_path()
        try:
            reader, writer = await asyncio.open_unix_connection(
                os.fspath(path), limit=256 * 1024 * 1024
            )
        except OSError as exc:
            raise DaemonUnreachable(path, _reason(exc)) from None
        self = cls(reader, writer)
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            self.hello = await self.call(
                "rpc.hello", {"protocol": PROTOCOL_VERSION, "client": "geminid.aio_client"}
            )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read_loop(self) -> None:
        reason = "daemon closed the connection"
        try:
            while True:
                line = await self._reader.readline()
                if not line.endswith(b"\n"):
                    break
                if not line.strip():
                    continue
                msg = parse_incoming(line.rstrip(b"\r\n"))
                if isinstance(msg, Notification):
                    self._events.put_nowait((msg.method, msg.params))
                    continue
                entry = self._pending.pop(msg.id, None) if isinstance(msg.id, int) else None
                if entry is None:
                    continue
                method, fut = entry
                if fut.done():
                    continue
                if isinstance(msg, ErrorResponse):
                    fut.set_exception(RemoteError(msg.code, msg.message, msg.data, method=method))
                else:
                    fut.set_result(msg.result)
        except (OSError, ValueError, ProtocolViolation) as exc:
            reason = str(exc)
        finally:
            lost = ConnectionLost(f"connection lost: {reason}")
            for _, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            self._events.put_nowait(_END)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self._task is None or self._task.done():
            raise ConnectionLost("not connected")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (method, fut)
        try:
            self._writer.write(encode_request(rid, method, params))
            await self._writer.drain()
        except OSError as exc:
            self._pending.pop(rid, None)
            raise ConnectionLost(f"connection lost: {exc}") from None
        return await fut

    async def open(self, session: str, setup: dict[str, Any]) -> dict[str, Any]:
        return await self.call("session.open", {"session": session, "setup": setup})

    async def send(self, session: str, message: dict[str, Any]) -> int:
        return int((await self.call("session.send", {"session": session, "message": message}))["seq"])

    async def attach(self, session: str, since: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"session": session}
        if since is not None:
            params["since"] = since
        return await self.call("session.attach", params)

    async def detach(self, session: str) -> None:
        await self.call("session.detach", {"session": session})

    async def close(self, session: str) -> dict[str, Any]:
        return await self.call("session.close", {"session": session})

    async def sessions(self) -> list[dict[str, Any]]:
        return (await self.call("session.list"))["sessions"]

    async def status(self) -> dict[str, Any]:
        return await self.call("daemon.status")

    def events(self) -> _AioEvents:
        return _AioEvents(self._events)

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class _AioEvents:
    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    def __aiter__(self) -> _AioEvents:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        return item
