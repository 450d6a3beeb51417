"""Issue #10 in the activity model and the tool calls, without a fake: interactionStatus decides
when a reply ends, fillers answer nothing, NON_BLOCKING calls survive input, SILENT responses ask
for nothing, willContinue keeps a call pending."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.session.activity import Activity, ReplyFacts, reply_facts
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.upstream.diagnose import SetupHistory
from geminid.daemon.upstream.endings import Ending, EndingKind
from geminid.protocol import live


def server(obj: dict) -> live.ServerMessage:
    msg = live.parse_server_frame(json.dumps(obj))
    assert msg is not None
    return msg


def fresh() -> Activity:
    buf = ReplayBuffer(max_bytes=100_000, staleness=1.0)
    act = Activity(buf, ToolCalls(), last_activity=0.0)
    buf.new_connection(0.0)
    act.connection_opened(0.0)
    return act


def send_turn(act: Activity, seq: int) -> None:
    message = live.client_content(f"t{seq}")
    act.buffer.append(Entry(seq, Kind.TURN, message, live.encode(message), 0.0, True))
    act.written(act.buffer.mark_sent(), 0.0)


def test_only_idle_or_a_status_less_turn_complete_ends_a_reply():
    text = server(live.server_text("hm"))
    in_progress = server(live.turn_complete(None, "IN_PROGRESS"))
    assert reply_facts(in_progress, in_response=True) == ReplyFacts()
    assert reply_facts(in_progress, in_response=False) == ReplyFacts(started=True)
    for status in ("IDLE", "REQUIRES_ACTION", None, "WAITING_FOR_INPUT"):
        assert reply_facts(server(live.turn_complete(None, status)), in_response=True) == ReplyFacts(
            boundary=True, answers=True
        )
    assert reply_facts(server(live.generation_complete()), in_response=True) == ReplyFacts()
    assert reply_facts(server(live.waiting_for_input()), in_response=False) == ReplyFacts()
    assert reply_facts(text, in_response=False) == ReplyFacts(started=True)


def test_a_filler_answers_nothing_and_is_no_quiet_point():
    act = fresh()
    send_turn(act, 1)
    for frame in (live.server_text("let me think"), live.generation_complete(), live.turn_complete(None, "IN_PROGRESS")):
        act.server_message(server(frame))
    assert act.replies.awaiting() and not act.quiet() and act.in_response
    assert act.buffer.covered_by_handle(None) == 0  # a handle now covers nothing
    for frame in (live.server_text("the answer"), live.turn_complete(None, "IDLE")):
        act.server_message(server(frame))
    assert not act.replies.awaiting()
    assert act.buffer.covered_by_handle(None) == 1


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8), st.data())
def test_no_turn_is_covered_before_its_interaction_ends(fillers, data):
    """1..n utterances per request, a handle at any point: a handle never covers a message whose
    interaction has not ended at IDLE (the property GEMINI_LIVE_2026.md §2 (d) asks for)."""
    act = fresh()
    covered = 0
    ended = 0
    for seq, n in enumerate(fillers, start=1):
        send_turn(act, seq)
        for _ in range(n):
            act.server_message(server(live.server_text("filler")))
            act.server_message(server(live.turn_complete(None, "IN_PROGRESS")))
            if data.draw(st.booleans()):
                covered += act.buffer.covered_by_handle(None)
                assert covered <= ended
        act.server_message(server(live.server_text("answer")))
        act.server_message(server(live.turn_complete(None, "IDLE")))
        ended += 1
        if data.draw(st.booleans()):
            covered += act.buffer.covered_by_handle(None)
            assert covered <= ended


def test_an_unelicited_reply_does_not_cover_a_later_turn():
    act = fresh()
    act.server_message(server(live.server_text("proactive")))
    act.server_message(server(live.turn_complete(None, "IDLE")))
    send_turn(act, 1)
    assert act.replies.awaiting()
    assert act.buffer.covered_by_handle(None) == 0


def tools(model: str = "models/gemini-3.8-live", **behaviors: str) -> ToolCalls:
    decls = [{"name": n, **({"behavior": b} if b else {})} for n, b in behaviors.items()]
    t = ToolCalls()
    t.declare({"model": model, "tools": [{"functionDeclarations": decls}]})
    return t


def test_new_input_cancels_blocking_calls_only():
    t = tools(slow="", sync="BLOCKING")
    t.called([{"id": "a", "name": "slow"}, {"id": "b", "name": "sync"}, {"id": "c", "name": "undeclared"}])
    assert not t.is_blocking("a") and t.is_blocking("b") and not t.is_blocking("c")  # 3.8 default
    t.interrupted()
    assert t.pending == {"a", "c"} and list(t.cancelled) == ["b"]
    t.check_response(["a", "c"])


def test_3_1_blocks_always_whatever_the_declaration_says():
    t = tools("models/gemini-3.1-flash-live-preview", f="NON_BLOCKING")
    t.called([{"id": "a", "name": "f"}])
    t.interrupted()
    assert not t.pending


def test_silent_when_idle_interrupt_and_will_continue():
    t = tools(f="")
    t.called([{"id": "s", "name": "f"}, {"id": "w", "name": "f"}, {"id": "g", "name": "f"}])
    assert t.responded([{"id": "s", "scheduling": "SILENT"}]) == (0, True)
    assert "s" not in t.pending and "s" not in t.answered  # nothing owed: no stall, round trip over
    assert t.responded([{"id": "w", "scheduling": "WHEN_IDLE"}]) == (1, False)
    assert t.responded([{"id": "g", "willContinue": True, "scheduling": "INTERRUPT"}]) == (1, False)
    t.check_response(["g"])  # still pending: more responses follow
    assert t.responded([{"id": "g", "willContinue": False}]) == (1, False)
    assert "g" not in t.pending


def test_blocking_response_owes_no_reply_of_its_own():
    t = tools(f="BLOCKING")
    t.called([{"id": "a", "name": "f"}])
    assert t.responded([{"id": "a"}]) == (0, False)
    assert t.answered == {"a"}


def test_late_result_message_for_a_lost_call():
    t = tools(f="")
    t.called([{"id": "a", "name": "f"}])
    t.connection_lost([])
    try:
        t.check_responses([{"id": "a", "name": "f", "response": {"x": 1}}], "models/gemini-3.8-live")
    except Exception as exc:
        msg = exc.data["as_text"]  # type: ignore[attr-defined]
    else:
        raise AssertionError("accepted")
    text = msg["clientContent"]["turns"][0]["parts"][0]["text"]
    assert '{"x": 1}' in text and "id a" in text
    live.validate_client_message(msg)
    try:
        t.check_responses([{"id": "a", "name": "f", "response": {}}], "models/gemini-3.1-flash-live-preview")
    except Exception as exc:
        assert "text" in exc.data["as_text"]["realtimeInput"]  # type: ignore[attr-defined]


def closed(code: int, reason: str) -> Ending:
    return Ending(EndingKind.CLOSED, code=code, reason=reason)


def test_setup_history_needs_internal_errors_before_content_in_a_row():
    h = SetupHistory()
    internal = closed(1011, "Internal error encountered.")
    for _ in range(2):
        h = h.after(internal, content_seen=False)
    assert h.refused() is None
    assert h.after(internal, content_seen=True).after(internal, content_seen=False).refused() is None
    assert h.after(closed(1011, "The service is currently unavailable."), content_seen=False).refused() is None
    assert "invalid config" in (h.after(internal, content_seen=False).refused() or "")


def test_internal_errors_after_the_setup_once_worked_are_an_outage_not_a_config_error():
    # The loaded chaos soak (3.8-text, seed 41024): a session that had answered 50 turns went
    # `failed: invalid config?` when three resumes in a row were cut with 1011 "Internal error"
    # before any content. Content on any connection proves the server takes the setup.
    internal = closed(1011, "Internal error encountered.")
    h = SetupHistory().after(closed(1006, ""), content_seen=True)
    for _ in range(10):
        h = h.after(internal, content_seen=False)
    assert h.refused() is None
    # A session whose setup never drew content still fails fast.
    fresh = SetupHistory()
    for _ in range(3):
        fresh = fresh.after(internal, content_seen=False)
    assert "invalid config" in (fresh.refused() or "")
