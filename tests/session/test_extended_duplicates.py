"""Issue #10, the chaos soak's 3.8-extended form: turns duplicated on a reconnect (0 lost).

On the Developer API the daemon learns what a resumption handle covers from the replies it has
seen (:class:`geminid.daemon.session.activity.Replies`). Each test here is one way the count fell
behind the server on extended thinking, found in a soak trace, so that a handle was taken to
cover one turn fewer than it did and the next resume replayed a turn the conversation held.
Each drives the fake over in-process streams under MockClock (exact timing) and checks the
fake's own record of the conversation after a drop.
"""

from __future__ import annotations

from typing import Any

import pytest
from session_harness import Core, Recorder, conversation_turns, make_config, open_core
from test_live2026_soak_findings import (
    EXT_TOOL_SETUP,
    _activity,
    _calls,
    _result,
    _say,
    _turn,
    spoken,
    statuses,
)

from geminid.daemon.config import UpstreamConfig
from geminid.daemon.fake import FakeOptions
from geminid.protocol import live


def _config(state_dir: Any) -> Any:
    return make_config(state_dir, upstream=UpstreamConfig(stall_timeout=30, keepalive_interval=0))


async def _wait_for_call(rec: Recorder) -> dict[str, Any]:
    await rec.wait(lambda r: any("toolCall" in m for m in r.messages()) and "IN_PROGRESS" in statuses(r))
    return next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]


async def _resume_on_the_latest_handle(core: Core, rec: Recorder) -> list[list[str]]:
    """Once the daemon holds the live connection's last handle: drop, resume, say bye; the
    conversation turns the fake recorded."""
    conn = core.fake.accepted[-1]
    await rec.wait(lambda r: bool(conn.handles) and core.actor().core.handle == conn.handles[-1])
    await _resume_and_say_bye(core, rec)
    return conversation_turns(core.fake)


async def _resume_and_say_bye(core: Core, rec: Recorder) -> None:
    await core.fake.drop_all()
    await rec.wait(lambda r: r.statuses().count("live") >= 2)
    await rec.wait(lambda r: core.actor().buffer.unsent == 0)
    await core.say("s", "bye")
    await rec.wait(lambda r: 'heard "bye"' in spoken(r))


@pytest.mark.parametrize("when_idle_at_pause", [False, True])
async def test_a_result_kept_for_an_idle_model_is_not_due_at_a_fillers_pause(
    state_dir, autojump_clock, when_idle_at_pause
):
    # The chaos soak (3.8-extended, seed 61004, s2 turn #30; the lead from seed 601). A WHEN_IDLE
    # result reaches the server while the model speaks, so it waits for the model to be idle; the
    # next turn interrupts that reply, and the server answers the turn first: its filler ends
    # IN_PROGRESS (not idle: the result still waits), its answer ends IDLE, and only then is the
    # result spoken. The filler's pause made the result due again before the turn, so the turn's
    # IDLE was counted for the result, the handle issued there was taken to cover the result only,
    # and a drop while the result was spoken replayed the turn. UNCONFIRMED whether the server
    # keeps the result through the filler's pause; where it speaks it there (when_idle_at_pause)
    # the turn's IDLE is counted for the result (made due at the result's own pause) and the
    # turn is replayed: a duplicate, the safe side, never a loss.
    opts = FakeOptions(reply_pace=0.01, when_idle_at_pause=when_idle_at_pause)
    async with open_core(state_dir, cfg=_config(state_dir), memory=True, fake_options=opts) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        call = await _wait_for_call(rec)
        await core.say("s", "tell me a story")  # at the call's pause: answered inside it
        await rec.wait(lambda r: "turn 2: let me think." in spoken(r))
        # The result, while the model speaks (kept for later), then a turn that cuts the reply.
        await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {"t": "10:00"})]))
        await core.say("s", "and the news?")
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        conn = core.fake.accepted[-1]
        # The handle issued at the turn's IDLE (the result is spoken next): the daemon takes it.
        await rec.wait(lambda r: bool(conn.handles) and core.actor().core.handle == conn.handles[-1])
        said = spoken(rec)
        if when_idle_at_pause:  # between the turn's filler and its answer
            assert said.index("turn 3: let me think.") < said.index('returned {"t":"10:00"}') < said.index(
                'heard "and the news?"')
        else:
            assert 'get_time returned {"t":"10:00"}' not in said
        await _resume_and_say_bye(core, rec)
        turns = conversation_turns(core.fake)
        wanted = ["get_time in Oslo?", "tell me a story", "and the news?", "bye"]
        if when_idle_at_pause:  # nothing lost, in order (a duplicate allowed)
            assert len(turns) == 1 and list(dict.fromkeys(turns[0])) == wanted, turns
        else:
            assert turns == [wanted], turns


def test_a_fillers_pause_leaves_a_kept_result_kept():
    # The same, on the pure activity model: the turn's filler pause (IN_PROGRESS, no call
    # pending, the interaction made none) is not a point where the server starts a kept result.
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn(act, 1)
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"), live.turn_complete(None, "IN_PROGRESS"))
    _turn(act, 2)  # at the call's pause
    _say(act, live.server_text("turn 2: let me think"))
    _result(act, 3, "c1")  # WHEN_IDLE while the model speaks: kept
    _turn(act, 4)
    _say(act, live.interrupted(), live.turn_complete(None, "IDLE"))  # turn 2's reply, cut by 4
    act.tools.reply_ended()  # (SessionCore.server_content at a boundary)
    assert act.replies.answering() == 4
    _say(act, live.server_text("turn 4: let me think"), live.turn_complete(None, "IN_PROGRESS"))
    assert act.replies.answering() == 4  # the filler's pause: the result still waits
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IDLE"))
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0  # turn 4 (and the result before it) covered: no replay
    assert act.replies.answering() == 3  # the result's reply, due now


async def test_a_turn_after_an_answer_a_running_call_holds_is_answered_inside_it(state_dir, autojump_clock):
    # The chaos soak (3.8-extended, seeds 80111 and 80112). A turn interrupts the filler of the
    # turn that called get_time, so the call runs on while no interaction of its own waits for
    # it; the interrupting turn's answer ends IN_PROGRESS (the call holds it). The next turn,
    # written at that pause, is answered inside the same interaction (no `interrupted`, no IDLE
    # for the answer before it): with no end counted for that answer, the result's IDLE was
    # counted for it, the handle issued there was taken to cover one turn fewer, and the resume
    # replayed the last turn.
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Quito?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.say("s", "and the news?")  # cuts the call's filler; the call runs on
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r) and len(statuses(r)) == 3)
        assert statuses(rec) == ["IN_PROGRESS"] * 3 and rec.messages()[1].get("serverContent", {}).get("interrupted")
        await core.say("s", "and sport?")  # at the answer's pause, which the call holds
        await rec.wait(lambda r: 'heard "and sport?"' in spoken(r) and len(statuses(r)) == 5)
        assert statuses(rec) == ["IN_PROGRESS"] * 5  # answered inside: no interruption, no IDLE
        await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {"t": "8:00"})]))
        await rec.wait(lambda r: 'get_time returned {"t":"8:00"}' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        turns = await _resume_on_the_latest_handle(core, rec)
        assert turns == [["get_time in Quito?", "and the news?", "and sport?", "bye"]], turns


def _calls_made(rec: Recorder) -> list[dict[str, Any]]:
    return [c for m in rec.messages() if "toolCall" in m for c in m["toolCall"]["functionCalls"]]


async def _respond(core: Core, call: dict[str, Any], result: dict[str, Any]) -> None:
    await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], result)]))


async def test_a_kept_result_spoken_at_a_calls_pause_ends_the_interaction_that_waited(state_dir, autojump_clock):
    # The chaos soak (3.8-extended, seed 80111, s0 turn #163). Three turns that each call
    # get_time, each cutting the filler of the one before. The first call's result reaches the
    # server while the second call's filler is spoken, so it waits for an idle model; the third
    # turn cuts that filler, and once the third call's filler has ended (IN_PROGRESS: the calls
    # run) the server speaks the kept result, then the others as they come, one IDLE at the end.
    # The kept result, due again at that pause, went before the third turn, so the end of the
    # third turn's interaction (a result spoken at its pause) was not counted: every later
    # handle covered one message fewer, and the resume replayed a turn.
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        await rec.wait(lambda r: len(_calls_made(r)) == 1)
        await core.say("s", "get_time in Rome?")  # cuts the first call's filler
        await rec.wait(lambda r: len(_calls_made(r)) == 2)
        first, second = _calls_made(rec)
        await _respond(core, first, {"t": "1"})  # while the second call's filler is spoken: kept
        await core.say("s", "get_time in Lima?")  # cuts that filler
        await rec.wait(lambda r: len(_calls_made(r)) == 3 and 'get_time returned {"t":"1"}' in spoken(r)
                       and statuses(r)[-1:] == ["IN_PROGRESS"])
        await _respond(core, second, {"t": "2"})
        await rec.wait(lambda r: 'get_time returned {"t":"2"}' in spoken(r) and statuses(r)[-1:] == ["IN_PROGRESS"])
        await _respond(core, _calls_made(rec)[2], {"t": "3"})
        await rec.wait(lambda r: 'get_time returned {"t":"3"}' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        assert "IDLE" not in statuses(rec)[:-1]  # one interaction end for all of it
        turns = await _resume_on_the_latest_handle(core, rec)
        assert turns == [["get_time in Oslo?", "get_time in Rome?", "get_time in Lima?", "bye"]], turns


async def test_a_result_written_just_before_the_pause_a_call_holds_ends_the_answer_it_follows(
    state_dir, autojump_clock
):
    # The chaos soak (3.8-extended, seed 80122, s0 turn #209: the daemon some 50 ms behind the
    # server). The call of the first turn runs on (a second turn cut its filler); the result is
    # written as the second turn's answer ends, and the server reads it at the pause that ends
    # (IN_PROGRESS: the call holds it), so it is spoken inside the same interaction. Written
    # before the pause reached the daemon, it did not mark the interaction as one that answers
    # what comes at its pause, so the answer's end was not counted: every later handle covered
    # one message fewer, and the resume replayed the next turn. (``latency``: the server's
    # frames reach the daemon 20 ms after they leave, as under load.)
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01, latency=0.02)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        await rec.wait(lambda r: len(_calls_made(r)) == 1)
        await core.say("s", "and the news?")  # cuts the call's filler; the call runs on
        await rec.wait(lambda r: 'previous "get_time in Oslo?".' in spoken(r))  # the answer, all of it
        await _respond(core, _calls_made(rec)[0], {"t": "9:00"})  # the pause is on its way
        await rec.wait(lambda r: 'returned {"t":"9:00"}' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        assert statuses(rec) == ["IN_PROGRESS"] * 3 + ["IDLE"]  # spoken inside: one end for both
        await core.say("s", "and then?")
        await rec.wait(lambda r: 'heard "and then?"' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        turns = await _resume_on_the_latest_handle(core, rec)
        assert turns == [["get_time in Oslo?", "and the news?", "and then?", "bye"]], turns


async def test_a_reply_begun_at_a_calls_pause_and_cut_before_it_spoke_is_an_end_of_its_own(state_dir, autojump_clock):
    # The chaos soak (3.8-extended, seeds 80142 and 80143, and 80112 before): at the pause of the
    # turn that called get_time (IN_PROGRESS: the call runs), the result arrives and the server
    # starts speaking it; a turn written right after it cuts that reply before a word of it came
    # (`interrupted`, IDLE). The `interrupted` was counted for the interaction that waited for
    # the call only, which had ended at its pause (the server was not generating there), so the
    # result's reply stayed owed, the turn's IDLE was counted for it, and every later handle
    # covered one message fewer: the resume replayed the last turn.
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        call = await _wait_for_call(rec)
        await _respond(core, call, {"t": "7:00"})  # spoken at once...
        await core.say("s", "never mind")  # ...and cut before it speaks
        await rec.wait(lambda r: 'heard "never mind"' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        assert 'returned {"t":"7:00"}' not in spoken(rec)
        assert any((m.get("serverContent") or {}).get("interrupted") for m in rec.messages())
        await core.say("s", "and then?")
        await rec.wait(lambda r: 'heard "and then?"' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        turns = await _resume_on_the_latest_handle(core, rec)
        assert turns == [["get_time in Oslo?", "never mind", "and then?", "bye"]], turns


async def test_a_kept_result_spoken_at_the_pause_of_a_later_call_ends_that_calls_interaction(
    state_dir, autojump_clock
):
    # The chaos soak (3.8-extended, seed 80152, s0 turn #105). The first call's result reaches the
    # server while the model answers another turn, so it is kept; a third turn cuts that answer
    # and makes a second call; at the pause of that call's filler (IN_PROGRESS) the server speaks
    # the kept result, and a SILENT response then closes the second call. The result, due again
    # at that pause, took the end counted for the call's interaction when the SILENT response came,
    # so the third turn stayed owed: every later handle covered one turn fewer.
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        first = await _wait_for_call(rec)
        await core.say("s", "and the news?")  # at the call's pause
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r))  # its answer is spoken...
        await _respond(core, first, {"t": "1"})  # ...so the result is kept
        await core.say("s", "get_time in Rome?")  # cuts that answer, calls again
        await rec.wait(lambda r: len(_calls_made(r)) == 2 and 'returned {"t":"1"}' in spoken(r)
                       and statuses(r)[-1:] == ["IN_PROGRESS"])
        await core.registry.send("s", live.tool_response(
            [{**live.function_response(_calls_made(rec)[1]["id"], "get_time", {"t": "2"}), "scheduling": "SILENT"}]))
        await core.say("s", "and then?")
        await rec.wait(lambda r: 'heard "and then?"' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        turns = await _resume_on_the_latest_handle(core, rec)
        assert turns == [["get_time in Oslo?", "and the news?", "get_time in Rome?", "and then?", "bye"]], turns


async def test_a_result_kept_through_a_fillers_pause_while_the_call_runs_on(state_dir, autojump_clock):
    # The chaos soak (3.8-extended, seed 80153, s2 turn #108): as in the first test, but the
    # kept result is a willContinue partial, so the call still runs at the next turn's filler.
    # That pause still does not start the kept result (the model is not idle); the final result
    # comes while the answer is spoken, so the answer ends IDLE and both results follow it.
    async with open_core(state_dir, cfg=_config(state_dir), memory=True,
                         fake_options=FakeOptions(reply_pace=0.01)) as core:
        rec = await core.open(setup=EXT_TOOL_SETUP)
        await core.say("s", "get_time in Oslo?")
        call = await _wait_for_call(rec)
        await core.say("s", "tell me a story")  # at the call's pause: answered inside it
        await rec.wait(lambda r: 'heard "tell me a story"' in spoken(r))  # its answer is spoken...
        partial = live.function_response(call["id"], call["name"], {"p": "1/2"})
        await core.registry.send("s", live.tool_response([{**partial, "willContinue": True}]))  # ...kept
        await core.say("s", "and the news?")  # cuts the answer
        await rec.wait(lambda r: 'heard "and the news?"' in spoken(r))
        await _respond(core, call, {"p": "2/2"})  # kept too: the answer is being spoken
        await rec.wait(lambda r: 'previous "tell me a story".' in spoken(r) and statuses(r)[-1:] == ["IDLE"])
        conn = core.fake.accepted[-1]
        await rec.wait(lambda r: bool(conn.handles) and core.actor().core.handle == conn.handles[-1])
        assert 'returned {"p":"1/2"}' not in spoken(rec)  # the results come after the answer
        await _resume_and_say_bye(core, rec)
        turns = conversation_turns(core.fake)
        assert turns == [["get_time in Oslo?", "tell me a story", "and the news?", "bye"]], turns


def test_the_interaction_a_kept_result_ends_at_a_calls_pause_is_the_one_counted():
    # The pure model: the kept partial, made due at the answer's pause (the call holds it), is
    # spoken there; the end counted is the answer's interaction's, not the partial's (matched to
    # the partial, the reply that followed was taken for the answer's, so its pause looked like
    # a filler's and the final result written there stayed owed).
    act = _activity("models/gemini-3.8-live-extended-thinking")
    _turn(act, 1)
    _calls(act, "c1")
    _say(act, live.server_text("calling get_time"), live.turn_complete(None, "IN_PROGRESS"))
    _turn(act, 2)  # at the call's pause
    _say(act, live.server_text("turn 2: let me think"), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("the answer to 2"))
    _result(act, 3, "c1", scheduling="WHEN_IDLE", willContinue=True)  # while it speaks: kept
    _turn(act, 4)
    _say(act, live.interrupted(), live.turn_complete(None, "IN_PROGRESS"))  # cuts it (the call runs)
    act.tools.reply_ended()  # (SessionCore.server_content at a boundary)
    _say(act, live.server_text("turn 4: let me think"), live.turn_complete(None, "IN_PROGRESS"))
    assert act.replies.answering() == 4
    _say(act, live.server_text("the answer to 4"), live.turn_complete(None, "IN_PROGRESS"))
    _say(act, live.server_text("progress 1/2"))  # the kept partial, at the call's pause
    assert act.replies.answering() == 3 and act.open_for == 3
    _say(act, live.turn_complete(None, "IN_PROGRESS"))
    _result(act, 5, "c1")  # the final result, at that pause: spoken inside
    _say(act, live.server_text("get_time returned"), live.turn_complete(None, "IDLE"))
    assert not act.replies.awaiting()
    act.buffer.covered_by_handle(None)
    assert len(act.buffer) == 0
