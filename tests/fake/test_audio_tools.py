"""Audio in and out, realtime text, and the tool-call round trip."""

from __future__ import annotations

from geminid.protocol import live

from .helpers import connect, text_of

TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "weather for a place",
                "behavior": "BLOCKING",  # the legacy round trip; non-blocking: test_live_2026
                "parameters": {"type": "OBJECT", "properties": {"query": {"type": "STRING"}}},
            }
        ]
    }
]


def _sc(msgs, key):
    return [m["serverContent"][key] for m in msgs if key in m.get("serverContent", {})]


async def test_audio_modality_replies_with_pcm_and_transcription(start_fake):
    fake = await start_fake(reply_chunks=2)
    async with connect(fake) as client:
        await client.setup(response_modalities=["AUDIO"], output_audio_transcription=True)
        await client.say("hello")
        msgs = await client.turn()
    turns = _sc(msgs, "modelTurn")
    assert len(turns) == 2
    for t in turns:
        blob = t["parts"][0]["inlineData"]
        assert blob["mimeType"] == "audio/pcm;rate=24000"
        pcm = live.b64decode_any(blob["data"])
        assert len(pcm) > 0 and len(pcm) % 2 == 0
    assert "".join(t["text"] for t in _sc(msgs, "outputTranscription")) == 'turn 1: heard "hello".'
    assert text_of(msgs) == ""


async def test_audio_without_output_transcription_sends_none(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(response_modalities=["AUDIO"])
        await client.say("hello")
        msgs = await client.turn()
    assert _sc(msgs, "outputTranscription") == []
    assert _sc(msgs, "modelTurn")


async def test_input_audio_counted_and_answered_on_audio_stream_end(start_fake):
    fake = await start_fake()
    chunk = bytes(1280)  # 40 ms at 16 kHz
    async with connect(fake) as client:
        await client.setup(input_audio_transcription=True)
        for _ in range(25):
            await client.send(live.realtime_audio(chunk))
        await client.send(live.audio_stream_end())
        msgs = await client.turn()
    assert _sc(msgs, "inputTranscription") == [{"text": "(1000 ms of audio)"}]
    assert text_of(msgs) == 'turn 1: heard "(1000 ms of audio)".'
    st = fake.conversations["c1"].state
    assert (st.audio_chunks, st.audio_bytes, st.audio_ms) == (25, 25 * 1280, 1000)
    assert fake.conversations["c1"].user_turns == ["(1000 ms of audio)"]


async def test_activity_end_answers_audio_and_urlsafe_b64(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        data = live.b64encode(bytes(range(256)) * 5).replace("+", "-").replace("/", "_").rstrip("=")
        await client.send(live.activity_start())
        await client.send({"realtime_input": {"audio": {"data": data, "mime_type": "audio/pcm;rate=16000"}}})
        await client.send(live.activity_end())
        msgs = await client.turn()
    assert text_of(msgs) == 'turn 1: heard "(40 ms of audio)".'
    assert _sc(msgs, "inputTranscription") == []  # not asked for in setup


async def test_realtime_text_is_a_turn(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.say("typed")
        await client.turn()
        await client.send(live.realtime_text("spoken"))
        assert text_of(await client.turn()) == 'turn 2: heard "spoken"; previous "typed".'


async def test_tool_call_round_trip(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        await client.say("what is the weather in Paris")
        msg = await client.recv_until(lambda m: "toolCall" in m)
        call = msg[-1]["toolCall"]["functionCalls"][0]
        assert call["name"] == "get_weather"
        assert call["args"] == {"query": "what is the weather in Paris"}
        assert call["id"]
        await client.send(live.tool_response([live.function_response(call["id"], "get_weather", {"temp": 21})]))
        msgs = await client.turn()
        assert text_of(msgs) == 'turn 1: get_weather returned {"temp":21}.'
        await client.say("and tomorrow?")
        assert text_of(await client.turn()).startswith("turn 2:")
    conv = fake.conversations["c1"]
    assert conv.tool_calls[0].id == call["id"]
    assert conv.tool_calls[0].answered and conv.tool_calls[0].response == {"temp": 21}


async def test_tool_call_ids_unique_and_name_triggers(start_fake):
    fake = await start_fake()
    ids = []
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        for _ in range(3):
            await client.say("call get_weather")
            call = (await client.recv_until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]
            ids.append(call["id"])
            await client.send(live.tool_response([live.function_response(call["id"], "get_weather", {})]))
            await client.turn()
    assert len(set(ids)) == 3


async def test_no_tool_call_without_declaration(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.say("weather please")
        msgs = await client.turn()
    assert not any("toolCall" in m for m in msgs)


async def test_wrong_tool_response_id_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        await client.say("weather")
        await client.recv_until(lambda m: "toolCall" in m)
        await client.send(live.tool_response([live.function_response("nope", "get_weather", {})]))
        code, reason = await client.closed()
    assert code == 1007 and "nope" in reason


async def test_tool_response_with_nothing_pending_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        await client.send(live.tool_response([live.function_response("fc_1", "get_weather", {})]))
        code, _ = await client.closed()
    assert code == 1007


async def test_interrupting_pending_call_cancels_it(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup(tools=TOOLS)
        await client.say("weather")
        call_id = (await client.recv_until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]["id"]
        await client.say("never mind")
        msgs = await client.recv_until(lambda m: "toolCallCancellation" in m)
        assert msgs[-1] == {"toolCallCancellation": {"ids": [call_id]}}
        msgs = await client.turn()  # the interrupted turn ends
        assert msgs[0]["serverContent"] == {"interrupted": True}
        assert text_of(await client.turn()).startswith('turn 2: heard "never mind"')
    assert fake.conversations["c1"].tool_calls[0].cancelled
