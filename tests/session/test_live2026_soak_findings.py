"""Issue #10, found by the chaos soak's extended-thinking form (tests/soak, form "3.8-extended"):
turns duplicated on a reconnect after a NON_BLOCKING call kept the interaction IN_PROGRESS.

On extended thinking a pending NON_BLOCKING call keeps ``interactionStatus`` at IN_PROGRESS, so
the interaction of the turn that made the call has no IDLE of its own when

- its call is answered ``SILENT`` (context only: the model says nothing, so no IDLE comes), or
- the user speaks while the call runs (the model answers, still IN_PROGRESS; one IDLE later
  ends both turns' interactions).

The replay buffer counts one interaction end per eliciting message, so it fell one short: every
later handle was taken to cover one turn fewer than it did, and the next reconnect replayed a
turn the resumed conversation already held (a duplicated turn). Each test checks the fake's own
record of the conversation after a drop at the first quiet point.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from session_harness import Core, Recorder, conversation_turns, make_config, open_core

from geminid.daemon.config import UpstreamConfig
from geminid.daemon.fake import FakeOptions
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.protocol import live

#: Extended thinking with one function whose declaration names no behavior (NON_BLOCKING, the
#: only kind the model takes).
EXT_TOOL_SETUP = live.setup(
    "gemini-3.8-live-extended-thinking",
    response_modalities=["AUDIO"],
    output_audio_transcription=True,
    generation_config={"thinkingConfig": {"thinkingLevel": "LOW"}},
    tools=[{"functionDeclarations": [{"name": "get_time", "description": "time in a city"}]}],
)["setup"]
#: gemini-3.8-live (audio only), the same function: NON_BLOCKING, the 3.8 default.
PLAIN_TOOL_SETUP = live.setup(
    "gemini-3.8-live",
    response_modalities=["AUDIO"],
    output_audio_transcription=True,
    tools=[{"functionDeclarations": [{"name": "get_time", "description": "time in a city"}]}],
)["setup"]


def spoken(rec: Recorder) -> str:
    return "".join(
        ((m.get("serverContent") or {}).get("outputTranscription") or {}).get("text", "") for m in rec.messages()
    )


def statuses(rec: Recorder) -> list[str]:
    return [
        str(m["serverContent"].get("interactionStatus"))
        for m in rec.messages()
        if (m.get("serverContent") or {}).get("turnComplete")
    ]


def respond(call: dict[str, Any], result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return live.tool_response([{**live.function_response(call["id"], call["name"], result), **extra}])


async def _call(core: Core, rec: Recorder, text: str) -> dict[str, Any]:
    """Say ``text``, which makes the model call get_time; wait for the call and its filler."""
    await core.say("s", text)
    await rec.wait(lambda r: any("toolCall" in m for m in r.messages()) and "IN_PROGRESS" in statuses(r))
    return next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]


async def _drop_at_the_quiet_point(core: Core, rec: Recorder) -> None:
    """Wait until the daemon holds the handle the fake issued at IDLE, then drop the connection
    and wait for the resumed one to be live (and to have replayed what the daemon kept)."""
    await rec.wait(lambda r: statuses(r)[-1:] == ["IDLE"])
    conn = core.fake.accepted[-1]
    await rec.wait(lambda r: bool(conn.handles) and core.actor().core.handle == conn.handles[-1])
    await core.fake.drop_all()
    await rec.wait(lambda r: r.statuses().count("live") >= 2)
    await rec.wait(lambda r: core.actor().buffer.unsent == 0)
    # One more turn, answered on the resumed connection: everything replayed has been heard.
    await core.say("s", "bye")
    await rec.wait(lambda r: 'heard "bye"' in spoken(r))


def _bare_idles(core: Core) -> int:
    """Bare ``turnComplete`` + IDLE frames the fake sent (no reply, no interruption before)."""
    return sum(
        1
        for rec in core.fake.accepted
        for m in rec.sent
        if (m.get("serverContent") or {}).get("interactionStatus") == "IDLE"
        and (m.get("usageMetadata") or {}).get("responseTokenCount") == 0
    )


@pytest.mark.parametrize("idle_after_silent", [False, True])
async def test_silent_response_ends_the_interaction_the_call_kept_open(state_dir, idle_after_silent):
    # Both UNCONFIRMED behaviours: after the SILENT response nothing comes, or a bare IDLE does.
    opts = FakeOptions(reply_pace=0.005, idle_after_silent=idle_after_silent)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Bern?")
        await core.registry.send("s", respond(call, {"time": "09:00"}, scheduling="SILENT"))
        if idle_after_silent:
            await rec.wait(lambda r: statuses(r)[-1] == "IDLE")
        assert _bare_idles(core) == int(idle_after_silent)
        await core.say("s", "hello")
        await rec.wait(lambda r: 'heard "hello"' in spoken(r))
        await _drop_at_the_quiet_point(core, rec)
        assert conversation_turns(core.fake) == [["get_time in Bern?", "hello", "bye"]], conversation_turns(core.fake)
        assert rec.statuses().count("live") == 2 and not rec.of("session.context_lost")


async def test_user_speaking_while_a_call_runs_is_not_replayed(state_dir):
    async with open_core(state_dir, fake_options=FakeOptions(reply_pace=0.005)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Oslo?")
        await core.say("s", "and the news?")
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r))
        await rec.wait(lambda r: statuses(r)[-1] == "IN_PROGRESS")  # the answer: the call still runs
        await core.registry.send("s", respond(call, {"time": "10:00"}))  # WHEN_IDLE: spoken now
        await rec.wait(lambda r: 'get_time returned {"time":"10:00"}' in spoken(r))
        await _drop_at_the_quiet_point(core, rec)
        assert conversation_turns(core.fake) == [["get_time in Oslo?", "and the news?", "bye"]], conversation_turns(core.fake)
        assert rec.statuses().count("live") == 2 and not rec.of("session.context_lost")


@pytest.mark.parametrize("idle_after_silent", [False, True])
async def test_silent_response_on_extended_thinking_then_a_minute_of_silence_is_no_stall(
    state_dir, autojump_clock, idle_after_silent
):
    # The interaction stayed IN_PROGRESS (the call ran) and the SILENT response brings no IDLE:
    # the daemon kept "expecting a reply" and declared a stall after stall_timeout.
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=0))
    opts = FakeOptions(reply_pace=0.005, idle_after_silent=idle_after_silent)
    async with open_core(state_dir, cfg=cfg, memory=True, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Bern?")
        await core.registry.send("s", respond(call, {"time": "09:00"}, scheduling="SILENT"))
        await trio.sleep(60)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert len(core.fake.accepted) == 1 and rec.statuses().count("live") == 1
        await core.say("s", "thanks")
        await rec.wait(lambda r: 'heard "thanks"' in spoken(r))


# -- the same rules without a fake (the activity model is pure) --------------------------------


def _server(obj: dict[str, Any]) -> live.ServerMessage:
    msg = live.parse_server_frame(json.dumps(obj))
    assert msg is not None
    return msg


def _activity(model: str) -> Activity:
    buf = ReplayBuffer(max_bytes=100_000, staleness=1.0)
    tools = ToolCalls()
    tools.declare({"model": model, "tools": [{"functionDeclarations": [{"name": "get_time"}]}]})
    act = Activity(buf, tools, last_activity=0.0)
    buf.new_connection(0.0)
    act.connection_opened(0.0)
    return act


def _write(act: Activity, entry: Entry) -> None:
    act.buffer.append(entry)
    act.written(act.buffer.mark_sent(), 0.0)


def _turn(act: Activity, seq: int) -> None:
    message = live.client_content(f"t{seq}")
    _write(act, Entry(seq, Kind.TURN, message, live.encode(message), 0.0, True))


def _result(act: Activity, seq: int, call_id: str, **extra: Any) -> None:
    message = live.tool_response([{**live.function_response(call_id, "get_time", {"t": 1}), **extra}])
    responses = message["toolResponse"]["functionResponses"]
    act.tools.check_responses(responses, "models/gemini-3.8-live")
    owed, silent = act.tools.responded(responses)
    _write(act, Entry(seq, Kind.TOOL_RESPONSE, message, live.encode(message), 0.0, False,
                      replies_owed=owed, silent=silent))


def _calls(act: Activity, call_id: str) -> None:
    act.tools.called([{"id": call_id, "name": "get_time"}])  # (SessionCore.tool_call's order)
    act.server_message(_server(live.tool_call([{"id": call_id, "name": "get_time", "args": {}}])))


def _say(act: Activity, *frames: dict[str, Any]) -> None:
    for frame in frames:
        act.server_message(_server(frame))


def _turn_that_calls(act: Activity, status: str) -> None:
    """Turn 1 makes the model call get_time (id c1), which ends its utterance with ``status``."""
    _turn(act, 1)
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"), live.turn_complete(None, status))


def test_a_result_written_while_the_model_talks_owes_its_own_reply():
    # 3.8 speaks a WHEN_IDLE result once idle, after the end of what it was saying: an IDLE of
    # its own. Not counted (it was written mid-interaction), that IDLE was taken as the answer to
    # the next turn, and a handle then trimmed a turn the server had not consumed: a lost turn.
    act = _activity("models/gemini-3.8-live")
    _turn(act, 1)
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"))
    _result(act, 2, "c1")  # while the filler streams
    _say(act, live.turn_complete(None, "IDLE"))  # the filler's end answers turn 1
    _say(act, live.server_text("get_time returned"))  # the result, spoken once idle
    _turn(act, 3)  # in flight: its reply has not begun
    _say(act, live.turn_complete(None, "IDLE"))  # the result's end, not turn 3's
    act.buffer.covered_by_handle(None)
    assert [e.seq for e in act.buffer] == [3]  # turn 3 is kept for a replay


def test_new_input_at_a_call_wait_pause_is_one_interaction_with_it():
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IN_PROGRESS")
    _turn(act, 2)  # at the pause: the server answers it within the same interaction
    _say(act, live.server_text("the answer to 2"), live.turn_complete(None, "IN_PROGRESS"))
    assert act.buffer.covered_by_handle(None) == 1  # turn 1 is over (the call still runs)
    _result(act, 3, "c1", scheduling="SILENT")
    _say(act, live.turn_complete(None, "IDLE"))  # one IDLE ends both
    assert not act.replies.awaiting()
    # Turn 2 is covered; the SILENT response after it only with the next answered message (a
    # NON_BLOCKING call's response may have been in flight when a handle was issued: replay.py).
    assert act.buffer.covered_by_handle(None) == 1 and [e.seq for e in act.buffer] == [3]
    _turn(act, 4)
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IDLE"))
    assert act.buffer.covered_by_handle(None) == 2 and len(act.buffer) == 0


def test_an_interrupted_pause_is_an_end_as_before():
    # Input that cuts the interaction (the server was still going) ends it with `interrupted`:
    # one end, counted once, whatever was written at the pause.
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IN_PROGRESS")
    _turn(act, 2)
    _say(act, live.interrupted(), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("the answer to 2"))
    assert act.buffer.covered_by_handle(None) == 1  # turn 1 only: turn 2's reply has not ended
    _say(act, live.turn_complete(None, "IDLE"))
    assert act.buffer.covered_by_handle(None) == 1


async def test_a_result_spoken_inside_the_interaction_then_a_minute_of_silence_is_no_stall(state_dir, autojump_clock):
    # The user spoke while the call ran; the answer ends IN_PROGRESS (the call still runs); the
    # result, written then, is spoken inside that interaction and one IDLE ends it all. No reply
    # is owed after that IDLE: a session that waits for one declares a stall and reconnects.
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=0))
    async with open_core(state_dir, cfg=cfg, memory=True, fake_options=FakeOptions(reply_pace=0.005)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Oslo?")
        await core.say("s", "and the news?")
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r))
        # the call's filler, the turn's filler and its answer: all IN_PROGRESS (the call runs)
        await rec.wait(lambda r: statuses(r) == ["IN_PROGRESS"] * 3)
        await core.registry.send("s", respond(call, {"time": "10:00"}))
        await rec.wait(lambda r: 'get_time returned {"time":"10:00"}' in spoken(r) and statuses(r)[-1] == "IDLE")
        await trio.sleep(60)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert len(core.fake.accepted) == 1 and rec.statuses().count("live") == 1


async def test_a_result_spoken_inside_the_interaction_does_not_shift_later_turns(state_dir):
    # As above; then the user speaks again. The result's reply, still owed, took the next
    # turn's end, so every later handle covered one turn fewer: the reconnect replayed a turn.
    async with open_core(state_dir, fake_options=FakeOptions(reply_pace=0.005)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Oslo?")
        await core.say("s", "and the news?")
        await rec.wait(lambda r: statuses(r) == ["IN_PROGRESS"] * 3)
        await core.registry.send("s", respond(call, {"time": "10:00"}))
        await rec.wait(lambda r: statuses(r)[-1:] == ["IDLE"])
        await core.say("s", "hello")
        await rec.wait(lambda r: 'heard "hello"' in spoken(r))
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Oslo?", "and the news?", "hello", "bye"]], turns


async def test_a_silent_result_at_a_pause_the_call_alone_holds_is_no_stall_and_no_shift(state_dir, autojump_clock):
    # The user spoke while the call ran; its answer ends IN_PROGRESS (the call still runs); the
    # SILENT response then brings nothing more. The session waited for an end that never came
    # (a stall after stall_timeout), and the next turn's end was counted for it (a duplicate).
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=0))
    async with open_core(state_dir, cfg=cfg, memory=True, fake_options=FakeOptions(reply_pace=0.005)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        call = await _call(core, rec, "get_time in Oslo?")
        await core.say("s", "and the news?")
        await rec.wait(lambda r: statuses(r) == ["IN_PROGRESS"] * 3)
        await core.registry.send("s", respond(call, {"time": "10:00"}, scheduling="SILENT"))
        await trio.sleep(60)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        assert len(core.fake.accepted) == 1
        await core.say("s", "hello")
        await rec.wait(lambda r: 'heard "hello"' in spoken(r))
        await _drop_at_the_quiet_point(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Oslo?", "and the news?", "hello", "bye"]], turns


async def test_a_handle_issued_while_a_call_runs_is_not_taken(state_dir):
    # A server may issue resumable handles while a NON_BLOCKING call runs (UNCONFIRMED; the
    # fake's resumable_pending_calls). Taken, such a handle trimmed a response still in flight
    # as consumed (the 3.8-audio soak: a response acked that never reached the server, no loss
    # reported), and a resume with it left the model with a call no connection would answer.
    # Not taken, a drop while the call runs replays the turn and the model calls again.
    opts = FakeOptions(reply_pace=0.005, resumable_pending_calls=True)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open(setup=PLAIN_TOOL_SETUP)
        await core.say("s", "get_time in Lima?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()) and statuses(r)[-1:] == ["IDLE"])
        conn = core.fake.accepted[-1]
        await rec.wait(lambda r: len(conn.handles) >= 2)  # one at setup, one with the call pending
        assert core.actor().core.handle != conn.handles[-1]
        await core.fake.drop_all()
        await rec.wait(lambda r: len([m for m in r.messages() if "toolCall" in m]) >= 2)
        again = [m for m in rec.messages() if "toolCall" in m][-1]["toolCall"]["functionCalls"][0]
        await core.registry.send("s", respond(again, {"time": "07:00"}))
        await rec.wait(lambda r: 'get_time returned {"time":"07:00"}' in spoken(r))
        assert conversation_turns(core.fake) == [["get_time in Lima?"]]


def test_a_result_at_the_pause_of_a_partial_reply_is_spoken_inside_it():
    # The chaos soak (3.8-extended, seed 12): the model speaks a willContinue partial result and
    # pauses IN_PROGRESS because the call still runs, as the interaction that made the call
    # does. The final result, written at that pause, is spoken inside the same interaction, and
    # the next turn interrupts it: one end for both results. Counted as one end for the partial
    # only, the final result's reply stayed owed; the next turn's end was taken for it, and the
    # reconnect replayed a turn the resumed conversation already held.
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IN_PROGRESS")
    _result(act, 2, "c1", scheduling="WHEN_IDLE", willContinue=True)  # a partial, at the pause
    _say(act, live.server_text("progress 1/2"), live.turn_complete(None, "IN_PROGRESS"))  # the call runs
    _result(act, 3, "c1")  # the final result, at that pause: spoken at once, inside
    _say(act, live.server_text("get_time returned"))
    _turn(act, 4)  # cuts it
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IDLE"))
    assert not act.replies.awaiting()
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0  # turn 4 is covered: a replay would duplicate it


def test_two_results_spoken_inside_one_interaction_are_both_forgiven():
    # The chaos soak (3.8-extended, seed 11): the user spoke while the call ran; its answer
    # paused IN_PROGRESS (the call still runs); a willContinue partial and then the final result
    # were written at that interaction's pauses, and both were spoken inside it before one IDLE.
    # Only the last result written at a pause was remembered, so only its reply was forgiven;
    # the partial's stayed owed, the next turn's end was counted for it, and the reconnect
    # replayed that turn. (Turn 2's reply has a filler, as every reply to input has on extended
    # thinking: the answer's pause, not the filler's, is the one the call holds.)
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IN_PROGRESS")
    _turn(act, 2)  # at the call's pause: answered inside the same interaction
    _say(act, live.server_text("turn 2: let me think"), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("the answer to 2"), live.turn_complete(None, "IN_PROGRESS"))
    _result(act, 3, "c1", scheduling="WHEN_IDLE", willContinue=True)
    _say(act, live.server_text("progress 1/2"), live.turn_complete(None, "IN_PROGRESS"))
    _result(act, 4, "c1")
    _say(act, live.server_text("get_time returned"), live.turn_complete(None, "IDLE"))
    _turn(act, 5)  # nothing started after the IDLE: both results were spoken inside
    _say(act, live.server_text("the answer to 5"), live.turn_complete(None, "IDLE"))
    assert not act.replies.awaiting()
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0  # turn 5 is covered: a replay would duplicate it


def test_a_result_kept_behind_an_interrupted_reply_is_spoken_after_the_next_turn():
    # The chaos soak (3.8-text, seed 202: "turn #240 appears twice"). A WHEN_IDLE result reaches
    # the server while the model answers turn 2, so it waits for the model to be idle; turn 4
    # interrupts that answer, the model answers turn 4 first and speaks the result only after
    # turn 4's IDLE, where the server issues a handle that covers turn 4. Matched in write order,
    # turn 4's IDLE was counted for the result: the handle was taken to cover turn 3 only, and the
    # resume replayed turn 4, which the resumed conversation already held.
    act = _activity("models/gemini-3.8-live")
    _turn_that_calls(act, "IDLE")
    _turn(act, 2)
    _say(act, live.server_text("the answer to 2"))
    _result(act, 3, "c1")  # WHEN_IDLE, while the model speaks: kept for later
    _turn(act, 4)
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))  # turn 2's answer, cut by 4
    assert act.replies.answering() == 4  # not the result: the server keeps it for an idle model
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IDLE"))
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0  # turn 4 (and the result before it) covered: no replay
    assert act.replies.answering() == 3  # the result's reply, due now
    _say(act, live.server_text("get_time returned"))
    _turn(act, 5)  # cuts the result's reply: that end is the result's
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))
    assert act.replies.answering() == 5
    _say(act, live.server_text("the answer to 5"), live.turn_complete(None, "IDLE"))
    assert not act.replies.awaiting()


def test_a_result_written_after_the_model_was_stopped_is_not_kept_for_later():
    # The other side of the rule above: input that stops the model without asking a reply
    # (a turn with turnComplete false) written before the result ended the reply before the
    # result came, so the result was spoken at once: the next reply is the result's.
    act = _activity("models/gemini-3.8-live")
    _turn_that_calls(act, "IDLE")
    _turn(act, 2)
    _say(act, live.server_text("the answer to 2"))
    message = live.client_content("and also", turn_complete=False)
    _write(act, Entry(3, Kind.TURN, message, live.encode(message), 0.0, False))
    _result(act, 4, "c1")
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))  # cut by the turn, before the result
    assert act.replies.answering() == 4


def test_a_natural_end_or_a_pause_makes_a_kept_result_due_again():
    # Kept behind an interrupted reply, the result is due at the next end the model reaches on
    # its own; the turnComplete that closes an interruption is none, nor is a filler's IN_PROGRESS
    # pause (the model is not idle there: tests/session/test_extended_duplicates.py).
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn_that_calls(act, "IDLE")
    _turn(act, 2)
    _say(act, live.server_text("the answer to 2"))
    _result(act, 3, "c1")
    _turn(act, 4)
    _say(act, live.interrupted(), live.turn_complete(None, "IN_PROGRESS"))
    assert act.replies.answering() == 4
    _say(act, live.server_text("let me think"), live.turn_complete(None, "IN_PROGRESS"))
    assert act.replies.answering() == 4
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IDLE"))
    assert act.replies.answering() == 3


def test_a_handle_covers_by_write_position_when_a_tool_response_went_ahead_of_a_held_turn():
    # The chaos soak (3.8-text, seed 210: "turn #193 appears twice"). During a replay a tool
    # response goes ahead of a held turn, so the buffer holds [1, 3, 2] in write order. A handle
    # issued after turn 2's reply covers all three; trimmed by `seq <= 2`, the trim stopped at
    # the tool response (seq 3), took it as a tool response at the head, and kept turn 2: the
    # next resume replayed it.
    buf = ReplayBuffer(max_bytes=100_000, staleness=1.0)
    tools = ToolCalls()
    tools.declare({"model": "models/gemini-3.8-live", "tools": [{"functionDeclarations": [{"name": "get_time"}]}]})
    act = Activity(buf, tools, last_activity=0.0)
    one = live.client_content("t1")
    buf.append(Entry(1, Kind.TURN, one, live.encode(one), 0.0, True))
    buf.new_connection(0.0, replaying=True)  # a backlog: turn 1
    act.connection_opened(0.0)

    def flush() -> None:
        while (entry := buf.next_to_write()) is not None:
            buf.mark_sent()
            act.written(entry, 0.0)

    flush()
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"))
    two = live.client_content("t2")
    buf.append(Entry(2, Kind.TURN, two, live.encode(two), 0.0, True))
    flush()  # held: the reply to the backlog's turn 1 is due
    response = live.tool_response([{**live.function_response("c1", "get_time", {"t": 1}), "scheduling": "SILENT"}])
    responses = response["toolResponse"]["functionResponses"]
    tools.check_responses(responses, "models/gemini-3.8-live")
    owed, silent = tools.responded(responses)
    buf.append(Entry(3, Kind.TOOL_RESPONSE, response, live.encode(response), 0.0, False,
                     replies_owed=owed, silent=silent))
    flush()  # the tool response goes ahead
    _say(act, live.turn_complete(None, "IDLE"))
    flush()  # now turn 2
    assert [e.seq for e in buf] == [1, 3, 2] and buf.cursor == 3
    _say(act, live.server_text("the answer to 2"), live.turn_complete(None, "IDLE"))
    buf.covered_by_handle(None)
    assert len(buf) == 0


def test_a_result_written_just_before_a_handle_issued_without_it_is_not_trimmed():
    # The chaos soak (3.8-audio, seeds 506 and 519: K1 "answered (acked) but the response never
    # reached the server and no loss was reported"). That form's fake issues handles while a
    # NON_BLOCKING call runs. The IDLE of the turn that made the call and the handle issued with
    # it were on their way when the client's INTERRUPT response was written; the IDLE closed the
    # round trip, so the handle was taken, and "tool responses at the head" trimmed the response
    # the server never had. The connection dropped: the response was gone, unreported.
    act = _activity("models/gemini-3.8-live")
    _turn(act, 1)
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"))
    _result(act, 2, "c1", scheduling="INTERRUPT")  # in flight when the handle is issued
    _say(act, live.turn_complete(None, "IDLE"))  # turn 1's end (it was emitted before)
    act.tools.reply_ended()  # (SessionCore.server_content at a boundary)
    assert not act.tools.open  # so SessionCore.resumption_update takes the handle
    act.buffer.covered_by_handle(None)
    assert [e.seq for e in act.buffer] == [2]  # kept: replayed or reported lost, never dropped
    _say(act, live.server_text("get_time returned"), live.turn_complete(None, "IDLE"))
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0  # its reply ended: now it is covered
