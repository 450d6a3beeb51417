"""The trio client's idempotent send (issue #11 point 6): a send in flight when the connection
drops is repeated with the same message id after the reconnection, instead of raising
ConnectionLost to the caller; without ``reconnect`` it raises, and repeating it by hand with the
same ``id`` is safe."""

from __future__ import annotations

import pytest
import trio
from client_harness import MemoryService

from geminid.daemon.config import ServerConfig
from geminid.daemon.server import serve_unix
from geminid.protocol.client import ConnectionLost, open_client


async def _serve(nursery: trio.Nursery, service: MemoryService, cfg: ServerConfig) -> trio.CancelScope:
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await serve_unix(service, cfg, task_status=task_status)

    await nursery.start(run)
    return scope


async def test_a_send_in_flight_when_the_daemon_dies_is_repeated_with_its_id(sockdir, nursery):
    service = MemoryService()
    cfg = ServerConfig(socket_path=sockdir / "g.sock")
    scope = await _serve(nursery, service, cfg)
    async with open_client(cfg.socket_path, reconnect=True, backoff_initial=0.01, backoff_cap=0.05) as c:
        await c.open("s", {})
        service.gates["s"] = trio.Event()  # no ack on this connection
        acks: list[int] = []

        async def send() -> None:
            acks.append(await c.send("s", {"x": 1}))

        nursery.start_soon(send)
        with trio.fail_after(10):
            while not service.ids:
                await trio.sleep(0.01)
        scope.cancel()  # the daemon goes away with the send in flight
        await trio.sleep(0.05)
        del service.gates["s"]
        scope = await _serve(nursery, service, cfg)
        with trio.fail_after(10):
            while not acks:
                await trio.sleep(0.01)
    scope.cancel()
    assert len(service.ids) == 2 and service.ids[0] == service.ids[1]  # one id, sent twice
    assert acks == [2]


async def test_without_reconnect_a_lost_send_raises_and_may_be_repeated_with_its_id(sockdir, nursery):
    service = MemoryService()
    cfg = ServerConfig(socket_path=sockdir / "g.sock")
    scope = await _serve(nursery, service, cfg)
    async with open_client(cfg.socket_path) as c:
        await c.open("s", {})
        service.gates["s"] = trio.Event()

        async def send() -> None:
            with pytest.raises(ConnectionLost):
                await c.send("s", {"x": 1}, id="mine")

        async with trio.open_nursery() as inner:
            inner.start_soon(send)
            with trio.fail_after(10):
                while not service.ids:
                    await trio.sleep(0.01)
            scope.cancel()
    assert service.ids == ["mine"]


async def test_a_retried_send_survives_a_reconnection_that_fails_in_its_handshake(sockdir, nursery):
    """The daemon is killed again right after accepting the client's reconnection (before the
    handshake's reply): the send waiting for the connection must still go out on the next one."""
    service = MemoryService()
    cfg = ServerConfig(socket_path=sockdir / "g.sock")
    scope = await _serve(nursery, service, cfg)
    async with open_client(cfg.socket_path, reconnect=True, backoff_initial=0.01, backoff_cap=0.05) as c:
        await c.open("s", {})
        service.gates["s"] = trio.Event()
        acks: list[int] = []

        async def send() -> None:
            acks.append(await c.send("s", {"x": 1}))

        nursery.start_soon(send)
        with trio.fail_after(10):
            while not service.ids:
                await trio.sleep(0.01)
        scope.cancel()
        await trio.sleep(0.05)
        del service.gates["s"]
        # A "daemon" that accepts one connection and dies before it answers the hello.
        cfg.socket_path.unlink(missing_ok=True)
        listener = trio.socket.socket(trio.socket.AF_UNIX)
        await listener.bind(str(cfg.socket_path))
        listener.listen()
        with trio.fail_after(10):
            conn, _ = await listener.accept()
        conn.close()
        listener.close()
        cfg.socket_path.unlink(missing_ok=True)
        scope = await _serve(nursery, service, cfg)
        with trio.fail_after(10):
            while not acks:
                await trio.sleep(0.01)
    scope.cancel()
    assert len(service.ids) == 2 and service.ids[0] == service.ids[1]
