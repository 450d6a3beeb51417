"""The 2026 server messages: interactionStatus, extended-thinking fillers, waitingForInput,
interimInputTranscription, non-blocking tools (scheduling, willContinue) and 3.1 history."""

from __future__ import annotations

import pytest
import trio

from geminid.daemon.fake import catalogue as C
from geminid.protocol import live

from .helpers import connect, handles_in, is_idle, status_of, transcript_of

M38 = "models/gemini-3.8-live"
EXT = "models/gemini-3.8-live-extended-thinking"
M31 = "models/gemini-3.1-flash-live-preview"
THINK = {"thinkingConfig": {"thinkingLevel": "LOW"}}


def _tools(behavior: str | None = None, name: str = "book_ticket") -> list[dict]:
    decl: dict = {
        "name": name,
        "parameters": {
            "type": "OBJECT",
            "properties": {"city": {"type": "STRING"}, "seats": {"type": "INTEGER"},
                           "cls": {"type": "STRING", "enum": ["ECONOMY", "FIRST"]}},
        },
    }
    if behavior is not None:
        decl["behavior"] = behavior
    return [{"functionDeclarations": [decl]}]


def _turn_completes(msgs: list[dict]) -> list[dict]:
    return [m["serverContent"] for m in msgs if m.get("serverContent", {}).get("turnComplete")]


async def _fake(start_fake, **kwargs):
    return await start_fake(catalogue=C.catalogue_2026(), **kwargs)


async def test_plain_3_8_sends_idle_with_every_turn_complete(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, output_audio_transcription=True)
        for text in ("one", "two"):
            await client.say(text)
            msgs = await client.turn()
            assert status_of(msgs[-1]) == "IDLE" and is_idle(msgs[-1])


async def test_unconfirmed_variant_plain_3_8_sends_no_status(start_fake):
    fake = await _fake(start_fake, plain_interaction_status=False)
    async with connect(fake) as client:
        await client.setup(model=M38)
        await client.say("one")
        msgs = await client.turn()
    assert "interactionStatus" not in msgs[-1]["serverContent"] and is_idle(msgs[-1])


async def _extended_turn(client, text: str) -> list[dict]:
    await client.say(text)
    return await client.recv_until(is_idle)


async def test_extended_thinking_filler_then_answer(start_fake):
    fake = await _fake(start_fake, plain_interaction_status=False)  # extended sends it anyway
    async with connect(fake) as client:
        await client.setup(model=EXT, generation_config=THINK, output_audio_transcription=True,
                           session_resumption={})
        msgs = await _extended_turn(client, "plan my trip")
    tcs = _turn_completes(msgs)
    assert [tc["interactionStatus"] for tc in tcs] == ["IN_PROGRESS", "IDLE"]
    first = next(i for i, m in enumerate(msgs) if m.get("serverContent", {}).get("turnComplete"))
    assert transcript_of(msgs[:first]) == "turn 1: let me think."
    assert "generationComplete" in msgs[first - 1]["serverContent"]
    assert transcript_of(msgs[first:]) == 'turn 1: heard "plan my trip".'
    # default: no resumable handle between IN_PROGRESS and IDLE
    assert handles_in(msgs) == []
    history = [e["text"] for e in fake.conversations["c1"].history if e["role"] == "model"]
    assert history == ["turn 1: let me think.", 'turn 1: heard "plan my trip".']


async def test_resumable_in_progress_option(start_fake):
    fake = await _fake(start_fake, resumable_in_progress=True)
    async with connect(fake) as client:
        await client.setup(model=EXT, generation_config=THINK, session_resumption={})
        msgs = await _extended_turn(client, "plan")
    first = next(i for i, m in enumerate(msgs) if m.get("serverContent", {}).get("turnComplete"))
    assert handles_in(msgs[first:first + 3])  # a handle right after the IN_PROGRESS boundary
    handle = handles_in(msgs[first:first + 3])[0]
    conv = fake.conversation_for_handle(handle)
    assert conv is not None


async def test_waiting_for_input_on_incomplete_client_content(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38)
        await client.say("my name is", turn_complete=False)
        assert await client.recv() == {"serverContent": {"waitingForInput": True}}
        await client.say("Ann")
        msgs = await client.turn()
    assert 'heard "my name is Ann"' in "".join(str(m) for m in fake.conversations["c1"].history)
    assert status_of(msgs[-1]) == "IDLE"


async def test_interim_input_transcription(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, input_audio_transcription=True)
        await client.send(live.realtime_audio(bytes(640)))
        assert await client.recv() == {"serverContent": {"interimInputTranscription": {"text": "(20 ms of audio)"}}}
        await client.send(live.realtime_audio(bytes(640)))
        assert (await client.recv())["serverContent"]["interimInputTranscription"]["text"] == "(40 ms of audio)"
        await client.send(live.audio_stream_end())
        assert (await client.recv())["serverContent"]["inputTranscription"]["text"] == "(40 ms of audio)"


async def test_tool_args_follow_the_declared_schema(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools())
        await client.say("book_ticket to Rome for two")
        call = (await client.recv_until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]
    assert call["args"] == {"city": "book_ticket to Rome for two", "seats": 5, "cls": "ECONOMY"}


async def _call(client, text: str = "book_ticket please") -> dict:
    await client.say(text)
    msgs = await client.recv_until(lambda m: "toolCall" in m)
    return msgs[-1]["toolCall"]["functionCalls"][0]


async def test_non_blocking_call_survives_new_input_and_is_used(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), output_audio_transcription=True, session_resumption={})
        call = await _call(client)
        msgs = await client.turn()  # the filler while the call runs
        assert transcript_of(msgs) == "turn 1: calling book_ticket."
        assert status_of(msgs[-1]) == "IDLE"
        for text in ("what time is it", "and in Paris"):
            await client.say(text)
            msgs = await client.turn()
            assert not any("toolCallCancellation" in m for m in msgs)
            assert 'heard "' + text in transcript_of(msgs)
        # no resumable handle while the call is pending (default)
        assert handles_in(client.received[2:]) == []
        resp = live.function_response(call["id"], "book_ticket", {"booked": True})
        await client.send(live.tool_response([resp]))
        msgs = await client.turn()
    assert transcript_of(msgs) == 'turn 1: book_ticket returned {"booked":true}.'
    rec = fake.conversations["c1"].tool_calls[0]
    assert rec.answered and not rec.cancelled and rec.behavior == "NON_BLOCKING"


async def test_resumable_pending_calls_option(start_fake):
    fake = await _fake(start_fake, resumable_pending_calls=True)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), session_resumption={})
        await _call(client)
        msgs = await client.turn()
        msgs += [await client.recv()]
    assert handles_in(msgs)


async def test_blocking_call_on_3_8_is_still_cancelled_by_new_input(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools("BLOCKING"))
        call = await _call(client)
        await client.say("never mind")
        msgs = await client.recv_until(lambda m: "toolCallCancellation" in m)
    assert msgs[-1] == {"toolCallCancellation": {"ids": [call["id"]]}}
    assert fake.conversations["c1"].tool_calls[0].cancelled


async def test_silent_response_elicits_nothing(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        await client.turn()
        resp = live.function_response(call["id"], "book_ticket", {"ok": 1}) | {"scheduling": "SILENT"}
        await client.send(live.tool_response([resp]))
        with trio.move_on_after(0.2):
            extra = await client.recv()
            raise AssertionError(f"SILENT elicited {extra}")
        await client.say("and?")
        msgs = await client.turn()
    assert 'heard "and?"' in transcript_of(msgs)
    assert {"role": "tool", "text": '{"ok": 1}', "call_id": call["id"]} in fake.conversations["c1"].history


async def test_when_idle_waits_for_the_model_to_be_idle(start_fake):
    fake = await _fake(start_fake, reply_pace=0.02)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        await client.turn()
        await client.say("tell me a story")
        await client.recv_until(lambda m: "outputTranscription" in m.get("serverContent", {}))
        resp = live.function_response(call["id"], "book_ticket", {"ok": 1}) | {"scheduling": "WHEN_IDLE"}
        await client.send(live.tool_response([resp]))
        first = await client.turn()
        second = await client.turn()
    assert not any("interrupted" in m.get("serverContent", {}) for m in first)
    assert transcript_of(first).endswith('story"; previous "book_ticket please".')
    assert transcript_of(second) == 'turn 1: book_ticket returned {"ok":1}.'


async def test_interrupt_stops_the_model_and_speaks(start_fake):
    fake = await _fake(start_fake, reply_pace=0.02)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        await client.turn()
        await client.say("tell me a story")
        await client.recv_until(lambda m: "outputTranscription" in m.get("serverContent", {}))
        resp = live.function_response(call["id"], "book_ticket", {"ok": 1}) | {"scheduling": "INTERRUPT"}
        await client.send(live.tool_response([resp]))
        first = await client.turn()
        second = await client.turn()
    assert first[-2]["serverContent"] == {"interrupted": True}
    assert transcript_of(second) == 'turn 1: book_ticket returned {"ok":1}.'


async def test_will_continue_generator(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        await client.turn()
        for i, more in ((1, True), (2, True), (3, False)):
            resp = live.function_response(call["id"], "book_ticket", {"part": i}) | {"willContinue": more}
            await client.send(live.tool_response([resp]))
            msgs = await client.turn()
            assert transcript_of(msgs) == f'turn 1: book_ticket returned {{"part":{i}}}.'
        # finished: the same id again is unknown
        await client.send(live.tool_response([live.function_response(call["id"], "book_ticket", {})]))
        assert (await client.closed())[0] == 1007
    rec = fake.conversations["c1"].tool_calls[0]
    assert rec.responses == [{"part": 1}, {"part": 2}, {"part": 3}] and rec.answered


async def test_bad_scheduling_value_closes_1007(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=M38, tools=_tools())
        call = await _call(client)
        resp = live.function_response(call["id"], "book_ticket", {}) | {"scheduling": "INTERRUPTED"}
        await client.send({"toolResponse": {"functionResponses": [resp]}})
        code, reason = await client.closed()
    assert code == 1007
    assert reason.startswith("Invalid value at 'tool_response.function_responses[0].scheduling'")


async def test_extended_thinking_non_blocking_call_in_progress_until_answered(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:
        await client.setup(model=EXT, generation_config=THINK, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        msgs = await client.turn()
        assert status_of(msgs[-1]) == "IN_PROGRESS"
        resp = live.function_response(call["id"], "book_ticket", {"ok": 1}) | {"scheduling": "INTERRUPT"}
        await client.send(live.tool_response([resp]))
        msgs = await client.recv_until(is_idle)
    assert transcript_of(msgs) == 'turn 1: book_ticket returned {"ok":1}.'


@pytest.mark.parametrize("scheduling", ["WHEN_IDLE", "SILENT"])
async def test_idle_while_call_pending_option(start_fake, scheduling):
    # The other UNCONFIRMED behaviour: the filler ends the interaction (IDLE) although the call
    # is pending; the result is spoken later in an interaction of its own.
    fake = await _fake(start_fake, idle_while_call_pending=True, idle_after_silent=True)
    async with connect(fake) as client:
        await client.setup(model=EXT, generation_config=THINK, tools=_tools(), output_audio_transcription=True)
        call = await _call(client)
        msgs = await client.turn()
        assert transcript_of(msgs) == "turn 1: calling book_ticket." and status_of(msgs[-1]) == "IDLE"
        await client.say("and the news?")  # the call is still pending: not cancelled
        msgs = await client.recv_until(is_idle)
        assert not any("toolCallCancellation" in m for m in msgs)
        assert [tc["interactionStatus"] for tc in _turn_completes(msgs)] == ["IN_PROGRESS", "IDLE"]
        resp = live.function_response(call["id"], "book_ticket", {"ok": 1}) | {"scheduling": scheduling}
        await client.send(live.tool_response([resp]))
        if scheduling == "SILENT":  # nothing at all, not even a bare IDLE (no interaction was open)
            with trio.move_on_after(0.2):
                extra = await client.recv()
                raise AssertionError(f"SILENT elicited {extra}")
        else:
            msgs = await client.recv_until(is_idle)
            assert transcript_of(msgs) == 'turn 1: book_ticket returned {"ok":1}.'
            assert [tc["interactionStatus"] for tc in _turn_completes(msgs)] == ["IDLE"]
    assert fake.conversations["c1"].tool_calls[0].responses == [{"ok": 1}]


@pytest.mark.parametrize("decline", ["turn_complete", "nothing"])
@pytest.mark.parametrize("model", [M38, EXT])
async def test_proactive_audio_declines_an_input(start_fake, decline, model):
    fake = await _fake(start_fake, decline=decline)
    gen = THINK if model == EXT else None
    async with connect(fake) as client:
        await client.setup(model=model, generation_config=gen, output_audio_transcription=True, session_resumption={})
        await client.say("psst, not for you")
        msgs = await client.recv_until(lambda m: "sessionResumptionUpdate" in m)
        if decline == "turn_complete":
            assert [m["serverContent"] for m in msgs[:-1]] == [
                {"turnComplete": True, "interactionStatus": "IDLE"}
            ]
        else:
            assert msgs[:-1] == []
        assert msgs[-1]["sessionResumptionUpdate"]["resumable"]
        await client.say("hello")
        msgs = await client.recv_until(is_idle)
    assert transcript_of(msgs).endswith('heard "hello"; previous "psst, not for you".')
    assert fake.conversations["c1"].user_turns == ["psst, not for you", "hello"]


async def test_decline_needs_a_proactive_audio_model(start_fake):
    fake = await _fake(start_fake, decline="nothing")
    async with connect(fake) as client:
        await client.setup(model="models/gemini-2.5-flash-native-audio-preview-12-2025",
                           output_audio_transcription=True)
        await client.say("psst")
        msgs = await client.turn()
    assert transcript_of(msgs) == 'turn 1: heard "psst".'


async def test_3_1_client_content_only_as_initial_history(start_fake):
    fake = await _fake(start_fake)
    async with connect(fake) as client:  # no historyConfig: clientContent refused
        await client.setup(model=M31)
        await client.say("hello")
        assert (await client.closed())[0] == 1007
    async with connect(fake) as client:
        await client.send({"setup": {"model": M31, "outputAudioTranscription": {},
                                     "historyConfig": {"initialHistoryInClientContent": True}}})
        await client.recv()
        await client.send(live.client_content(
            [{"role": "user", "parts": [{"text": "My secret word is plum."}]},
             {"role": "model", "parts": [{"text": "Noted."}]}], turn_complete=True))
        await client.send(live.realtime_text("recall"))
        msgs = await client.turn()
        assert transcript_of(msgs) == 'turn 1: heard "recall"; previous "My secret word is plum."; ' \
            'recall ["My secret word is plum."].'
        await client.say("more")  # after the history: refused
        assert (await client.closed())[0] == 1007
    async with connect(fake) as client:  # realtime input before the history ended: refused
        await client.send({"setup": {"model": M31, "historyConfig": {"initialHistoryInClientContent": True}}})
        await client.recv()
        await client.send(live.client_content("part", turn_complete=False))
        await client.send(live.realtime_text("hi"))
        assert (await client.closed())[0] == 1007
