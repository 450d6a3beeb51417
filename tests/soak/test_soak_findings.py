"""Minimal reproductions of daemon bugs the chaos soak found (one test per finding).

Each uses the session harness of tests/session (in-process registry against the fake upstream)
and names the soak check that caught it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from geminid.daemon.fake import Fault
from geminid.daemon.fake.connection import FakeConnection
from geminid.daemon.states import State
from geminid.protocol import live

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "session"))
from session_harness import TOOL_SETUP, conversation_turns, open_core  # noqa: E402


async def test_cut_between_tool_reply_turn_complete_and_handle_does_not_fail_session(
    tmp_path, monkeypatch
):
    """Soak check S1 (seed 1, 200 turns): a session went ``failed`` with
    ``1007 Function response id ... matches no pending call``.

    The server cuts the connection after the turnComplete of the reply to a tool response but
    before the sessionResumptionUpdate that would have covered the turn and the response. The
    daemon cleared ``answered_tools`` at the turn boundary, so on the resume (with the handle from
    before the call) it did not count the call as lost and replayed the toolResponse for a call
    the restored server state never issued: 1007, which is fatal.
    """
    cut_once = []

    original = FakeConnection._maybe_resumable_update

    def cut_before_update(self):
        # The first time a tool reply has just ended: drop instead of issuing the handle.
        if not cut_once and self._counts["turns"] >= 1 and any(
            "toolResponse" in m for m in self.record.messages
        ):
            cut_once.append(self.record.id)
            self.queue_fault(Fault.drop())
            return
        original(self)

    monkeypatch.setattr(FakeConnection, "_maybe_resumable_update", cut_before_update)
    async with open_core(tmp_path / "state") as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "what is the weather in Oslo?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.registry.send(
            "s", live.tool_response([live.function_response(call["id"], call["name"], {"t": 1})])
        )
        # The turn is replayed, the model asks again with a new id; the client answers that one.
        with trio.fail_after(10):
            while core.actor().state is not State.FAILED and sum(
                "toolCall" in m for m in rec.messages()
            ) < 2:
                await trio.sleep(0.01)
        assert core.actor().state is not State.FAILED, core.actor().status_reason
        assert rec.of("session.tool_call_lost")[-1]["ids"] == [call["id"]]
        second = [m for m in rec.messages() if "toolCall" in m][-1]["toolCall"]["functionCalls"][0]
        await core.registry.send(
            "s", live.tool_response([live.function_response(second["id"], second["name"], {"t": 2})])
        )
        await rec.wait(lambda r: '{"t":2}' in r.texts())
        assert core.actor().state is State.LIVE
        assert conversation_turns(core.fake) == [["what is the weather in Oslo?"]]


async def test_turn_sent_while_an_older_handle_is_in_flight_is_not_lost(tmp_path):
    """Soak check A1 (seeds 1966439377 and others, ~1 run in 3 at 300 turns): an acknowledged
    audio chunk was never delivered although the next connection opened 0.03 s later.

    ``ReplayBuffer.covered_by_handle`` trims EVERYTHING written so far when no eliciting message
    is open. But a handle covers only what the server had consumed when it issued it; a
    message written after the last answered turn may still be in flight (or unread when the
    connection dies). Here a ``turnComplete: false`` turn (durable, acknowledged) is written
    while the handle issued after turn 1 is still on its way; the handle then trims it, the
    connection drops before the newer handle arrives, the resume restores the older state, and
    the acknowledged turn is gone. (The module docstring says such content "is kept and
    replayed"; the code drops it.)
    """
    from geminid.daemon.fake import FakeOptions, text_catalogue

    opts = FakeOptions(catalogue=text_catalogue(), latency=0.3, reply_pace=0.001, reply_chunks=1)
    async with open_core(tmp_path / "state", fake_options=opts) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await trio.sleep(0.35)  # the first handle (after setupComplete) has arrived too
        await core.say("s", "one")
        await trio.sleep(0.1)  # reply, turnComplete and handle H1 are on their way (latency)
        await core.registry.send("s", live.client_content("two, to be continued", turn_complete=False))
        await trio.sleep(0.25)  # H1 has arrived (and trimmed "two"); H2 (covering it) has not
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 2)
        await core.say("s", "three")
        await rec.wait(lambda r: "heard" in r.texts() and "three" in r.texts(), timeout=10)
        turns = conversation_turns(core.fake)
        assert turns == [["one", "two, to be continued", "three"]], turns


async def test_audio_written_while_an_older_handle_is_in_flight_is_replayed(tmp_path):
    """Soak check T2 (seeds 20, 21, 23, 24, 25 at 1,000 turns: "turn #N appears twice").

    Same root cause as the test above, with an eliciting message open: the handle issued after
    turn "one" arrives after the daemon wrote an audio stream and its audioStreamEnd; coverage
    trims everything before the first open eliciting message (``seq < first_open``), i.e. the
    audio, which the handle does not hold. The connection drops; the resume replays the bare
    audioStreamEnd, which elicits nothing. From then on every response is attributed to the
    message before the one it answers, so a handle never covers the last answered turn: the
    next resume replays "two", which the restored state already holds - a duplicate turn.
    """
    from geminid.daemon.fake import FakeOptions, text_catalogue

    opts = FakeOptions(catalogue=text_catalogue(), latency=0.3, reply_pace=0.001, reply_chunks=1)
    async with open_core(tmp_path / "state", fake_options=opts) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await trio.sleep(0.35)
        await core.say("s", "one")
        await trio.sleep(0.1)  # the reply to "one" and its handle H1 are on their way
        for _ in range(3):
            await core.registry.send("s", live.realtime_audio(bytes(960)))
        await core.registry.send("s", live.audio_stream_end())
        await trio.sleep(0.25)  # H1 arrived (and trimmed the audio); the audio reply has not
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 2)
        await trio.sleep(0.5)
        await core.say("s", "two")
        await rec.wait(lambda r: '"two"' in r.texts(), timeout=10)
        await trio.sleep(0.5)  # the handle after "two" has arrived
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 3)
        await core.say("s", "three")
        await rec.wait(lambda r: '"three"' in r.texts(), timeout=10)
        turns = conversation_turns(core.fake)
        assert turns == [["one", "(90 ms of audio)", "two", "three"]], turns


async def test_no_suspected_context_loss_after_a_fresh_start_that_never_completed_a_turn(tmp_path):
    """Soak report ``suspected_context_lost`` (seed 7: "prompt tokens fell from 6338 to 11 after
    resuming", on a session whose loss had already been announced).

    ``last_prompt_tokens`` survives a fresh start (context loss). If the fresh connection ends
    before any turn completes, the next connection resumes the NEW conversation and compares
    its small prompt with the OLD conversation's count: a false ``session.context_lost
    {suspected: true}``. Proposed fix (one line): ``self.last_prompt_tokens = None`` in
    ``SessionActor._drop_handle``.
    """
    async with open_core(tmp_path / "state") as core:
        rec = await core.open()
        await core.say("s", "a long first turn " * 40)
        await rec.wait(lambda r: r.turn_ends() == 1)
        core.fake.expire_handles()
        core.fake.script(Fault.none())  # the resume attempt: refused 1008 (stale handle)
        core.fake.script(Fault.drop(), after_setup=True)  # the fresh one: cut before any turn
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 3)
        await core.say("s", "hi")
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert len(rec.of("session.context_lost")) == 1, rec.of("session.context_lost")


async def test_bare_audio_stream_end_after_stale_audio_does_not_shift_replies(tmp_path):
    """Soak check T2 again (seed 31 with the replay fix proposed above applied).

    The audio of a stream is written into a connection that stalls; by the time the session
    reconnects it is older than ``audio_staleness`` and dropped, but its audioStreamEnd (not
    audio, never dropped) is replayed alone. With no audio pending it elicits no reply, yet the
    buffer counts it as awaiting one; every later reply is then attributed to the message before
    it, a handle never covers the last answered turn, and the next resume replays "two", which
    the restored state already holds. Proposed fix: in ``ReplayBuffer.new_connection``, drop an
    audioStreamEnd (and count it) whose audio since the previous eliciting message was all
    dropped as stale.
    """
    from session_harness import make_config

    from geminid.daemon.config import UpstreamConfig

    cfg = make_config(tmp_path / "state", upstream=UpstreamConfig(
        connect_timeout=5, setup_timeout=5, stall_timeout=1.0))
    async with open_core(tmp_path / "state", cfg=cfg) as core:
        rec = await core.open()
        await core.say("s", "one")
        await rec.wait(lambda r: r.turn_ends() == 1)
        await trio.sleep(0.1)
        await core.fake.stall_all()
        for _ in range(3):
            await core.registry.send("s", live.realtime_audio(bytes(960)))
        await core.registry.send("s", live.audio_stream_end())
        # The stall is noticed after ~1-1.5 s; the resume then finds the audio stale.
        await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=10)
        await core.say("s", "two")
        await rec.wait(lambda r: '"two"' in r.texts(), timeout=10)
        await trio.sleep(0.3)  # the handle after "two" has arrived
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 3)
        await core.say("s", "three")
        await rec.wait(lambda r: '"three"' in r.texts(), timeout=10)
        turns = conversation_turns(core.fake)
        assert turns == [["one", "two", "three"]], turns
