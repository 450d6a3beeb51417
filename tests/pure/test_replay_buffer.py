"""Property tests of the replay buffer: the rules that make replay zero-loss and exactly-once."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geminid.daemon.replay import Entry, Kind, ReplayBuffer, classify_message
from geminid.daemon.session.consumed import ConsumedIndex
from geminid.protocol import live
from geminid.protocol.errors import BufferFull


def entry(seq: int, kind: Kind, at: float = 0.0, elicits: bool | None = None, size: int = 10) -> Entry:
    if kind is Kind.TURN:
        msg = live.client_content(f"t{seq}", turn_complete=True if elicits is None else elicits)
        el = True if elicits is None else elicits
    elif kind is Kind.AUDIO:
        msg = live.realtime_audio(b"\0" * size)
        el = False
    elif kind is Kind.TOOL_RESPONSE:
        msg = live.tool_response([live.function_response(f"id{seq}", "f", {})])
        el = False
    else:
        msg = live.realtime_text("x")
        el = True
    return Entry(seq, kind, msg, live.encode(msg), at, el)


def test_classify_message():
    assert classify_message("clientContent", live.client_content("x")) == (Kind.TURN, True)
    assert classify_message("clientContent", live.client_content("x", turn_complete=False)) == (Kind.TURN, False)
    assert classify_message("realtimeInput", live.realtime_audio(b"ab")) == (Kind.AUDIO, False)
    assert classify_message("realtimeInput", live.audio_stream_end()) == (Kind.REALTIME, True)
    assert classify_message("realtimeInput", live.activity_start()) == (Kind.REALTIME, False)
    assert classify_message("toolResponse", live.tool_response([live.function_response("a", "f", {})]))[0] is Kind.TOOL_RESPONSE


def drain(buf: ReplayBuffer) -> list[int]:
    sent = []
    while (e := buf.peek()) is not None:
        buf.mark_sent()
        sent.append(e.seq)
    return sent


def test_handle_covers_answered_prefix_only():
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    for s in (1, 2, 3):
        buf.append(entry(s, Kind.TURN))
    assert drain(buf) == [1, 2, 3]
    buf.response_ended()  # the reply to turn 1 ended
    assert buf.covered_by_handle(None) == 1
    assert [e.seq for e in buf] == [2, 3]
    # A reconnect replays exactly what was not covered, in order.
    buf.new_connection(now=0.0)
    assert drain(buf) == [2, 3]


def test_transparent_index_trims_exactly():
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    for s in (5, 6, 7, 8):
        buf.append(entry(s, Kind.TURN, elicits=False))
    buf.consumed = ConsumedIndex.for_convention("0-connection")  # configured: exact at once
    drain(buf)
    buf.covered_by_handle(1)  # 0-based: messages 0 and 1 on this connection consumed
    assert [e.seq for e in buf] == [7, 8]
    buf.covered_by_handle(3)
    assert len(buf) == 0


def test_transparent_index_ambiguous_base_trims_conservatively():
    """Auto: index 1 with four written is 0-based (two consumed) or 1-based (one): trim one."""
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    for s in (5, 6, 7, 8):
        buf.append(entry(s, Kind.TURN, elicits=False))
    drain(buf)
    buf.covered_by_handle(1)
    assert [e.seq for e in buf] == [6, 7, 8]
    buf.covered_by_handle(4)  # an index equal to the number written: 1-based, all consumed
    assert len(buf) == 0 and buf.consumed.convention is None  # (scope still open)


def test_stale_audio_dropped_on_replay_but_turns_never():
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.append(entry(1, Kind.AUDIO, at=0.0))
    buf.append(entry(2, Kind.TURN, at=0.0))
    buf.append(entry(3, Kind.AUDIO, at=9.5))
    dropped = buf.new_connection(now=10.0)
    assert [e.seq for e in dropped] == [1]
    assert [e.seq for e in buf] == [2, 3]
    assert buf.stats.dropped_stale == 1


@pytest.mark.parametrize("forgotten_first", [False, True])
def test_a_stream_end_whose_audio_was_forgotten_as_stale_is_not_replayed_alone(forgotten_first):
    # The 3.8-extended soak's stuck session (seed 21001, under load): the audio of a stream was
    # written, its end too; the connection dropped before the reply ended. While the next dials
    # failed, the written audio aged past the staleness window and drop_sent_stale_audio forgot
    # it, so the reconnect saw a lone audioStreamEnd and replayed it: the server (which resumed
    # from a handle older than the audio) answered nothing, the paced replay held every later
    # turn behind it, and each stall reconnect replayed it again. It is dropped with its audio,
    # whether the audio went at the reconnect or before it.
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.new_connection(0.0, replaying=False)
    for seq in (1, 2, 3):
        buf.append(entry(seq, Kind.AUDIO, at=0.0))
    end = live.audio_stream_end()
    buf.append(Entry(4, Kind.REALTIME, end, live.encode(end), 0.1, True))
    assert drain(buf) == [1, 2, 3, 4]
    buf.append(entry(5, Kind.TURN, at=0.2))  # queued while there is no connection
    if forgotten_first:
        buf.drop_sent_stale_audio(now=5.0)
        assert [e.seq for e in buf] == [4, 5]
    buf.new_connection(now=5.0)
    assert [e.seq for e in buf] == [5]
    assert buf.next_to_write().seq == 5


def test_a_stream_end_covered_by_a_handle_keeps_nothing_stale_in_mind():
    # Audio forgotten as stale, then a handle covers the stream's end: a later stream's end is
    # replayed with its own audio as usual.
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.new_connection(0.0, replaying=False)
    end = live.audio_stream_end()
    buf.append(entry(1, Kind.AUDIO, at=0.0))
    buf.append(Entry(2, Kind.REALTIME, end, live.encode(end), 0.1, True))
    assert drain(buf) == [1, 2]
    buf.drop_sent_stale_audio(now=5.0)
    buf.response_ended()
    buf.covered_by_handle(None)
    assert list(buf) == []
    buf.append(entry(3, Kind.AUDIO, at=5.0))
    buf.append(Entry(4, Kind.REALTIME, end, live.encode(end), 5.0, True))
    buf.new_connection(now=5.5)
    assert [e.seq for e in buf] == [3, 4]


def test_a_backlog_message_the_server_never_answers_holds_the_replay_twice_at_most():
    # The pace's valve: two connections in a row ended waiting for the reply to the same backlog
    # message (one the server does not answer); the third writes the rest without waiting, so
    # the session cannot hang behind it however often it reconnects.
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.new_connection(0.0, replaying=False)
    buf.append(entry(1, Kind.TURN))
    assert drain(buf) == [1]
    buf.append(entry(2, Kind.TURN))  # queued while there is no connection
    for attempt in (1, 2):
        buf.new_connection(float(attempt))
        assert buf.next_to_write().seq == 1
        buf.mark_sent()
        assert buf.next_to_write() is None, attempt  # held: "2" waits for the reply to "1"
    buf.new_connection(3.0)
    assert drain(buf) == [1, 2]
    # Answered at last, the pace is back for the next backlog.
    buf.response_ended()
    buf.response_ended()
    assert buf.covered_by_handle(None) == 2
    buf.append(entry(3, Kind.TURN))
    buf.append(entry(4, Kind.TURN))
    buf.new_connection(4.0)
    assert buf.next_to_write().seq == 3
    buf.mark_sent()
    assert buf.next_to_write() is None


def test_a_handle_covers_a_blocking_calls_response_at_the_head_but_not_a_non_blocking_one():
    # No handle is issued while a BLOCKING call is pending, so one that arrives after its response
    # was written covers it. A NON_BLOCKING call may not hold handles back (UNCONFIRMED): the
    # handle may have been issued while the response was in flight. Trimmed, a SILENT response
    # the connection then lost was never delivered and never reported (the 3.8-audio soak, K1).
    msg = live.tool_response([live.function_response("c1", "f", {})])
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.new_connection(0.0, replaying=False)
    buf.append(Entry(1, Kind.TOOL_RESPONSE, msg, live.encode(msg), 0.0, False, silent=True))
    buf.append(Entry(2, Kind.TOOL_RESPONSE, msg, live.encode(msg), 0.0, False, replies_owed=1))
    assert drain(buf) == [1, 2]
    assert buf.covered_by_handle(None) == 0
    assert [e.seq for e in buf] == [1, 2]
    buf.response_ended()  # the result's reply: what was written up to it is covered
    assert buf.covered_by_handle(None) == 2
    buf.append(Entry(3, Kind.TOOL_RESPONSE, msg, live.encode(msg), 0.0, False))  # BLOCKING
    assert drain(buf) == [3]
    assert buf.covered_by_handle(None) == 1 and list(buf) == []


def test_full_buffer_drops_oldest_audio_then_refuses():
    buf = ReplayBuffer(max_bytes=400, staleness=1.0)
    buf.append(entry(1, Kind.AUDIO, size=60))
    buf.append(entry(2, Kind.TURN))
    buf.append(entry(3, Kind.TURN))
    big = entry(4, Kind.TURN)
    buf.append(big)
    assert 1 not in [e.seq for e in buf] or buf.bytes <= 400
    with pytest.raises(BufferFull):
        for s in range(5, 50):
            buf.append(entry(s, Kind.TURN))
    assert buf.stats.refused == 1
    assert buf.bytes <= 400
    assert all(e.kind is Kind.TURN for e in buf)


def test_lost_tool_responses_removed_before_replay():
    buf = ReplayBuffer(max_bytes=10_000, staleness=1.0)
    buf.append(entry(1, Kind.TURN))
    buf.append(entry(2, Kind.TOOL_RESPONSE))
    buf.new_connection(0.0)
    removed = buf.remove_tool_responses(["id2"])
    assert [e.seq for e in removed] == [2]
    assert [e.seq for e in buf] == [1]


kinds = st.sampled_from([Kind.TURN, Kind.AUDIO, Kind.TOOL_RESPONSE, Kind.REALTIME])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), kinds, st.booleans()),
        st.tuples(st.just("send"), st.integers(0, 5)),
        st.tuples(st.just("deliver"), st.integers(0, 5)),
        st.tuples(st.just("boundary")),
        st.tuples(st.just("handle")),
        st.tuples(st.just("reconnect"), st.floats(0, 5)),
    ),
    max_size=80,
)


@settings(max_examples=400)
@given(ops)
def test_replay_never_loses_reorders_or_duplicates_an_answered_turn(program):
    """A model of the Developer API server: written messages are in flight until the server
    consumes them, in order; an eliciting one makes it generate until a turn boundary; it issues
    a handle only when quiet, holding what it had consumed; a reconnect loses what was in flight
    and what was consumed after the last handle.

    Whatever happens, the conversation (handle state, then the replay) holds every accepted
    turn, in order of first appearance; turns that ask for a reply appear exactly once; only
    ``turnComplete: false`` content written while a handle was in flight may appear twice."""
    buf = ReplayBuffer(max_bytes=1_000_000, staleness=1.0)
    seq = 0
    now = 0.0
    server_state: list[int] = []  # turn seqs in the conversation as of the last handle
    consumed: list[int] = []  # turn seqs consumed on this connection since the last handle
    wire: list[Entry] = []  # written, not yet consumed
    generating = 0  # eliciting messages consumed whose reply has not ended
    accepted: list[int] = []
    eliciting_turns: set[int] = set()
    for op in program:
        if op[0] == "append":
            seq += 1
            kind, elicit = op[1], op[2]
            e = entry(seq, kind, at=now, elicits=elicit if kind is Kind.TURN else None)
            buf.append(e)
            if kind is Kind.TURN:
                accepted.append(seq)
                if e.elicits:
                    eliciting_turns.add(seq)
        elif op[0] == "send":
            for _ in range(op[1]):
                e = buf.peek()
                if e is None:
                    break
                buf.mark_sent()
                wire.append(e)
        elif op[0] == "deliver":
            for _ in range(min(op[1], len(wire))):
                e = wire.pop(0)
                if e.kind is Kind.TURN:
                    consumed.append(e.seq)
                if e.elicits:
                    generating += 1
        elif op[0] == "boundary":
            if generating:
                generating -= 1
                buf.response_ended()
        elif op[0] == "handle":
            if generating == 0:  # quiet: the handle holds everything consumed so far
                server_state.extend(consumed)
                consumed = []
                buf.covered_by_handle(None)
        else:
            now += op[1]
            wire, consumed, generating = [], [], 0
            buf.new_connection(now)
    buf.new_connection(now)
    final = server_state + [e.seq for e in buf if e.kind is Kind.TURN]
    first_seen = list(dict.fromkeys(final))
    assert first_seen == accepted  # nothing lost, nothing reordered
    for s in eliciting_turns:
        assert final.count(s) == 1, (s, final)


def _result(seq: int, scheduling: str) -> Entry:
    """A NON_BLOCKING tool response: WHEN_IDLE and INTERRUPT owe a reply, SILENT none."""
    msg = live.tool_response([{**live.function_response(f"id{seq}", "f", {}), "scheduling": scheduling}])
    silent = scheduling == "SILENT"
    return Entry(seq, Kind.TOOL_RESPONSE, msg, live.encode(msg), 0.0, False, replies_owed=0 if silent else 1, silent=silent)


inputs = st.sampled_from(["turn", "turn_part", "audio", "when_idle", "interrupt", "silent"])
server_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), inputs),
        st.tuples(st.just("send"), st.integers(0, 5)),
        st.tuples(st.just("deliver"), st.integers(0, 5)),
        st.tuples(st.just("finish"), st.booleans()),
        st.tuples(st.just("receive"), st.integers(0, 5)),
        st.tuples(st.just("handle")),
        st.tuples(st.just("reconnect")),
    ),
    max_size=100,
)


@settings(max_examples=600)
@given(server_ops)
@example([  # the 3.8-text soak's seed 202, reduced: turn 3 was replayed
    ("append", "turn"), ("append", "when_idle"), ("append", "turn"), ("send", 3), ("deliver", 1),
    ("deliver", 1), ("deliver", 1), ("finish", True), ("receive", 4), ("reconnect",),
])
def test_replay_with_results_the_server_keeps_for_an_idle_model(program):
    """A model of the Developer API server as the fake plays it (daemon/fake/speaker.py,
    tooldesk.py): input is consumed in order; a turn (or a ``turnComplete: false`` one, or an
    INTERRUPT result) stops the reply in progress (``interrupted``) and a turn starts its own; a
    WHEN_IDLE result that arrives while the model speaks waits until a reply ends on its own
    (``finish``), then is spoken; a handle may be issued whenever no reply is in progress, and
    at that end before the waiting result starts, and holds every turn consumed. The server's frames (ends,
    handles) reach the daemon in order, later (``receive``); a reconnect loses what is in flight
    both ways and resumes from the last handle the daemon received.

    Whatever happens, no accepted turn is lost or reordered, and a turn that asks for a reply is
    in the conversation exactly once (the 3.8 soak forms' duplicated turns: a WHEN_IDLE result
    kept behind an interrupted reply was matched to the reply of the turn that cut it)."""
    buf = ReplayBuffer(max_bytes=1_000_000, staleness=1e9)
    seq = 0
    accepted: list[int] = []
    eliciting_turns: set[int] = set()
    resumed: list[int] = []  # the turns of the handle the daemon last received
    conversation: list[int] = []  # the server's turns on this connection
    wire: list[Entry] = []  # written, not yet consumed
    inbound: list[tuple[str, object]] = []  # the server's frames on their way to the daemon
    speaking = False
    kept: list[Entry] = []  # WHEN_IDLE results waiting for an idle model

    def stop() -> None:
        nonlocal speaking
        if speaking:
            inbound.append(("end", True))
        speaking = False

    for op in program:
        if op[0] == "append":
            seq += 1
            if op[1] in ("when_idle", "interrupt", "silent"):
                e = _result(seq, {"when_idle": "WHEN_IDLE", "interrupt": "INTERRUPT", "silent": "SILENT"}[op[1]])
            else:
                e = entry(seq, Kind.AUDIO if op[1] == "audio" else Kind.TURN, elicits=op[1] == "turn")
            buf.append(e)
            if e.kind is Kind.TURN:
                accepted.append(seq)
                if e.elicits:
                    eliciting_turns.add(seq)
        elif op[0] == "send":
            for _ in range(op[1]):
                if buf.peek() is None:
                    break
                wire.append(buf.mark_sent())
        elif op[0] == "deliver":
            for _ in range(min(op[1], len(wire))):
                e = wire.pop(0)
                if e.kind is Kind.TURN:
                    conversation.append(e.seq)
                    stop()
                    speaking = e.elicits
                elif e.kind is Kind.TOOL_RESPONSE and e.replies_owed:
                    if e.may_stop_the_model:
                        stop()
                        speaking = True
                    elif speaking:
                        kept.append(e)
                    else:
                        speaking = True
        elif op[0] == "finish":
            if speaking:
                inbound.append(("end", False))
                if op[1]:  # the model is idle for a moment: the fake issues a handle there
                    inbound.append(("handle", list(conversation)))
                speaking = bool(kept)
                if kept:
                    kept.pop(0)
        elif op[0] == "receive":
            for _ in range(min(op[1], len(inbound))):
                what, data = inbound.pop(0)
                if what == "end":
                    buf.replies.reply_ended(interrupted=bool(data))
                else:
                    buf.covered_by_handle(None)
                    resumed = list(data)  # type: ignore[call-overload]
        elif op[0] == "handle":
            if not speaking:
                inbound.append(("handle", list(conversation)))
        else:
            wire, inbound, kept, speaking = [], [], [], False
            conversation = list(resumed)
            buf.new_connection(0.0)
    buf.new_connection(0.0)
    final = resumed + [e.seq for e in buf if e.kind is Kind.TURN]
    assert list(dict.fromkeys(final)) == accepted  # nothing lost, nothing reordered
    for s in eliciting_turns:
        assert final.count(s) == 1, (s, final)
