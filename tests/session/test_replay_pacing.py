"""Replay one reply at a time (issue #11 point 4), and no answered turn asked again on a fresh start.

After a resume, the unanswered turns of the backlog used to be written back to back: the server
(the fake, as the real service) stops a reply when new input arrives, so every reply but the last
ended ``interrupted`` with an empty ``turnComplete``. Now each backlog turn waits for the reply
to the one before it, and client input arriving meanwhile queues behind the backlog in order
(README, "Reconnection policy": Replay). Each test checks what the user got (the session's
replies, turn by turn) and what the server holds (the fake's record of the conversation).
"""

from __future__ import annotations

import json
import os

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from session_harness import TOOL_SETUP, Recorder, conversation_turns, make_config, open_core

from geminid.daemon.config import SessionConfig
from geminid.daemon.fake import FakeOptions, text_catalogue
from geminid.daemon.fake.connection import FakeConnection
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.protocol import live
from geminid.protocol.errors import ToolCallLost


def entry(seq: int, kind: Kind, message: dict, elicits: bool = False, owed: int = 0) -> Entry:
    """A replay-buffer entry for the pure tests (``owed``: replies a tool response owes)."""
    return Entry(seq, kind, message, json.dumps(message), 0.0, elicits, replies_owed=owed)


def _content(m: dict) -> dict:
    return m.get("serverContent", {})


def replies_since(rec: Recorder, start: int) -> list[str]:
    """The text of each reply ended (``turnComplete``) among the session.message events from
    index ``start``: one string per reply, "" for a reply that said nothing (an interruption)."""
    out: list[str] = []
    text: list[str] = []
    for m in rec.messages()[start:]:
        body = _content(m)
        for part in body.get("modelTurn", {}).get("parts", []):
            text.append(part.get("text", ""))
        if body.get("turnComplete"):
            out.append("".join(text))
            text = []
    return out


def text_since(rec: Recorder, start: int) -> str:
    return "".join(replies_since(rec, start)) + "".join(
        p.get("text", "") for m in rec.messages()[start:] for p in _content(m).get("modelTurn", {}).get("parts", [])
    )


def interruptions(rec: Recorder, start: int = 0) -> int:
    return sum(1 for m in rec.messages()[start:] if _content(m).get("interrupted"))


def full_reply(n: int, heard: str, previous: str | None) -> str:
    """The fake's whole reply to the user's ``n``-th turn (daemon/fake/model.py compose_reply)."""
    text = f"turn {n}: heard {json.dumps(heard)}"
    return text + (f"; previous {json.dumps(previous)}" if previous else "") + "."


def no_more_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake issues no further resumable handle (a server slow to send its update): what is
    answered from now on stays uncovered in the replay buffer."""
    monkeypatch.setattr(FakeConnection, "_maybe_resumable_update", lambda self: None)


def lives(rec: Recorder) -> int:
    return rec.statuses().count("live")


async def _drop_with_backlog(core, rec: Recorder, first: str, more: list[str]) -> int:
    """``first`` is mid-reply when the link drops; ``more`` are sent while it is down. Returns
    the index of the first session.message event after the drop."""
    await core.say("s", first)
    await rec.wait(lambda r: "turn 1" in r.texts())  # mid-reply: a first chunk arrived
    core.fake.refuse_next(2, status=503)  # the link stays down for two dials
    start = len(rec.messages())
    await core.fake.drop_all()
    await rec.wait(lambda r: r.statuses()[-1] == "backoff")
    for text in more:
        await core.say("s", text)
    return start


@pytest.mark.parametrize("n", [2, 3])
async def test_backlog_turns_each_get_a_full_reply_after_a_resume(state_dir, n):
    # Over loopback. The unanswered turns at the drop (one mid-reply, the others queued while
    # the link was down) are replayed one reply at a time: none interrupted, none duplicated.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=4)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open()
        turns = [f"q{i}" for i in range(n)]
        start = await _drop_with_backlog(core, rec, turns[0], turns[1:])
        await rec.wait(lambda r: len(replies_since(r, start)) >= n, timeout=30)
        await trio.sleep(0.2)  # (nothing more may come: no duplicate)
        assert interruptions(rec) == 0
        expected = [full_reply(i + 1, t, turns[i - 1] if i else None) for i, t in enumerate(turns)]
        assert replies_since(rec, start) == expected
        assert conversation_turns(core.fake)[-1] == turns
        assert [p for p in rec.of("session.status") if p["status"] == "live"][-1]["context"] == "restored"


async def test_input_during_a_replay_queues_behind_it(state_dir, autojump_clock):
    # MockClock (in-memory streams): a turn sent while the replayed turns are being answered
    # waits for the last backlog reply, then is answered in full.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.5, reply_chunks=4)
    async with open_core(state_dir, fake_options=opts, memory=True) as core:
        rec = await core.open()
        start = await _drop_with_backlog(core, rec, "a", ["b"])
        await rec.wait(lambda r: lives(r) == 2, timeout=120)
        await rec.wait(lambda r: "turn 1" in text_since(r, start), timeout=120)  # the replayed reply began
        await core.say("s", "c")  # mid-way through the replayed reply to "a"
        await rec.wait(lambda r: len(replies_since(r, start)) >= 3, timeout=120)
        await trio.sleep(5)
        assert interruptions(rec) == 0
        assert replies_since(rec, start) == [full_reply(1, "a", None), full_reply(2, "b", "a"), full_reply(3, "c", "b")]
        assert conversation_turns(core.fake)[-1] == ["a", "b", "c"]


async def test_new_input_after_the_replay_still_interrupts(state_dir, autojump_clock):
    # Pacing ends with the backlog: a turn sent mid-reply afterwards interrupts, as the client asked.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.5, reply_chunks=4)
    async with open_core(state_dir, fake_options=opts, memory=True) as core:
        rec = await core.open()
        start = await _drop_with_backlog(core, rec, "a", [])
        await rec.wait(lambda r: len(replies_since(r, start)) >= 1, timeout=120)
        await core.say("s", "b")
        await rec.wait(lambda r: "turn 2" in r.texts(), timeout=120)
        await core.say("s", "c")  # interrupts the reply to "b"
        await rec.wait(lambda r: len(replies_since(r, start)) >= 3, timeout=120)
        assert interruptions(rec) == 1
        assert conversation_turns(core.fake)[-1] == ["a", "b", "c"]


async def test_a_blocking_call_of_a_replayed_turn_lifts_the_hold(state_dir, autojump_clock):
    # The replayed turn makes the model call a BLOCKING tool: the server now waits for the
    # client, so the turn queued behind it goes on (held, it could wait for good on a client
    # that answers no call). It interrupts the call, as it would on a live connection, and a
    # response to that call is refused locally (ToolCallLost), never sent to cost a 1007.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.5, reply_chunks=4)
    async with open_core(state_dir, fake_options=opts, memory=True) as core:
        rec = await core.open(setup=TOOL_SETUP)
        start = await _drop_with_backlog(core, rec, "hello", ["weather in Paris?", "thanks"])
        await rec.wait(lambda r: any("toolCallCancellation" in m for m in r.messages()[start:]), timeout=120)
        call = next(m for m in rec.messages()[start:] if "toolCall" in m)["toolCall"]["functionCalls"][0]
        with pytest.raises(ToolCallLost):
            await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {})]))
        await rec.wait(lambda r: "turn 3" in text_since(r, start), timeout=120)
        await rec.wait(lambda r: len(replies_since(r, start)) >= 3, timeout=120)
        got = replies_since(rec, start)
        assert got[0] == full_reply(1, "hello", None)  # the replayed turn before the call: in full
        assert got[-1] == full_reply(3, "thanks", "weather in Paris?")
        assert conversation_turns(core.fake)[-1] == ["hello", "weather in Paris?", "thanks"]
        assert rec.statuses().count("failed") == 0 and lives(rec) == 2


def test_a_fresh_start_after_a_resume_asks_again_what_only_an_older_connection_answered():
    # Pure. "a" was answered on connection 1, no handle covering it; connection 2 resumed from
    # an older handle (the conversation went back to before "a") and replayed it, then dropped
    # before its reply ended; connection 3 is fresh. "a" is in no conversation now: the fresh
    # start must ask it again, not drop it as answered (the 3.8-extended soak's lost turns).

    msg = live.client_content("a")
    buf = ReplayBuffer(max_bytes=1 << 20, staleness=1.0)
    buf.append(Entry(1, Kind.TURN, msg, json.dumps(msg), 0.0, True))
    buf.new_connection(0.0, replaying=False)
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    buf.response_ended()
    buf.new_connection(1.0)  # resumed
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    buf.new_connection(2.0, fresh=True)
    assert [e.seq for e in buf] == [1] and buf.stats.dropped_answered == 0
    # ... while what the connection that just ended answered is dropped by a fresh start.
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    buf.response_ended()
    buf.new_connection(3.0, fresh=True)
    assert [e.seq for e in buf] == [] and buf.stats.dropped_answered == 1


def test_a_tool_response_goes_ahead_of_a_held_replay():
    # Pure: while a backlog reply is due, only a tool response may be written (moved ahead of
    # the held turn, which keeps its place after it); once the reply ends, the turn goes.


    buf = ReplayBuffer(max_bytes=1 << 20, staleness=1.0)
    buf.append(entry(1, Kind.TURN, live.client_content("a"), elicits=True))
    buf.append(entry(2, Kind.TURN, live.client_content("b"), elicits=True))
    buf.new_connection(0.0)
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    assert buf.replaying() and buf.next_to_write() is None  # "b" waits for the reply to "a"
    buf.append(entry(3, Kind.TOOL_RESPONSE, live.tool_response([live.function_response("c1", "f", {})])))
    buf.append(entry(4, Kind.TURN, live.client_content("c"), elicits=True))
    assert buf.next_to_write().seq == 3
    buf.mark_sent()
    assert buf.next_to_write() is None
    assert buf.next_to_write(client_turn=True).seq == 2  # a BLOCKING call pending: nothing held
    buf.response_ended()  # the reply to "a" ended
    assert [e.seq for e in buf][buf.cursor:] == [2, 4]
    assert buf.next_to_write().seq == 2
    buf.mark_sent()
    assert buf.next_to_write() is None  # "c" arrived during the replay: behind the reply to "b"
    buf.response_ended()
    assert not buf.replaying() and buf.next_to_write().seq == 4


def test_a_handle_does_not_cover_a_turn_written_after_a_result_that_went_ahead():
    # Pure, the exact sequence of the 3.8-extended soak's lost turns (seed 1642964554, s1 #88):
    # a resumed connection replays "87" (its call comes again), holds "88" behind its reply; the
    # tool response (seq 3) goes ahead of the held "88" (seq 2). Both replies end; "88" is
    # written; then the handle issued at the IDLE (before "88" arrived) is read. It covers "87"
    # and the result, not "88": trimmed by seq (<= 3) "88" was gone, and the next reconnect
    # resumed a conversation without it.


    buf = ReplayBuffer(max_bytes=1 << 20, staleness=1.0)
    buf.append(entry(1, Kind.TURN, live.client_content("87"), elicits=True))
    buf.append(entry(2, Kind.TURN, live.client_content("88"), elicits=True))
    buf.new_connection(0.0)  # resumed: both are the backlog
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    assert buf.next_to_write() is None  # "88" waits for the reply to "87"
    buf.append(entry(3, Kind.TOOL_RESPONSE, live.tool_response([live.function_response("c1", "f", {})]), owed=1))
    assert buf.next_to_write().seq == 3
    buf.mark_sent()
    buf.response_ended()  # "87"'s interaction (the call's filler, the result spoken inside)
    buf.response_ended()  # ... and the result's
    assert buf.next_to_write().seq == 2
    buf.mark_sent()
    assert buf.covered_by_handle(None) == 2
    assert [e.seq for e in buf] == [2]
    # A fresh start now asks "88" again (nothing after it was answered).
    buf.new_connection(1.0, fresh=True)
    assert [e.seq for e in buf] == [2]


def test_a_held_turn_never_sent_is_not_marked_as_a_reply_that_starts_again():
    # Pure. The backlog "87" is written; "88" is held behind its reply; a tool response (seq 3)
    # goes ahead of "88" (seq 2). The connection drops. The next one replays both: only "87"'s
    # reply starts again (``replayed: true``); "88" was never sent, so its reply is a first one
    # (marked by "seq <= the last written", it was: a voice client would skip its start).


    buf = ReplayBuffer(max_bytes=1 << 20, staleness=1.0)
    buf.append(entry(1, Kind.TURN, live.client_content("87"), elicits=True))
    buf.append(entry(2, Kind.TURN, live.client_content("88"), elicits=True))
    buf.new_connection(0.0)
    assert buf.next_to_write().seq == 1
    buf.mark_sent()
    buf.append(entry(3, Kind.TOOL_RESPONSE, live.tool_response([live.function_response("c1", "f", {})])))
    assert buf.next_to_write().seq == 3
    buf.mark_sent()
    marked = buf.restarting(set(), 0)
    assert marked == {1}
    buf.new_connection(1.0)
    assert buf.restarting(marked, 0) == {1}  # (nothing written yet on this one: "87" still marked)
    assert buf.restarting(set(), 2) == {1, 2}  # restored: the previous daemon may have sent both


async def test_a_fresh_start_does_not_ask_answered_turns_again(state_dir, monkeypatch):
    # Answered, but no handle covers it yet when the context is lost (the handle is stale): the
    # fresh session must not be asked it again (the user would get its reply twice). The
    # unanswered turn after it is replayed, once.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=2)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open()
        await core.say("s", "first")
        actor = core.actor()
        await rec.wait(lambda r: actor.handle is not None and len(actor.buffer) == 0)
        core.fake.expire_handles()
        no_more_handles(monkeypatch)
        await core.say("s", "answered")
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert len(actor.buffer) == 1  # answered, still uncovered (no handle since)
        await core.say("s", "pending")
        await rec.wait(lambda r: "turn 3" in r.texts())
        await core.fake.drop_all()
        await rec.wait(lambda r: r.of("session.context_lost"))
        await rec.wait(lambda r: r.texts().count('heard "pending"') >= 2)
        await trio.sleep(0.2)
        assert conversation_turns(core.fake)[-1] == ["pending"]
        assert rec.texts().count('heard "answered"') == 1
        assert actor.buffer.stats.dropped_answered >= 1


async def test_reseed_after_a_fresh_start_holds_answered_turns_as_history(state_dir, monkeypatch):
    # With session.reseed, the answered turns are given to the fresh session as history (the
    # seed), not asked again; the unanswered one is asked once.
    cfg = make_config(state_dir, session=SessionConfig(inactivity_timeout=0, reseed=True))
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=2)
    async with open_core(state_dir, fake_options=opts, cfg=cfg) as core:
        rec = await core.open()
        await core.say("s", "first")
        actor = core.actor()
        await rec.wait(lambda r: actor.handle is not None and len(actor.buffer) == 0)
        core.fake.expire_handles()
        no_more_handles(monkeypatch)
        await core.say("s", "answered")
        await rec.wait(lambda r: r.turn_ends() == 2)
        await core.say("s", "pending")
        await rec.wait(lambda r: "turn 3" in r.texts())
        await core.fake.drop_all()
        await rec.wait(lambda r: r.turn_ends() >= 3)
        await trio.sleep(0.2)
        fresh = core.fake.accepted[-1].messages[1:]  # (after its setup)
        seed, asked = fresh[0]["clientContent"], fresh[1:]
        assert [(t["role"], t["parts"][0]["text"]) for t in seed["turns"]] == [
            ("user", "first"), ("model", full_reply(1, "first", None)),
            ("user", "answered"), ("model", full_reply(2, "answered", "first")),
        ] and seed["turnComplete"] is False
        assert [m["clientContent"]["turns"][0]["parts"][0]["text"] for m in asked] == ["pending"]
        assert conversation_turns(core.fake)[-1] == ["first", "answered", "pending"]
        assert rec.texts().count('heard "answered"') == 1


async def test_extended_thinking_backlog_waits_for_idle_not_the_filler(state_dir, autojump_clock):
    # A 2026 extended-thinking model: each reply is a filler ending in turnComplete +
    # IN_PROGRESS, then the answer ending IDLE. The next backlog turn waits for IDLE: written at
    # the filler's turn end, it would interrupt the answer.
    from geminid.daemon.fake.catalogue import catalogue_2026

    setup = live.setup("gemini-3.8-live-extended-thinking", response_modalities=["AUDIO"],
                       output_audio_transcription=True,
                       generation_config={"thinkingConfig": {"thinkingLevel": "LOW"}})["setup"]
    opts = FakeOptions(catalogue=catalogue_2026(), reply_pace=0.5, reply_chunks=3)
    async with open_core(state_dir, fake_options=opts, memory=True) as core:
        rec = await core.open(setup=setup)

        def spoken(start: int) -> str:
            return "".join((_content(m).get("outputTranscription") or {}).get("text", "") for m in rec.messages()[start:])

        await core.say("s", "a")
        await rec.wait(lambda r: "turn 1" in spoken(0), timeout=120)
        core.fake.refuse_next(2, status=503)
        start = len(rec.messages())
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses()[-1] == "backoff", timeout=120)
        await core.say("s", "b")
        await rec.wait(lambda r: 'turn 2: heard "b"; previous "a".' in spoken(start), timeout=300)
        await trio.sleep(5)
        assert interruptions(rec) == 0
        assert spoken(start) == (
            'turn 1: let me think.turn 1: heard "a".turn 2: let me think.turn 2: heard "b"; previous "a".'
        )
        statuses = [_content(m).get("interactionStatus") for m in rec.messages()[start:] if _content(m).get("turnComplete")]
        assert statuses == ["IN_PROGRESS", "IDLE", "IN_PROGRESS", "IDLE"]
        assert conversation_turns(core.fake)[-1] == ["a", "b"]


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("turn"), st.booleans()),  # a turn (eliciting or not)
        st.tuples(st.just("tool"), st.booleans()),  # a tool response (owing a reply of its own or not)
        st.tuples(st.just("write"), st.integers(1, 4)),
        st.tuples(st.just("reply_end"), st.just(0)),
        st.tuples(st.just("handle"), st.just(0)),
        st.tuples(st.just("reconnect"), st.booleans()),  # fresh or resumed
        st.tuples(st.just("blocking"), st.booleans()),  # a BLOCKING call pending or not
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_pacing_and_the_fresh_drop_never_lose_or_reorder_a_turn(ops):
    # Pure model of the writer against a server that answers eliciting messages in order:
    # while a backlog reply is due only tool responses are written (unless a BLOCKING call is
    # pending); turns keep their order; a fresh start drops only what an answered message
    # written after it covers; nothing else ever leaves the buffer but through a handle.

    buf = ReplayBuffer(max_bytes=1 << 30, staleness=1e9)
    seq, blocking = 0, False
    answered: set[int] = set()
    for op, arg in ops:
        if op in ("turn", "tool"):
            seq += 1
            message = live.client_content(f"t{seq}") if op == "turn" else live.tool_response(
                [live.function_response(f"c{seq}", "f", {})])
            kind = Kind.TURN if op == "turn" else Kind.TOOL_RESPONSE
            buf.append(Entry(seq, kind, message, json.dumps(message), 0.0, elicits=op == "turn" and arg,
                             replies_owed=int(op == "tool" and arg)))
        elif op == "write":
            for _ in range(arg):
                e = buf.next_to_write(client_turn=blocking)
                if e is None:
                    break
                held = buf.replaying() and not blocking
                assert not held or e.kind is Kind.TOOL_RESPONSE
                buf.mark_sent()
        elif op == "reply_end":
            owed = buf.replies.answering()
            if owed is not None:
                answered.add(owed)
                buf.response_ended()
        elif op == "handle":
            if not buf.awaiting_reply():
                # The server consumed what was written up to the last message it answered (in
                # write order) and the tool responses right after it: nothing written later goes.
                written = list(buf)[: buf.cursor]
                last = max((i for i, e in enumerate(written) if e.seq in answered), default=-1)
                while last + 1 < len(written) and written[last + 1].kind is Kind.TOOL_RESPONSE:
                    last += 1
                buf.covered_by_handle(None)
                assert [e.seq for e in buf][: len(written) - last - 1] == [e.seq for e in written[last + 1:]]
        elif op == "blocking":
            blocking = arg
        else:
            before = list(buf)
            buf.new_connection(0.0, fresh=arg)
            gone = [e for e in before if e not in list(buf)]
            for e in gone:  # each one written before an answered message
                i = before.index(e)
                assert any(x.seq in answered for x in before[i:]), (e.seq, answered)
        turns = [e.seq for e in buf if e.kind is Kind.TURN]
        assert turns == sorted(turns)


#: The long form: GEMINID_REPLAY_MINUTES=30 (the CI form runs 4 minutes of simulated time).
REPLAY_MINUTES = float(os.environ.get("GEMINID_REPLAY_MINUTES", "4"))


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_failing_link_under_steady_turns_interrupts_no_reply(state_dir, autojump_clock, fault):
    # MockClock: every connection drops (or stalls: noticed at stall_timeout, 5 s, while the
    # client goes on sending) 3 s after it opened, while a client sends a turn every second, so
    # the backlog at a reconnection often holds several turns. No reply is ever interrupted,
    # every turn is in the conversation once, in order, and every reply arrived whole.
    from geminid.daemon.fake import Fault
    from geminid.daemon.fake.faults import Planned, Trigger
    from geminid.daemon.upstream import BackoffPolicy

    cfg = make_config(state_dir, backoff=BackoffPolicy(), session=SessionConfig(inactivity_timeout=0))
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.05, reply_chunks=3,
                       faults=(Planned(getattr(Fault, fault)(), Trigger("seconds", seconds=3.0)),))
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: lives(r) == 1, timeout=60)
        start = trio.current_time()
        sent: list[str] = []
        while trio.current_time() - start < REPLAY_MINUTES * 60:
            sent.append(f"t{len(sent)}")
            await core.say("s", sent[-1])
            await trio.sleep(1)
        whole = [f'heard "{t}"' + (f'; previous "{sent[i - 1]}"' if i else "") + "." for i, t in enumerate(sent)]
        await rec.wait(lambda r: whole[-1] in r.texts(), timeout=600)
        await trio.sleep(5)
        assert "failed" not in rec.statuses()
        assert len(core.fake.accepted) > REPLAY_MINUTES * 60 / (3 if fault == "drop" else 20) * 0.7  # it kept failing
        assert interruptions(rec) == 0
        assert conversation_turns(core.fake) == [sent]
        texts = rec.texts()
        assert [w for w in whole if w not in texts] == []


async def test_turns_restored_after_a_restart_get_a_reply_each(state_dir):
    # Over loopback. The daemon stops (as by kill -9: the core is cancelled) with two turns
    # that never reached a live connection; the restarted one restores and replays them one
    # reply at a time.
    async with open_core(state_dir) as core:
        core.fake.refuse_next(1000, status=503)  # the upstream is down all along
        await core.open()
        await core.say("s", "a")
        await core.say("s", "b")
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=4)
    async with open_core(state_dir, fake_options=opts) as core:
        with trio.fail_after(10):
            while "s" not in core.registry:
                await trio.sleep(0.01)
        rec = Recorder()
        core.registry.attach("s", rec, None)
        await rec.wait(lambda r: len(replies_since(r, 0)) >= 2, timeout=30)
        await trio.sleep(0.2)
        assert interruptions(rec) == 0
        assert replies_since(rec, 0) == [full_reply(1, "a", None), full_reply(2, "b", "a")]
        assert conversation_turns(core.fake)[-1] == ["a", "b"]
