"""Issue #10: the daemon is correct under both values of the fake's last UNCONFIRMED options.

- ``idle_while_call_pending``: on extended thinking, does a pending NON_BLOCKING call keep the
  interaction IN_PROGRESS until its response (False), or does the filler end it with IDLE and
  the result come later in an interaction of its own (True)?
- ``decline``: proactive audio (3.8) may not answer an input at all; does the server then send
  a bare ``turnComplete`` + IDLE (``"turn_complete"``) or nothing (``"nothing"``)?

Each test checks the fake's own record of the conversation (the user turns its *current*
history holds, the responses each call received) after a drop at a quiet point: no turn lost,
none duplicated; new input never cancels a NON_BLOCKING call (K2); the tool response reaches the
model and the model speaks it; no stall while nothing is owed.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from session_harness import EXT_SETUP, Core, Recorder, conversation_turns, make_config, open_core
from test_live2026_soak_findings import (
    EXT_TOOL_SETUP,
    PLAIN_TOOL_SETUP,
    _activity,
    _drop_at_the_quiet_point,
    _result,
    _say,
    _turn,
    _turn_that_calls,
    respond,
    spoken,
    statuses,
)

from geminid.daemon.config import UpstreamConfig
from geminid.daemon.fake import FakeOptions
from geminid.daemon.session.activity import PROBE
from geminid.protocol import live

PLAIN_SETUP = live.setup("gemini-3.8-live", response_modalities=["AUDIO"], output_audio_transcription=True)["setup"]


def _fake_call(core: Core, call_id: str):
    return next(c for conv in core.fake.conversations.values() for c in conv.tool_calls if c.id == call_id)


def _idle_after(rec: Recorder, text: str, statuses: tuple[str, ...] = ("IDLE",)) -> bool:
    """An IDLE ``turnComplete`` came after the model said ``text`` (its interaction is over: the
    quiet point is after it, not at an IDLE before it); or one with any of ``statuses``."""
    msgs = rec.messages()
    said = ""
    for i, m in enumerate(msgs):
        said += ((m.get("serverContent") or {}).get("outputTranscription") or {}).get("text", "")
        if text in said:
            return any((n.get("serverContent") or {}).get("interactionStatus") in statuses for n in msgs[i + 1 :])
    return False


def _said(rec: Recorder, text: str) -> bool:
    """The utterance with ``text`` ended (IN_PROGRESS or IDLE): the next input does not cut it.
    (Input that cuts an answer at a call's pause is the README's known extended-thinking case.)"""
    return _idle_after(rec, text, ("IDLE", "IN_PROGRESS"))


def _stall_cfg(state_dir, keepalive: float = 0):
    return make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=keepalive))


async def _call(core: Core, rec: Recorder, text: str) -> dict[str, Any]:
    """Say ``text``, which makes the model call get_time; wait for the call and its filler's end
    (IN_PROGRESS while the call holds the interaction, IDLE otherwise)."""
    await core.say("s", text)
    await rec.wait(lambda r: any("toolCall" in m for m in r.messages()) and bool(statuses(r)))
    return next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]


# -- idle_while_call_pending -------------------------------------------------------------------


@pytest.mark.parametrize("idle_while_call_pending", [False, True])
async def test_call_answered_after_the_user_spoke_twice_then_a_drop(state_dir, idle_while_call_pending):
    opts = FakeOptions(reply_pace=0.005, idle_while_call_pending=idle_while_call_pending)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Oslo?")
        await core.say("s", "and the news?")
        await rec.wait(lambda r: _said(r, 'heard "and the news?"'))
        await core.say("s", "and the sports?")
        await rec.wait(lambda r: _said(r, 'heard "and the sports?"'))
        assert _fake_call(core, call["id"]).cancelled is False  # K2
        await core.registry.send("s", respond(call, {"time": "10:00"}))  # WHEN_IDLE
        await rec.wait(lambda r: _idle_after(r, 'turn 1: get_time returned {"time":"10:00"}'))
        assert _fake_call(core, call["id"]).responses == [{"time": "10:00"}]
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Oslo?", "and the news?", "and the sports?", "bye"]], turns
        assert rec.statuses().count("live") == 2 and not rec.of("session.context_lost")
        # the statuses the fake sent: the filler ended IN_PROGRESS (held) or IDLE (not held)
        first_status = statuses(rec)[0]
        assert first_status == ("IDLE" if idle_while_call_pending else "IN_PROGRESS")


@pytest.mark.parametrize("idle_while_call_pending", [False, True])
@pytest.mark.parametrize("scheduling", ["SILENT", "INTERRUPT"])
async def test_response_while_another_turn_is_answered_then_a_drop(state_dir, idle_while_call_pending, scheduling):
    opts = FakeOptions(reply_pace=0.005, idle_while_call_pending=idle_while_call_pending)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Rome?")
        await core.say("s", "tell me a story")
        await rec.wait(lambda r: "let me think" in spoken(r).split("calling get_time")[-1])  # its filler
        await core.registry.send("s", respond(call, {"time": "11:00"}, scheduling=scheduling))
        if scheduling == "INTERRUPT":
            await rec.wait(lambda r: _idle_after(r, 'get_time returned {"time":"11:00"}'))
        else:
            await rec.wait(lambda r: _idle_after(r, 'heard "tell me a story"'))
        await core.say("s", "hello")
        await rec.wait(lambda r: 'heard "hello"' in spoken(r))
        assert _fake_call(core, call["id"]).responses == [{"time": "11:00"}]
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Rome?", "tell me a story", "hello", "bye"]], turns
        assert rec.statuses().count("live") == 2 and not rec.of("session.context_lost")


@pytest.mark.parametrize("idle_while_call_pending", [False, True])
async def test_silent_response_then_a_minute_of_silence_is_no_stall(state_dir, autojump_clock, idle_while_call_pending):
    opts = FakeOptions(reply_pace=0.005, idle_while_call_pending=idle_while_call_pending)
    async with open_core(state_dir, cfg=_stall_cfg(state_dir), memory=True, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Bern?")
        await trio.sleep(60)  # the call runs for a minute: the server is rightly silent
        await core.registry.send("s", respond(call, {"time": "09:00"}, scheduling="SILENT"))
        await trio.sleep(60)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert len(core.fake.accepted) == 1 and rec.statuses().count("live") == 1
        await core.say("s", "thanks")
        await rec.wait(lambda r: 'heard "thanks"' in spoken(r))
        assert _fake_call(core, call["id"]).responses == [{"time": "09:00"}]


# -- decline (proactive audio answers nothing) -------------------------------------------------


@pytest.mark.parametrize("keepalive", [30, 0])
@pytest.mark.parametrize("decline", ["turn_complete", "nothing"])
@pytest.mark.parametrize("setup", [PLAIN_SETUP, EXT_SETUP], ids=["3.8", "extended"])
async def test_a_declined_input_then_a_minute_of_silence_is_no_stall(state_dir, autojump_clock, decline, setup, keepalive):
    # A probe ping tells a declined input from a stall (Activity.pong), keepalive or not.
    opts = FakeOptions(reply_pace=0.005, decline=decline)
    async with open_core(state_dir, cfg=_stall_cfg(state_dir, keepalive), memory=True, fake_options=opts) as core:
        rec = await core.open(setup=setup)
        await core.say("s", "psst, not for you")
        await trio.sleep(120)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert len(core.fake.accepted) == 1 and rec.statuses().count("live") == 1
        await core.say("s", "hello")
        await rec.wait(lambda r: 'heard "hello"; previous "psst, not for you"' in spoken(r))
        assert conversation_turns(core.fake) == [["psst, not for you", "hello"]]


@pytest.mark.parametrize("decline", ["turn_complete", "nothing"])
@pytest.mark.parametrize("setup", [PLAIN_SETUP, EXT_SETUP], ids=["3.8", "extended"])
async def test_a_declined_input_then_a_drop_loses_and_duplicates_nothing(state_dir, autojump_clock, decline, setup):
    # The declined input and the next one: two inputs, one reply. Left owed, the declined one
    # took the next one's reply, that turn stayed uncovered by every later handle, and the
    # reconnect replayed it (a duplicate). A bare turnComplete answers the declined input at
    # once; with nothing at all, the probe ping after stall_timeout settles it.
    opts = FakeOptions(reply_pace=0.005, decline=decline)
    async with open_core(state_dir, cfg=_stall_cfg(state_dir, keepalive=30), memory=True, fake_options=opts) as core:
        rec = await core.open(setup=setup)
        await core.say("s", "hi")
        await rec.wait(lambda r: _idle_after(r, 'heard "hi"'))
        await core.say("s", "psst, not for you")
        await core.say("s", "hello")
        await rec.wait(lambda r: _idle_after(r, 'heard "hello"'))
        more = []
        if decline == "nothing":
            await trio.sleep(60)  # the probe: declined; the next handle covers both inputs
            await core.say("s", "and now?")
            await rec.wait(lambda r: _idle_after(r, 'heard "and now?"'))
            more = ["and now?"]
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["hi", "psst, not for you", "hello", *more, "bye"]], turns


async def test_a_server_that_stops_answering_after_an_input_is_still_a_stall(state_dir, autojump_clock):
    # The probe must not hide a real stall: the fake stops reading and writing (no pong).
    from geminid.daemon.fake import Fault

    async with open_core(state_dir, cfg=_stall_cfg(state_dir, keepalive=30), memory=True,
                         fake_options=FakeOptions(reply_pace=0.005)) as core:
        core.fake.script(Fault.stall(), after_messages=1)  # right after it took "hello"
        rec = await core.open(setup=PLAIN_SETUP)
        await core.say("s", "hello")
        start = trio.current_time()
        await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=120)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 1
        assert trio.current_time() - start < 30 + 1  # at stall_timeout: the probe went out before


async def _declined_then_hello_then_a_drop(core: Core) -> list[list[str]]:
    """A declined input, then one the model answers, then a drop at the quiet point after it:
    the conversations the fake holds."""
    rec = await core.open(setup=PLAIN_SETUP)
    await core.say("s", "psst, not for you")
    await core.say("s", "hello")
    await rec.wait(lambda r: _idle_after(r, 'heard "hello"'))
    await _drop_at_the_quiet_point(core, rec)
    return conversation_turns(core.fake)


async def test_a_bare_turn_complete_declines_at_once(state_dir):
    # No wait needed: the bare turnComplete answers the declined input (a drop right after the
    # next reply replays nothing).
    opts = FakeOptions(reply_pace=0.005, decline="turn_complete")
    async with open_core(state_dir, fake_options=opts) as core:
        turns = await _declined_then_hello_then_a_drop(core)
        assert turns == [["psst, not for you", "hello", "bye"]], turns


async def test_a_declined_input_with_nothing_and_a_drop_before_the_probe_duplicates_but_loses_nothing(state_dir):
    # The known limitation (README): with nothing at all, the daemon cannot tell a declined input
    # from one whose reply is late until the probe, and the handle that comes after the probe
    # covers it; a drop before that replays the input that was answered last (kept uncovered,
    # the safe side). Nothing is lost.
    opts = FakeOptions(reply_pace=0.005, decline="nothing")
    async with open_core(state_dir, fake_options=opts) as core:
        turns = await _declined_then_hello_then_a_drop(core)
        assert turns in ([["psst, not for you", "hello", "bye"]], [["psst, not for you", "hello", "hello", "bye"]]), turns


async def test_a_declined_input_while_a_call_runs_keeps_the_call(state_dir):
    # K2 with a declined input: the call survives it, and its response is spoken.
    opts = FakeOptions(reply_pace=0.005, decline="turn_complete")
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open(setup=PLAIN_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Lima?")
        await core.say("s", "psst, not for you")
        await rec.wait(lambda r: statuses(r).count("IDLE") >= 2)
        await core.registry.send("s", respond(call, {"time": "07:00"}))
        await rec.wait(lambda r: _idle_after(r, 'get_time returned {"time":"07:00"}'))
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Lima?", "psst, not for you", "bye"]], turns
        assert _fake_call(core, call["id"]).responses == [{"time": "07:00"}]




# -- the rules without a fake (the activity model is pure) -------------------------------------


def test_the_turn_complete_after_an_interruption_answers_nothing_more():
    # The tail of an `interrupted` is a bare turnComplete too; it must not be taken for a
    # declined input (the reply to the input that cut the model is still to come).
    act = _activity("models/gemini-3.8-live")
    act.may_decline = True
    _turn(act, 1)
    _say(act, live.server_text("the answer to 1"))
    _turn(act, 2)  # cuts it
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))
    assert act.replies.awaiting_input_reply()  # turn 2's reply is still owed
    assert act.buffer.covered_by_handle(None) == 1
    _say(act, live.turn_complete(None, "IDLE"))  # a bare one now: turn 2 was declined
    assert not act.replies.awaiting()
    assert act.buffer.covered_by_handle(None) == 1 and len(act.buffer) == 0


def test_a_bare_turn_complete_is_no_decline_on_a_model_that_always_answers():
    act = _activity("models/gemini-2.5-flash-native-audio-preview-12-2025")
    _turn(act, 1)
    _say(act, live.turn_complete(None, None))
    assert act.replies.awaiting_input_reply()


def test_a_pong_declines_only_for_a_ping_written_after_the_input():
    act = _activity("models/gemini-3.8-live")
    act.may_decline = True
    _turn(act, 1)
    assert act.stall_at(30) == 25.0  # the probe goes out 5 s before the stall deadline
    assert act.overdue(25.0, 30) == PROBE and act.probe_at == 25.0
    assert act.stall_at(30) == 30.0  # no pong by then: a stall
    assert "while a reply was expected" in (act.overdue(30.0, 30) or "")
    assert not act.pong(0.0) and act.replies.awaiting()  # a ping from before the input: no proof
    act.probe_at = 25.0
    assert act.pong(25.0) and not act.replies.awaiting()
    assert act.stall_at(30) is None
    _turn(act, 2)
    assert act.stall_at(5) == 5.0 and act.overdue(5.0, 5) != PROBE  # too short a silence: a stall


def test_input_at_every_pause_of_an_interaction_a_call_holds_is_merged():
    # Extended thinking, the call runs: the user speaks at the call's pause, and again at the
    # pause after that answer (still IN_PROGRESS: the call holds it); the result ends it all.
    # After the first merge the second input's reply was not seen as merged: its turn stayed
    # owed, and a reconnect replayed it.
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IN_PROGRESS")
    _turn(act, 2)
    _say(act, live.server_text("let me think"), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("the answer to 2"), live.turn_complete(None, "IN_PROGRESS"))
    _turn(act, 3)
    _say(act, live.server_text("let me think"), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("the answer to 3"), live.turn_complete(None, "IN_PROGRESS"))
    _result(act, 4, "c1")
    _say(act, live.server_text("get_time returned"), live.turn_complete(None, "IDLE"))
    assert not act.replies.awaiting()
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0
