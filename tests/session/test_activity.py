"""The activity model on its own: what starts and ends a reply, when a reply is due, when the
session is quiet, and which client messages a handle covers. No actor, no fake, no trio."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.session.activity import Activity, Replies, ReplyFacts, reply_facts
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.protocol import live


def server(obj: dict) -> live.ServerMessage:
    msg = live.parse_server_frame(json.dumps(obj))
    assert msg is not None
    return msg


def turn(seq: int, elicits: bool = True) -> Entry:
    message = live.client_content(f"t{seq}", turn_complete=elicits)
    return Entry(seq, Kind.TURN, message, live.encode(message), 0.0, elicits)


def fresh() -> Activity:
    buf = ReplayBuffer(max_bytes=100_000, staleness=1.0)
    act = Activity(buf, ToolCalls(), last_activity=0.0)
    buf.new_connection(0.0)
    act.connection_opened(0.0)
    return act


def test_reply_facts():
    assert reply_facts(server(live.server_text("hi")), in_response=False) == ReplyFacts(started=True)
    assert reply_facts(server(live.server_text("hi")), in_response=True) == ReplyFacts()
    assert reply_facts(server(live.turn_complete()), in_response=True) == ReplyFacts(boundary=True, answers=True)
    # A boundary with nothing before it answers nothing, unless the server interrupted.
    assert reply_facts(server(live.turn_complete()), in_response=False) == ReplyFacts(boundary=True)
    assert reply_facts(server(live.interrupted()), in_response=False) == ReplyFacts(boundary=True, answers=True)
    assert reply_facts(server(live.tool_call([{"id": "a", "name": "f"}])), in_response=False).started
    assert reply_facts(server(live.go_away(5)), in_response=True) == ReplyFacts()


def test_a_turn_is_due_until_its_reply_ends_then_quiet_once_covered():
    act = fresh()
    act.buffer.append(turn(1))
    assert act.quiet() and not act.expecting_reply()  # appended, not written
    entry = act.buffer.mark_sent()
    assert act.written(entry, now=2.0)
    assert act.expecting_reply() and not act.quiet()
    assert act.stall_at(5.0) == 7.0
    act.frame_received(3.0)
    act.server_message(server(live.server_text("hello")))
    assert act.in_response and act.stall_at(5.0) == 8.0
    act.server_message(server(live.turn_complete()))
    assert not act.expecting_reply() and act.stall_at(5.0) is None
    assert not act.quiet()  # written and not yet covered by a handle
    assert act.buffer.covered_by_handle(None) == 1
    assert act.quiet()


def test_a_pending_tool_call_is_not_a_stall_but_not_quiet_either():
    act = fresh()
    act.server_message(server(live.tool_call([{"id": "a", "name": "f"}])))
    act.tools.called(["a"])
    assert act.in_response and not act.expecting_reply() and not act.quiet()


def test_nothing_is_due_or_quiet_without_a_connection():
    act = fresh()
    act.connection_closed()
    assert not act.quiet() and not act.expecting_reply()


def test_draining_holds_eliciting_messages_only():
    assert Activity.holds(turn(1), draining=True)
    assert not Activity.holds(turn(1, elicits=False), draining=True)
    assert not Activity.holds(turn(1), draining=False)


def test_idle_for_counts_from_the_last_touch():
    act = fresh()
    act.touch(10.0)
    assert act.idle_for(12.5) == 2.5


@given(st.lists(st.sampled_from(["send", "end"]), max_size=30))
def test_replies_cover_exactly_the_answered_prefix(ops):
    """Model: replies end in order, one per eliciting message; a handle covers up to the last
    answered one, and never a message whose reply has not ended. A reply that ends with nothing
    unanswered (the model spoke on its own) answers no later message (issue #10)."""
    r = Replies()
    sent: list[int] = []
    answered = 0
    for op in ops:
        if op == "send":
            sent.append(len(sent) + 1)
            r.sent(sent[-1])
        else:
            r.reply_ended()
            answered = min(answered + 1, len(sent))
        assert r.awaiting() == (len(sent) > answered)
    n = min(answered, len(sent))
    assert r.covered_through() == (sent[n - 1] if n else None)
    assert r.awaiting() == (len(sent) > n)
