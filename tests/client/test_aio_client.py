"""The asyncio client against the real socket server over a real Unix socket (issue #11.8): a
daemon that goes away is never silent, reconnection re-attaches with ``since``, the buffer is
bounded with a lag notice, and giving up raises.

The asyncio side runs in a worker thread (``asyncio.run``); it asks the trio side to stop or
restart the server through ``trio.from_thread.run``, so each step happens in a known order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from client_harness import MemoryService

from geminid.daemon.config import ServerConfig
from geminid.daemon.server import serve_unix
from geminid.protocol.aio_client import AioClient
from geminid.protocol.client import ConnectionLost
from geminid.protocol.errors import UNKNOWN_SESSION


class Daemon:
    """The real server on a fixed socket path, which a test stops and restarts."""

    def __init__(self, nursery: trio.Nursery, service: MemoryService, cfg: ServerConfig) -> None:
        self.nursery, self.service, self.cfg = nursery, service, cfg
        self.scope: trio.CancelScope | None = None
        self.stopped = trio.Event()

    async def start(self) -> None:
        scope = self.scope = trio.CancelScope()
        stopped = self.stopped = trio.Event()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await serve_unix(self.service, self.cfg, task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(run)

    async def stop(self) -> None:
        """Stop serving, and return once the socket and its lock are released."""
        assert self.scope is not None
        self.scope.cancel()
        await self.stopped.wait()

    async def publish(self, n: int, session: str = "s") -> None:
        for i in range(n):
            self.service.publish(session, "session.message", {"message": {"i": i}})


@pytest.fixture
async def daemon(nursery: trio.Nursery, sockdir) -> Daemon:
    d = Daemon(nursery, MemoryService(ring=16), ServerConfig(socket_path=sockdir / "g.sock"))
    await d.start()
    return d


def trio_side(fn: Callable[[], Awaitable[Any]]) -> Any:
    """From the asyncio thread: run ``fn`` on the trio loop and wait for it."""
    return trio.from_thread.run(fn)


async def in_asyncio(main: Callable[[], Awaitable[Any]]) -> Any:
    return await trio.to_thread.run_sync(lambda: asyncio.run(asyncio.wait_for(main(), 30)))


async def take(c: AioClient, n: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    async for item in c.events():
        out.append(item)
        if len(out) == n:
            break
    return out


async def test_events_raise_connection_lost_when_the_daemon_dies(daemon):
    async def main() -> list[str]:
        async with await AioClient.connect(daemon.cfg.socket_path) as c:
            await c.open("s", {})
            await c.attach("s", since=0)
            assert [p["seq"] for _, p in await take(c, 1)] == [1]
            trio_side(daemon.stop)
            with pytest.raises(ConnectionLost) as lost:
                async for _ in c.events():
                    pass
            with pytest.raises(ConnectionLost):
                await c.status()
            return [str(lost.value)]

    (reason,) = await in_asyncio(main)
    assert "lost" in reason


async def test_events_end_normally_when_the_client_is_closed(daemon):
    async def main() -> list[Any]:
        c = await AioClient.connect(daemon.cfg.socket_path)
        await c.aclose()
        return [item async for item in c.events()]

    assert await in_asyncio(main) == []


async def test_reconnect_reattaches_since_the_last_seq(daemon):
    async def main() -> None:
        async with await AioClient.connect(
            daemon.cfg.socket_path, reconnect=True, backoff_initial=0.01, backoff_cap=0.05
        ) as c:
            await c.open("s", {})
            await c.attach("s", since=0)
            assert [p["seq"] for _, p in await take(c, 1)] == [1]
            trio_side(daemon.stop)  # the daemon goes away ...
            assert (await c.next_event())[0] == "client.disconnected"
            trio_side(lambda: daemon.publish(5))  # ... the session lives on meanwhile
            trio_side(daemon.start)
            evs = await take(c, 6)
            assert evs[0][0] == "client.reconnected"
            assert [p["seq"] for _, p in evs[1:]] == [2, 3, 4, 5, 6]
            assert await c.send("s", {"x": 1}) == 1  # calls work again
            # An outage longer than the ring: the gap is announced, then the retained tail.
            trio_side(daemon.stop)
            assert (await c.next_event())[0] == "client.disconnected"
            trio_side(lambda: daemon.publish(40))
            trio_side(daemon.start)
            evs = await take(c, 18)
            assert evs[0][0] == "client.reconnected"
            assert evs[1] == ("session.lagged", {"session": "s", "first": 7, "last": 30, "missed": 24})
            assert [p["seq"] for _, p in evs[2:]] == list(range(31, 47))
            # A session that vanished during the outage is reported.
            trio_side(daemon.stop)
            await c.next_event()
            del daemon.service.sessions["s"]
            trio_side(daemon.start)
            evs = await take(c, 2)
            assert evs[0][0] == "client.reconnected"
            assert evs[1] == ("client.reattach_failed",
                              {"session": "s", "code": UNKNOWN_SESSION, "message": "no session named 's'"})

    await in_asyncio(main)


async def test_calls_made_while_disconnected_wait_for_the_reconnection(daemon):
    async def main() -> int:
        async with await AioClient.connect(
            daemon.cfg.socket_path, reconnect=True, backoff_initial=0.05, backoff_cap=0.05
        ) as c:
            await c.open("s", {})
            trio_side(daemon.stop)
            assert (await c.next_event())[0] == "client.disconnected"
            call = asyncio.ensure_future(c.send("s", {"x": 1}))
            await asyncio.sleep(0.2)
            assert not call.done()
            trio_side(daemon.start)
            return await call

    assert await in_asyncio(main) == 1


async def test_the_buffer_is_bounded_and_says_what_it_dropped(daemon):
    async def main() -> list[tuple[str, dict[str, Any]]]:
        async with await AioClient.connect(daemon.cfg.socket_path, max_events=10) as c:
            await c.open("s", {})
            await c.attach("s")
            trio_side(lambda: daemon.publish(50))
            await c.status()  # a round trip: every event is now at the client
            return await take(c, 11)

    evs = await in_asyncio(main)
    assert [p["seq"] for _, p in evs[:10]] == list(range(2, 12))
    assert evs[10] == ("session.lagged", {"session": "s", "first": 12, "last": 51, "missed": 40})


async def test_it_gives_up_with_an_exception(daemon):
    async def main() -> tuple[str, str]:
        async with await AioClient.connect(
            daemon.cfg.socket_path, reconnect=True, backoff_initial=0.02, backoff_cap=0.05,
            give_up_after=0.3,
        ) as c:
            await c.open("s", {})
            trio_side(daemon.stop)  # and it never comes back
            assert (await c.next_event())[0] == "client.disconnected"
            with pytest.raises(ConnectionLost) as from_events:
                async for _ in c.events():
                    pass
            with pytest.raises(ConnectionLost) as from_call:
                await c.status()
            return str(from_events.value), str(from_call.value)

    a, b = await in_asyncio(main)
    assert a == b and a.startswith("gave up reconnecting to ")


async def test_a_send_in_flight_when_the_daemon_dies_is_repeated_with_its_id(daemon):
    """Issue #11 point 6: the asyncio client repeats the send with the same id after the
    reconnection instead of raising ConnectionLost (the daemon de-duplicates by that id)."""
    service = daemon.service

    async def main() -> int:
        async with await AioClient.connect(
            daemon.cfg.socket_path, reconnect=True, backoff_initial=0.01, backoff_cap=0.05
        ) as c:
            await c.open("s", {})
            service.gates["s"] = trio_side(_event)  # the ack will not come on this connection
            task = asyncio.ensure_future(c.send("s", {"x": 1}))
            while not service.ids:
                await asyncio.sleep(0.01)
            trio_side(daemon.stop)  # the connection drops with the send in flight
            del service.gates["s"]
            trio_side(daemon.start)
            return int(await task)

    seq = await in_asyncio(main)
    assert len(service.ids) == 2 and service.ids[0] == service.ids[1]
    assert seq == 2  # (the memory service gives the repeat a seq of its own: it keeps no table)


async def _event() -> trio.Event:
    return trio.Event()
