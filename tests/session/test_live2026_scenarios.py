"""Issue #10, the daemon side: the session against the 2026 fake (interactionStatus, extended
thinking fillers, NON_BLOCKING tools, SILENT / WHEN_IDLE / INTERRUPT / willContinue responses,
re-seeding as initial history, configuration errors the service reports as 1011).

Each test checks the outcome through the fake's own record of the conversation (its user turns
as the *current* history holds them, the responses each tool call received), so a lost or
duplicated turn, or a response that never reached the model, shows.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from session_harness import EXT_SETUP, Recorder, conversation_turns, make_config, open_core

from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, Fault
from geminid.daemon.fake.catalogue import catalogue_2026
from geminid.protocol import live
from geminid.protocol.errors import ToolCallLost

#: A 3.8 tool whose declaration names no behavior: NON_BLOCKING, the 3.8 default.
ASYNC_TOOL_SETUP = live.setup(
    "gemini-3.8-live",
    response_modalities=["TEXT"],
    tools=[{"functionDeclarations": [{"name": "get_weather", "description": "weather for a city"}]}],
)["setup"]


def spoken(rec: Recorder) -> str:
    """What the model said, from ``outputTranscription`` (audio models) and text parts."""
    out = [rec.texts()]
    for m in rec.messages():
        out.append(((m.get("serverContent") or {}).get("outputTranscription") or {}).get("text", ""))
    return "".join(out)


def first_call(rec: Recorder) -> dict[str, Any]:
    return next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]


def respond(call: dict[str, Any], result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return live.tool_response([{**live.function_response(call["id"], call["name"], result), **extra}])


def fake_call(core: Any, call_id: str) -> Any:
    return next(c for conv in core.fake.conversations.values() for c in conv.tool_calls if c.id == call_id)


# -- interactionStatus: fillers, quiet points --------------------------------------------------


async def test_extended_thinking_drop_between_filler_and_answer_loses_and_duplicates_nothing(state_dir):
    # Worst case: the server issues a resumable handle at the filler's IN_PROGRESS turnComplete,
    # and the connection drops right after it. The filler must not count as the answer: the
    # handle is not taken to cover the turn, which is replayed once on the resumed session.
    opts = FakeOptions(resumable_in_progress=True, reply_pace=0.01)
    async with open_core(state_dir, fake_options=opts) as core:
        core.fake.script(Fault.drop(), after_turns=1)  # right after the filler's turnComplete
        rec = await core.open(setup=EXT_SETUP)
        await core.say("s", "hello")
        await rec.wait(lambda r: 'turn 1: heard "hello"' in spoken(r))
        assert len(core.fake.accepted) >= 2
        assert conversation_turns(core.fake) == [["hello"]]
        # The filler's turn end was seen, and did not end the reply.
        statuses = [(m.get("serverContent") or {}).get("interactionStatus") for m in core.fake.accepted[0].sent]
        assert "IN_PROGRESS" in statuses


async def test_goaway_during_an_interaction_in_progress_waits_for_idle(state_dir):
    opts = FakeOptions(resumable_in_progress=True, reply_pace=0.01)
    async with open_core(state_dir, fake_options=opts) as core:
        core.fake.script(Fault.goaway(time_left=30.0), after_turns=1)  # after the filler
        rec = await core.open(setup=EXT_SETUP)
        await core.say("s", "hello")
        await rec.wait(lambda r: 'turn 1: heard "hello"' in spoken(r))
        await rec.wait(lambda r: r.statuses().count("live") >= 2)
        first = core.fake.accepted[0]
        # The whole answer went out on the first connection, before the rotation closed it.
        sent = [(m.get("serverContent") or {}) for m in first.sent]
        assert any(c.get("interactionStatus") == "IDLE" for c in sent)
        assert first.closed_by == "client" and first.close_code == 1000
        assert conversation_turns(core.fake) == [["hello"]]


# -- NON_BLOCKING tool calls ---------------------------------------------------------------------


async def test_non_blocking_call_answered_after_the_user_spoke_twice(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Bern?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.say("s", "and what time is it?")
        await core.say("s", "thanks")
        await rec.wait(lambda r: "turn 3:" in r.texts())
        await core.registry.send("s", respond(call, {"temp": "21C"}))
        await rec.wait(lambda r: 'get_weather returned {"temp":"21C"}' in r.texts())
        assert fake_call(core, call["id"]).responses == [{"temp": "21C"}]
        assert rec.statuses().count("live") == 1 and "failed" not in rec.statuses()


async def test_interrupt_response_while_the_model_answers_another_turn(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Oslo?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.say("s", "tell me something else")
        await core.registry.send("s", respond(call, {"temp": "3C"}, scheduling="INTERRUPT"))
        await rec.wait(lambda r: 'get_weather returned {"temp":"3C"}' in r.texts())
        assert fake_call(core, call["id"]).responses == [{"temp": "3C"}]


async def test_when_idle_response_is_spoken_once_the_model_is_idle(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Rome?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.say("s", "one more thing")
        await core.registry.send("s", respond(call, {"temp": "30C"}, scheduling="WHEN_IDLE"))
        await rec.wait(lambda r: 'get_weather returned {"temp":"30C"}' in r.texts() and "turn 2:" in r.texts())
        text = rec.texts()
        assert text.index("turn 2:") < text.index("get_weather returned")  # after the other reply


async def test_will_continue_responses_are_accepted_until_the_final_one(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Lima?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.registry.send("s", respond(call, {"step": 1}, willContinue=True))
        await core.registry.send("s", respond(call, {"step": 2}, willContinue=False))
        await rec.wait(lambda r: 'returned {"step":2}' in r.texts())
        assert fake_call(core, call["id"]).responses == [{"step": 1}, {"step": 2}]
        # Final: a third response is refused here, not sent to a server that would close 1007.
        with pytest.raises(Exception, match="already answered|no pending"):
            await core.registry.send("s", respond(call, {"step": 3}))


async def test_silent_response_then_a_minute_of_silence_is_no_stall(state_dir, autojump_clock):
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=0))
    async with open_core(state_dir, cfg=cfg, memory=True) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Bern?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await rec.wait(lambda r: r.turn_ends() >= 1)  # the filler
        await core.registry.send("s", respond(call, {"temp": "21C"}, scheduling="SILENT"))
        await trio.sleep(60)
        assert fake_call(core, call["id"]).responses == [{"temp": "21C"}]
        assert len(core.fake.accepted) == 1
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert rec.statuses().count("live") == 1
        # ...and the model has it in context: the next turn is answered on the same connection.
        await core.say("s", "thanks")
        await rec.wait(lambda r: "turn 2:" in r.texts())


async def test_blocking_call_is_still_cancelled_by_new_input(state_dir):
    # BLOCKING keeps today's rule (covered in test_scenarios too): on 3.8 declared BLOCKING.
    setup = live.setup(
        "gemini-3.8-live", response_modalities=["TEXT"],
        tools=[{"functionDeclarations": [{"name": "get_weather", "behavior": "BLOCKING"}]}],
    )["setup"]
    async with open_core(state_dir) as core:
        rec = await core.open(setup=setup)
        await core.say("s", "weather in Bern?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.say("s", "never mind")
        with pytest.raises(Exception, match="cancelled"):
            await core.registry.send("s", respond(call, {}))


# -- re-seeding after context loss -------------------------------------------------------------


async def _lose_context(core: Any, rec: Recorder) -> None:
    core.fake.expire_handles()
    await core.fake.drop_all()
    await rec.wait(lambda r: r.of("session.context_lost"))
    await rec.wait(lambda r: r.statuses()[-1] == "live")


async def test_reseed_on_a_3_8_model_uses_client_content_without_turn_complete(state_dir):
    cfg = make_config(state_dir, session=SessionConfig(inactivity_timeout=0, reseed=True))
    async with open_core(state_dir, cfg=cfg) as core:
        rec = await core.open()
        await core.say("s", "my secret is plum")
        await rec.wait(lambda r: r.turn_ends() == 1)
        await _lose_context(core, rec)
        await core.say("s", "recall")
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert "my secret is plum" in rec.texts().split("turn 1:")[-1]
        fresh = core.fake.accepted[-1]
        seed = fresh.messages[1]["clientContent"]
        assert seed["turnComplete"] is False and "historyConfig" not in fresh.setup["setup"]


async def test_reseed_on_a_3_1_model_sends_initial_history(state_dir):
    # 3.1 takes clientContent only as initial history (historyConfig, ended by turnComplete:
    # true) and refuses anything else with 1007; the conversation then goes on as realtimeInput.
    cfg = make_config(state_dir, session=SessionConfig(inactivity_timeout=0, reseed=True))
    opts = FakeOptions(catalogue=catalogue_2026().accepting_text("gemini-3.1-flash-live-preview"), reply_pace=0.005)
    setup = live.setup("gemini-3.1-flash-live-preview", response_modalities=["TEXT"])["setup"]
    async with open_core(state_dir, cfg=cfg, fake_options=opts) as core:
        rec = await core.open(setup=setup)
        await core.registry.send("s", live.realtime_text("my secret is plum"))
        await rec.wait(lambda r: r.turn_ends() == 1)
        await _lose_context(core, rec)
        await core.registry.send("s", live.realtime_text("recall"))
        await rec.wait(lambda r: r.turn_ends() == 2)
        fresh = core.fake.accepted[-1]
        assert '"my secret is plum"' in rec.texts().split("turn 1:")[-1]
        assert fresh.setup["setup"]["historyConfig"] == {"initialHistoryInClientContent": True}
        assert fresh.messages[1]["clientContent"]["turnComplete"] is True
        assert "failed" not in rec.statuses()


# -- configuration errors that look transient ----------------------------------------------------


async def test_config_1011_internal_error_fails_within_a_few_attempts(state_dir, autojump_clock):
    # TEXT on 3.1: the service closes 1011 "Internal error encountered" at once, every time.
    opts = FakeOptions(catalogue=catalogue_2026())
    setup = live.setup("gemini-3.1-flash-live-preview", response_modalities=["TEXT"])["setup"]
    async with open_core(state_dir, fake_options=opts, memory=True) as core:
        start = trio.current_time()
        rec = await core.open(setup=setup)
        await rec.wait(lambda r: "failed" in r.statuses(), timeout=600)
        assert trio.current_time() - start < 30
        assert core.fake.dials <= 4
        failed = [p for p in rec.of("session.status") if p["status"] == "failed"][0]
        assert "invalid config" in failed["reason"] and "modality" in failed["reason"]


async def test_one_internal_error_after_content_is_still_retried(state_dir, autojump_clock):
    async with open_core(state_dir, memory=True) as core:
        rec = await core.open()
        for i in range(4):
            await core.say("s", f"t{i}")
            await rec.wait(lambda r, n=i + 1: r.turn_ends() == n, timeout=60)
            await core.fake.close_all(1011, "Internal error encountered.")
        await core.say("s", "last")
        await rec.wait(lambda r: r.turn_ends() == 5, timeout=600)
        assert "failed" not in rec.statuses()


async def test_refused_modality_1007_fails_at_once(state_dir, autojump_clock):
    async with open_core(state_dir, fake_options=FakeOptions(), memory=True) as core:
        rec = await core.open()  # TEXT on gemini-3.8-live: audio only, 1007
        await rec.wait(lambda r: "failed" in r.statuses(), timeout=600)
        assert core.fake.dials == 1



# -- a call lost to a reconnect: the late result as conversation text -----------------------------


async def test_a_lost_calls_late_result_can_be_delivered_as_text(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=ASYNC_TOOL_SETUP)
        await core.say("s", "weather in Oslo please")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = first_call(rec)
        await core.fake.drop_all()
        await rec.wait(lambda r: r.of("session.tool_call_lost"))
        with pytest.raises(ToolCallLost) as lost:
            await core.registry.send("s", respond(call, {"temp": "-4C"}))
        as_text = lost.value.data["as_text"]
        assert as_text["clientContent"]["turnComplete"] is True
        await core.registry.send("s", as_text)
        await rec.wait(lambda r: any('"-4C"' in t for t in conversation_turns(core.fake)[-1]))
        text = next(t for t in conversation_turns(core.fake)[-1] if '"-4C"' in t)
        assert call["id"] in text and "get_weather" in text
        assert "failed" not in rec.statuses()
