from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.toolcalls import ToolCalls
from geminid.protocol.errors import LiveMessageError, ToolCallLost


def test_round_trip_then_reply_end_closes_it():
    t = ToolCalls()
    t.called(["a"])
    assert t.open and t.pending == {"a"}
    t.check_response(["a"])
    t.responded(["a"])
    assert t.open and t.answered == {"a"}
    with pytest.raises(LiveMessageError, match="already answered"):
        t.check_response(["a"])
    t.reply_ended()
    assert not t.open


def test_interrupt_cancels_and_late_response_is_refused():
    t = ToolCalls()
    t.called(["a", "b"])
    t.interrupted()
    with pytest.raises(ToolCallLost, match="cancelled"):
        t.check_response(["b"])


def test_connection_loss_loses_open_and_queued_calls():
    t = ToolCalls()
    t.called(["a"])
    t.responded(["b"])  # answered, not consumed
    assert t.connection_lost(["c", None]) == ["a", "b", "c"]
    assert not t.open
    with pytest.raises(ToolCallLost, match="lost"):
        t.check_response(["c"])
    with pytest.raises(LiveMessageError, match="no pending"):
        t.check_response(["zzz"])


@given(st.lists(st.tuples(st.sampled_from(["call", "respond", "interrupt", "cancel", "end", "lose"]),
                          st.sampled_from(["a", "b", "c"])), max_size=40))
def test_only_pending_ids_are_ever_accepted(ops):
    t = ToolCalls()
    for op, i in ops:
        if op == "call":
            t.called([i])
        elif op == "respond":
            try:
                t.check_response([i])
            except (ToolCallLost, LiveMessageError):
                assert i not in t.pending
            else:
                assert i in t.pending
                t.responded([i])
        elif op == "interrupt":
            t.interrupted()
        elif op == "cancel":
            t.cancelled_by_server([i])
        elif op == "end":
            t.reply_ended()
        else:
            t.connection_lost([])
        assert not (t.pending & t.answered)
