"""The deterministic model: pure logic, then over loopback (context, chunks, interruption, usage)."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.fake import model as M

from .helpers import connect, connect_memory, text_of


def test_compose_reply_format():
    assert M.compose_reply(1, "hello", []) == 'turn 1: heard "hello".'
    assert M.compose_reply(2, "how", ["hello"]) == 'turn 2: heard "how"; previous "hello".'
    assert M.compose_reply(3, "Recall please", ["a", "b"]) == (
        'turn 3: heard "Recall please"; previous "b"; recall ["a", "b"].'
    )
    assert M.compose_reply(1, "recall", []) == 'turn 1: heard "recall"; recall [].'
    assert M.compose_tool_reply(4, "get_weather", {"b": 1, "a": "x"}) == (
        'turn 4: get_weather returned {"a":"x","b":1}.'
    )


@given(st.text(min_size=0, max_size=200), st.integers(min_value=1, max_value=20))
def test_split_chunks_joins_back(text, n):
    chunks = M.split_chunks(text, n)
    assert "".join(chunks) == text
    assert len(chunks) == max(1, min(n, len(text)))
    assert all(chunks) or text == ""


def test_tool_to_call():
    assert M.tool_to_call(["get_weather"], "what's the WEATHER", ("weather",)) == "get_weather"
    assert M.tool_to_call(["lookup", "turn_on"], "please turn_on it", ("weather",)) == "turn_on"
    assert M.tool_to_call(["lookup"], "weather?", ("weather",)) == "lookup"
    assert M.tool_to_call(["lookup"], "hello", ("weather",)) is None
    assert M.tool_to_call([], "weather", ("weather",)) is None


def test_pcm_and_rates():
    assert len(M.pcm_for_text("abcde")) == 5 * 48 * 2
    assert M.pcm_rate("audio/pcm;rate=24000") == 24000
    assert M.pcm_rate("audio/pcm") == 16000
    assert M.audio_ms(32000, 16000) == 1000


async def test_turns_are_numbered_and_recall_earlier_ones(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.say("hello")
        assert text_of(await client.turn()) == 'turn 1: heard "hello".'
        await client.say("the sky is green")
        assert text_of(await client.turn()) == 'turn 2: heard "the sky is green"; previous "hello".'
        await client.say("recall")
        assert text_of(await client.turn()) == (
            'turn 3: heard "recall"; previous "the sky is green"; recall ["hello", "the sky is green"].'
        )
    conv = fake.conversations["c1"]
    assert conv.user_turns == ["hello", "the sky is green", "recall"]
    assert conv.turn_count == 3
    assert [e["role"] for e in conv.history] == ["user", "model"] * 3


async def test_reply_streams_in_chunks_then_generation_and_turn_complete(start_fake):
    fake = await start_fake(reply_chunks=4)
    async with connect(fake) as client:
        await client.setup()
        await client.say("hello there")
        msgs = await client.turn()
    chunks = [m for m in msgs if "modelTurn" in m.get("serverContent", {})]
    assert len(chunks) == 4
    tail = [list(m["serverContent"]) for m in msgs[-2:]]
    # 2026 models send interactionStatus with every turnComplete (test_live_2026 for its values)
    assert tail == [["generationComplete"], ["turnComplete", "interactionStatus"]]
    assert msgs[-2]["serverContent"]["generationComplete"] is True
    usage = msgs[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"] > 0


async def test_usage_grows_with_context(start_fake):
    fake = await start_fake()
    prompts = []
    async with connect(fake) as client:
        await client.setup()
        for word in ("one", "two", "three"):
            await client.say(word)
            prompts.append((await client.turn())[-1]["usageMetadata"]["promptTokenCount"])
    assert prompts[0] < prompts[1] < prompts[2]


async def test_turn_complete_false_appends_without_reply(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(resumption={})
        await client.say("first part", turn_complete=False)
        # No reply: 3.8 says it waits for more input, then the resumption update for the new state.
        assert await client.recv() == {"serverContent": {"waitingForInput": True}}
        msg = await client.recv()
        assert msg["sessionResumptionUpdate"]["resumable"] is True
        await client.say("second part")
        assert text_of(await client.turn()) == 'turn 1: heard "first part second part".'
    assert fake.conversations["c1"].user_turns == ["first part", "second part"]


async def test_new_content_interrupts_reply(start_fake):
    fake = await start_fake(reply_pace=0.05, reply_chunks=10)
    async with connect(fake) as client:
        await client.setup()
        await client.say("a long answer please")
        first = await client.recv()
        assert "modelTurn" in first["serverContent"]
        await client.say("stop")
        msgs = await client.recv_until(lambda m: m.get("serverContent", {}).get("interrupted"))
        assert not any(m.get("serverContent", {}).get("generationComplete") for m in msgs)
        assert "turnComplete" in (await client.recv())["serverContent"]
        reply = await client.turn()
        assert text_of(reply).startswith('turn 2: heard "stop"; previous "a long answer please"')
    conv = fake.conversations["c1"]
    assert conv.history[1]["role"] == "model" and conv.history[1]["interrupted"] is True


async def test_pace_is_on_trios_clock(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), reply_pace=10.0, reply_chunks=3, empty_frames=False))
    async with connect_memory(fake, nursery) as client:
        await client.setup()
        start = trio.current_time()
        await client.say("hi")
        times = []
        while True:
            msg = await client.recv(limit=1000)
            times.append((next(iter(msg["serverContent"])), trio.current_time() - start))
            if msg["serverContent"].get("turnComplete"):
                break
    # 3 chunks at 10, 20, 30 s; generationComplete and turnComplete at 40 s.
    assert times == [
        ("modelTurn", 10.0), ("modelTurn", 20.0), ("modelTurn", 30.0),
        ("generationComplete", 40.0), ("turnComplete", 40.0),
    ]
