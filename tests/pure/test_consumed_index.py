"""Property tests of the transparent index's convention detection (daemon/session/consumed.py).

A model server counts consumed client messages per connection and over the conversation (reset
by a fresh dial), and names them in the convention under test. Whatever the history of sends,
consumption, updates and reconnects (resumed or fresh), the detector never calls a message
consumed that the server had not consumed; at a quiet update (every reply ended, so the client
knows how many were consumed) it is exact.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geminid.daemon.session.consumed import CONVENTIONS, ConsumedIndex

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("consume"), st.integers(1, 4)),
        st.tuples(st.just("update"), st.booleans()),  # True: quiet (the client knows c)
        st.tuples(st.just("reconnect"), st.booleans(), st.integers(0, 3)),  # resumed, writes first
    ),
    max_size=60,
)


def _index(convention: str, conn: int, session: int) -> int | None:
    base, _, scope = convention.partition("-")
    count = session if scope == "session" else conn
    return count - 1 + int(base) if count > 0 else None


def _play(detector: ConsumedIndex, convention: str, history, session: int = 0) -> None:
    """Run ``history`` against a server that had consumed ``session`` messages of the
    conversation before the detector's first connection (a resume), checking every answer."""
    sent = conn = 0
    for op in history:
        if op[0] == "send":
            sent += op[1]
        elif op[0] == "consume":
            step = min(op[1], sent - conn)
            conn, session = conn + step, session + step
        elif op[0] == "update":
            quiet = op[1]
            got = detector.observe(_index(convention, conn, session), sent, conn if quiet else 0)
            assert got <= conn, "a message the server had not consumed would be trimmed"
            if quiet:
                assert got == conn
        else:
            _, resumed, written_first = op
            detector.new_connection(sent)
            if not resumed:
                session = 0
            sent = conn = 0
            # The service's update right after setup (count of this connection: 0), which the
            # daemon may read only after it wrote some replay.
            index = _index(convention, 0, session)
            sent += written_first
            got = detector.observe(index, sent, 0)
            assert got == 0
    alive = {f"{c.base}-{'session' if c.session else 'connection'}" for c in detector.candidates}
    assert convention in alive, "the true convention was dropped"


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("configured", [False, True])
@settings(max_examples=300, deadline=None)
@given(history=ops)
def test_never_trims_unconsumed_and_exact_when_quiet(convention, configured, history):
    detector = ConsumedIndex.for_convention(convention if configured else "auto")
    _play(detector, convention, history)
    if configured:
        assert detector.convention == convention


@pytest.mark.parametrize("convention", CONVENTIONS)
@settings(max_examples=300, deadline=None)
@given(before=st.integers(1, 40), written_first=st.integers(0, 3), history=ops)
def test_a_restored_session_never_trims_unconsumed(convention, before, written_first, history):
    """A restarted daemon resumes a conversation that had consumed ``before`` messages under
    the daemon it replaced; its detector never saw them (``unknown_start``). Under a session
    scope, reading that count as 0 would trim up to ``before`` messages never consumed."""
    detector = ConsumedIndex.for_convention()
    detector.unknown_start()
    _play(detector, convention, [("reconnect", True, written_first), *history], session=before)


def test_a_restored_session_is_pinned_by_the_update_after_setup():
    d = ConsumedIndex.for_convention()
    d.unknown_start()
    d.new_connection(0)
    assert d.observe(41, 0) == 0  # 0-based session count 42 at the resume, nothing written
    assert d.observe(44, 3, at_least=3) == 3
    assert d.observe(46, 6) == 5  # exact between replies too, now S0 is known


def test_first_quiet_update_settles_the_base():
    d = ConsumedIndex.for_convention()
    d.observe(2, 3, at_least=3)  # 0-based: three consumed (1-based would leave one unconsumed)
    assert {c.base for c in d.candidates} == {0}


def test_resume_update_before_any_write_proves_session_scope():
    d = ConsumedIndex.for_convention()
    d.observe(4, 5, at_least=5)
    d.new_connection(5)
    assert d.observe(4, 0) == 0  # a non-zero index with nothing written: session scope
    assert d.convention == "0-session"
    assert d.observe(6, 2, at_least=2) == 2


def test_an_index_of_zero_is_zero_based_and_one_equal_to_the_count_written_is_one_based():
    """An index names a consumed message; none is numbered 0 from 1. The update sent while the
    first reply starts (resumable: false) names the turn alone: 0 or 1, the base at once."""
    d = ConsumedIndex.for_convention()
    d.observe(0, 1)
    assert {c.base for c in d.candidates} == {0}
    d = ConsumedIndex.for_convention()
    d.observe(1, 1)
    assert {c.base for c in d.candidates} == {1}


def test_transparent_coverage_goes_by_write_position_not_by_seq():
    """A tool response (seq 5) written ahead of held replay turns (seqs 2, 3: paced replay)
    covers what was written before it, not the lower seqs written after it. Counted as consumed
    by seq, turn 2's reply was matched to the wrong message and a later trim took a turn the
    server never had (the Vertex soak's lost turns after the replay pacing landed)."""
    from geminid.daemon.session.activity import Replies

    replies = Replies()
    for seq in (1, 5, 2, 3):  # write order
        replies.sent(seq)
    replies.consumed_through(frozenset({1, 5}))
    assert replies.answering() == 2  # turns 2 and 3 still owe their replies
    replies.reply_ended()
    assert replies.answered_through() == 2
