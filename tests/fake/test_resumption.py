"""Session resumption: updates, handles as snapshots, TTL, rollback, the 1008/1011/1007 closes."""

from __future__ import annotations

import trio

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.fake.routing import ws_path
from geminid.protocol import live

from .helpers import MODEL, connect, connect_memory, handles_in, text_of

TOOLS = [{"functionDeclarations": [{"name": "get_weather", "behavior": "BLOCKING"}]}]


def _updates(msgs):
    return [m["sessionResumptionUpdate"] for m in msgs if "sessionResumptionUpdate" in m]


async def test_updates_after_setup_and_each_turn(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        first = await client.setup(resumption={})
        assert first[1]["sessionResumptionUpdate"]["resumable"] is True
        h0 = first[1]["sessionResumptionUpdate"]["newHandle"]
        await client.say("hi")
        msgs = await client.turn()
        # while generating: resumable false, empty handle (proto3 JSON omits both)
        assert _updates(msgs) == [{}]
        after = await client.recv()
        h1 = after["sessionResumptionUpdate"]["newHandle"]
        assert after["sessionResumptionUpdate"]["resumable"] is True
    assert h0 != h1
    assert fake.connections[0].handles == [h0, h1]
    assert fake.conversation_for_handle(h1) is fake.conversations["c1"]
    assert fake.conversation_for_handle("unknown") is None


async def test_no_updates_without_session_resumption(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.say("hi")
        await client.turn()
        await client.say("again")
        await client.turn()
    assert not any("sessionResumptionUpdate" in m for m in fake.connections[0].sent)


async def test_not_resumable_while_tool_call_pending(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(resumption={}, tools=TOOLS)
        await client.say("weather")
        msgs = await client.recv_until(lambda m: "toolCall" in m)
        assert _updates(msgs) == [{}]
        call = msgs[-1]["toolCall"]["functionCalls"][0]
        # a message that does not end the call yields no resumable handle
        await client.send(live.realtime_audio(bytes(640)))
        await client.send(live.tool_response([live.function_response(call["id"], call["name"], {"t": 1})]))
        msgs = await client.turn()
        assert _updates(msgs) == [{}]
        assert handles_in([await client.recv()])


async def test_resume_restores_context(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(resumption={})
        await client.say("my name is Ada")
        await client.turn()
        handle = handles_in([await client.recv()])[0]
    async with connect(fake) as client:
        await client.setup(resumption={"handle": handle})
        await client.say("recall")
        assert text_of(await client.turn()) == (
            'turn 2: heard "recall"; previous "my name is Ada"; recall ["my name is Ada"].'
        )
    async with connect(fake) as client:  # a fresh session for comparison
        await client.setup(resumption={})
        await client.say("recall")
        assert text_of(await client.turn()) == 'turn 1: heard "recall"; recall [].'
    assert fake.connections[1].resumed_handle == handle
    assert fake.connections[1].conversation_id == "c1"
    assert fake.connections[2].conversation_id == "c2"
    assert fake.conversations["c1"].connection_ids == [1, 2]


async def test_resume_with_older_handle_rolls_back(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(resumption={})
        await client.say("one")
        await client.turn()
        h1 = handles_in([await client.recv()])[0]
        await client.say("two")
        await client.turn()
        handles_in([await client.recv()])
    conv = fake.conversations["c1"]
    assert conv.user_turns == ["one", "two"]
    async with connect(fake) as client:
        await client.setup(resumption={"handle": h1})
        await client.say("recall")
        assert text_of(await client.turn()) == 'turn 2: heard "recall"; previous "one"; recall ["one"].'
    assert conv.user_turns == ["one", "recall"]
    assert conv.rollbacks == 1


async def test_unknown_handle_closes_1008(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": "bogus"}))
        code, reason = await client.closed()
    assert (code, reason) == (1008, "Requested entity was not found.")


async def test_expire_handles_makes_resume_fail(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
    fake.expire_handles()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": handle}))
        assert await client.closed() == (1008, "Requested entity was not found.")


async def test_handle_ttl_after_connection_end(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), handle_ttl=100.0))
    async with connect_memory(fake, nursery) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
        await trio.sleep(500)  # the TTL counts from the end of the connection, not from issue
    await trio.sleep(99)
    async with connect_memory(fake, nursery) as client:
        await client.setup(resumption={"handle": handle})  # still valid at 99 s
    await trio.sleep(100.5)
    async with connect_memory(fake, nursery) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": handle}))
        assert await client.closed() == (1008, "Requested entity was not found.")


async def test_millisecond_ttl(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), handle_ttl=0.005))
    async with connect_memory(fake, nursery) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
    await trio.sleep(0.01)
    async with connect_memory(fake, nursery) as client:
        await client.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": handle}))
        assert (await client.closed())[0] == 1008


async def test_resume_while_old_connection_open_closes_1011(start_fake):
    fake = await start_fake()
    async with connect(fake) as old:
        handle = (await old.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
        async with connect(fake) as new:
            await new.send(live.setup(MODEL, response_modalities=["TEXT"], session_resumption={"handle": handle}))
            code, _ = await new.closed()
        assert code == 1011
        await old.say("still here")  # the old connection is unaffected
        assert text_of(await old.turn()).startswith("turn 1:")


async def test_resume_with_other_model_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
    async with connect(fake) as client:
        await client.send(live.setup("models/gemini-2.5-flash-native-audio-preview-12-2025", session_resumption={"handle": handle}))
        assert (await client.closed())[0] == 1007


async def test_resumed_setup_may_change_other_fields(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        handle = (await client.setup(resumption={}))[1]["sessionResumptionUpdate"]["newHandle"]
    async with connect(fake) as client:
        await client.setup(
            resumption={"handle": handle}, response_modalities=["AUDIO"], output_audio_transcription=True
        )
        await client.say("hi")
        msgs = await client.turn()
    assert any("inlineData" in m["serverContent"]["modelTurn"]["parts"][0] for m in msgs if "modelTurn" in m.get("serverContent", {}))


async def test_transparent_index_counts_non_setup_messages(start_fake):
    fake = await start_fake()
    async with connect(fake, path=ws_path("v1beta1", vertex=True)) as client:
        first = await client.setup(resumption={"transparent": True})
        assert "lastConsumedClientMessageIndex" not in first[1]["sessionResumptionUpdate"]
        await client.say("a", turn_complete=False)  # index 0
        # (after 3.8's waitingForInput)
        upd = (await client.recv_until(lambda m: "sessionResumptionUpdate" in m))[-1]["sessionResumptionUpdate"]
        assert upd["lastConsumedClientMessageIndex"] == "0"
        await client.send(live.realtime_audio(bytes(640)))  # index 1: no update of its own
        await client.say("b")  # index 2
        msgs = await client.turn()
        assert _updates(msgs) == [{"lastConsumedClientMessageIndex": "2"}]
        upd = (await client.recv())["sessionResumptionUpdate"]
        assert upd["lastConsumedClientMessageIndex"] == "2" and upd["resumable"] is True
        handle = upd["newHandle"]
    async with connect(fake, path=ws_path("v1beta1", vertex=True)) as client:
        await client.setup(resumption={"transparent": True, "handle": handle})
        await client.say("c")  # counting restarts on the new connection
        await client.turn()
        upd = (await client.recv())["sessionResumptionUpdate"]
        assert upd["lastConsumedClientMessageIndex"] == "0"


async def test_transparent_option_on_developer_path(start_fake):
    fake = await start_fake(transparent=True)
    async with connect(fake) as client:
        await client.setup(resumption={})
        await client.say("x")
        await client.turn()
        assert (await client.recv())["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"] == "0"


async def test_no_index_without_transparent(start_fake):
    fake = await start_fake()
    async with connect(fake, path=ws_path("v1beta1", vertex=True)) as client:
        await client.setup(resumption={})
        await client.say("x")
        await client.turn()
        assert "lastConsumedClientMessageIndex" not in (await client.recv())["sessionResumptionUpdate"]
