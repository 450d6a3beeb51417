"""Fault injection: scripted per connection (with triggers), live actions, options.faults."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed

from geminid.daemon.fake import FakeOptions, FakeUpstream, Fault, Planned, Trigger, text_catalogue
from geminid.protocol import live

from .helpers import MODEL, connect, connect_memory, text_of

TOOLS = [{"functionDeclarations": [{"name": "get_weather", "behavior": "BLOCKING"}]}]


def _chunks(msgs):
    return [m for m in msgs if "modelTurn" in m.get("serverContent", {})]


async def _drain(client, limit: float = 1000):
    """Every message until the close; (messages, code, reason)."""
    msgs = []
    while True:
        try:
            msgs.append(await client.recv(limit=limit))
        except ConnectionClosed as exc:
            return msgs, exc.reason.code, exc.reason.reason


async def test_scripted_close_after_setup(start_fake):
    fake = await start_fake()
    fake.script(Fault.close(1011, "The service is currently unavailable."), after_setup=True)
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={}))
        msgs, code, reason = await _drain(client)
    assert [next(iter(m)) for m in msgs] == ["setupComplete", "sessionResumptionUpdate"]
    assert (code, reason) == (1011, "The service is currently unavailable.")
    async with connect(fake) as client:  # the script applied to one connection only
        await client.setup()
        await client.say("hi")
        await client.turn()


async def test_scripted_close_on_setup_fails_the_setup(start_fake):
    fake = await start_fake()
    fake.script(Fault.close(1008, "Operation is not implemented, or supported, or enabled."), on_setup=True)
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        msgs, code, _ = await _drain(client)
    assert msgs == [] and code == 1008


async def test_scripted_drop_is_1006_without_close_frame(start_fake):
    fake = await start_fake()
    fake.script(Fault.drop(), after_setup=True)
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        msgs, code, reason = await _drain(client)
    assert "setupComplete" in msgs[0]
    assert code == 1006
    assert fake.connections[0].closed_by == "drop"


async def test_drop_with_rst(start_fake):
    fake = await start_fake()
    fake.script(Fault.drop(rst=True), after_setup=True)
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        _, code, _ = await _drain(client)
    assert code == 1006


async def test_fault_mid_turn_after_chunks(start_fake):
    fake = await start_fake(reply_chunks=5)
    fake.script(Fault.close(1011, "Internal error encountered."), after_chunks=2)
    async with connect(fake) as client:
        await client.setup()
        await client.say("hello there")
        msgs, code, _ = await _drain(client)
    assert len(_chunks(msgs)) == 2 and code == 1011
    assert not any("turnComplete" in m.get("serverContent", {}) for m in msgs)


async def test_fault_after_messages(start_fake):
    fake = await start_fake()
    fake.script(Fault.drop(), after_messages=2)
    async with connect(fake) as client:
        await client.setup()
        await client.say("one", turn_complete=False)
        await client.say("two")  # the drop lands before any reply chunk
        msgs, code, _ = await _drain(client)
    assert code == 1006 and _chunks(msgs) == []
    assert fake.conversations["c1"].user_turns == ["one", "two"]


async def test_fault_after_tool_call(start_fake):
    fake = await start_fake()
    fake.script(Fault.close(1011, "Deadline expired before operation could complete."), after_tool_call=True)
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        await client.say("weather")
        msgs, code, _ = await _drain(client)
    assert "toolCall" in msgs[-1] and code == 1011


async def test_fault_after_turns(start_fake):
    fake = await start_fake()
    fake.script(Fault.close(1000, "The operation was cancelled."), after_turns=2)
    async with connect(fake) as client:
        await client.setup()
        await client.say("a")
        await client.turn()
        await client.say("b")
        msgs, code, _ = await _drain(client)
    assert text_of(msgs).startswith("turn 2:") and code == 1000


async def test_fault_none_skips_a_connection(start_fake):
    fake = await start_fake()
    fake.script(Fault.none())
    fake.script(Fault.close(1011, "x"), after_setup=True)
    async with connect(fake) as client:
        await client.setup()
        await client.say("fine")
        await client.turn()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        assert (await _drain(client))[1] == 1011


async def test_refused_dials_do_not_consume_the_script(start_fake):
    fake = await start_fake()
    fake.refuse_next(1, status=503)
    fake.script(Fault.close(4000, "scripted"), after_setup=True)
    stream = await trio.open_tcp_stream("127.0.0.1", fake.port)
    await stream.send_all(b"GET /ws/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = await stream.receive_some(4096)
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 503")
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        assert (await _drain(client))[1:] == (4000, "scripted")


async def test_scripted_goaway_moves_the_cut(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue()))
    fake.script(Fault.goaway(5.0), after_setup=True)
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        assert await client.recv() == {"goAway": {"timeLeft": "5s"}}
        with trio.fail_after(100):
            msgs, code, _ = await _drain(client)
        assert code == 1008 and trio.current_time() - start == 5.0


async def test_scripted_stall_then_drop_after_duration(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue()))
    fake.script(Fault.stall(duration=30.0), after_setup=True)
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        await client.say("anyone?")  # never read, never answered
        msgs, code, _ = await _drain(client)
        assert msgs == [] and code == 1006
        assert trio.current_time() - start == 30.0
    assert fake.connections[0].closed_by == "stall"
    assert fake.conversations["c1"].user_turns == []


async def test_after_seconds_and_options_faults(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), faults=(Planned(Fault.close(1011, "every"), Trigger("seconds", seconds=7.0)),)))
    for _ in range(2):
        async with connect_memory(fake, nursery) as client:
            start = trio.current_time()
            await client.setup()
            _, code, reason = await _drain(client)
            assert (code, reason) == (1011, "every") and trio.current_time() - start == 7.0


async def test_latency_delays_every_frame(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), latency=2.5, reply_pace=0.0))
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.send(live.setup(MODEL, response_modalities=["TEXT"]))
        await client.recv(limit=100)
        assert trio.current_time() - start == 2.5
        start = trio.current_time()
        await client.say("x")
        await client.turn(limit=100)
        assert trio.current_time() - start == 2.5


async def test_expire_handles_fault(start_fake):
    fake = await start_fake()
    fake.script(Fault.expire_handles(), after_turns=1)
    async with connect(fake) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
        await client.say("x")
        await client.turn()
        await client.recv()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": handle}))
        assert (await _drain(client))[1] == 1008


async def test_live_drop_all(start_fake):
    fake = await start_fake()
    async with connect(fake) as a, connect(fake) as b:
        await a.setup()
        await b.setup()
        await fake.drop_all()
        assert fake.live_connections == 0
        assert (await _drain(a))[1] == 1006 and (await _drain(b))[1] == 1006


async def test_live_close_all(start_fake):
    fake = await start_fake()
    async with connect(fake) as a:
        await a.setup()
        await fake.close_all(1011, "The service is currently unavailable.")
        assert (await _drain(a))[1:] == (1011, "The service is currently unavailable.")
    assert fake.connections[0].close_code == 1011


async def test_live_stall_all_then_drop_all(start_fake):
    fake = await start_fake()
    async with connect(fake) as a:
        await a.setup()
        await fake.stall_all()
        await a.say("hello?")
        with trio.move_on_after(0.2) as scope:
            await a.recv()
        assert scope.cancelled_caught  # nothing comes back
        assert fake.live_connections == 0  # a stalled connection no longer counts as open
        await fake.drop_all()
        assert (await _drain(a))[1] == 1006


async def test_live_goaway_all(start_fake):
    fake = await start_fake()
    async with connect(fake) as a:
        await a.setup()
        await fake.goaway_all(0.2)
        assert await a.recv() == {"goAway": {"timeLeft": "0.2s"}}
        assert (await _drain(a))[1] == 1008
