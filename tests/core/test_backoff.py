"""Backoff decisions: examples for each rule, hypothesis for the properties."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.upstream import Action, Backoff, BackoffPolicy

A = Action
P = BackoffPolicy()


def test_defaults_unchanged() -> None:
    assert attrs.asdict(P) == {
        "initial": 0.4,
        "factor": 2.0,
        "cap": 30.0,
        "stable_after": 10.0,
        "quick_failure": 2.0,
        "max_attempts": 12,
        "quota_initial": 60.0,
        "quota_cap": 600.0,
        "max_failed_resumes": 3,
        "rotation_limit": 6,
        "rotation_window": 60.0,
    }


def test_lifetime_end_resumes_at_once_and_burns_nothing() -> None:
    b = Backoff(P, attempt=4, quota_attempt=1, failed_resumes=2)
    b2, delay = b.after_ending(A.RESUME_NOW, live_for=600.0, resumed=True, rand=0.7)
    assert delay == 0.0
    assert b2 == Backoff(P)


def test_full_jitter_grows_and_caps() -> None:
    b = Backoff(P)
    delays = []
    for _ in range(10):
        b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=False, rand=0.999999)
        assert d is not None
        delays.append(d)
    bases = [min(30.0, P.initial * 2**i) for i in range(10)]
    assert [round(d, 3) for d in delays] == [round(0.999999 * x, 3) for x in bases]
    assert b.attempt == 10


def test_budget_exhausted_gives_up() -> None:
    b = Backoff(P)
    for _ in range(P.max_attempts):
        b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=False, rand=0.5)
        assert d is not None
    b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=False, rand=0.5)
    assert d is None


def test_fatal_gives_up() -> None:
    _, d = Backoff(P).after_ending(A.FATAL, live_for=300.0, resumed=True, rand=0.1)
    assert d is None


def test_accept_then_close_does_not_hot_loop() -> None:
    # The server accepts the setup and closes with 1000 at once, again and again.
    b = Backoff(P)
    b, d1 = b.after_ending(A.RESUME_NOW, live_for=0.01, resumed=True, rand=0.5)
    b, d2 = b.after_ending(A.RESUME_NOW, live_for=0.01, resumed=True, rand=0.5)
    b, d3 = b.after_ending(A.RESUME_NOW, live_for=0.01, resumed=True, rand=0.5)
    assert d1 == 0.0  # the first one may be a fluke: resume at once
    assert d2 == pytest.approx(0.5 * P.initial * 2)
    assert d3 == pytest.approx(0.5 * P.initial * 4)


def test_healthy_but_unstable_resume_now_is_immediate_and_not_a_failure() -> None:
    # Neither spent nor reset: the incident's earlier failures still count.
    b, d = Backoff(P, attempt=3).after_ending(A.RESUME_NOW, live_for=5.0, resumed=True, rand=0.5)
    assert d == 0.0 and b.attempt == 3


def test_quota_backoff_is_minutes_and_doubles() -> None:
    b = Backoff(P)
    lows = []
    for _ in range(6):
        b, d = b.after_ending(A.LONG_BACKOFF, live_for=None, resumed=False, rand=0.0)
        lows.append(d)
    assert lows == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    _, d = Backoff(P, quota_attempt=20).after_ending(A.LONG_BACKOFF, live_for=None, resumed=False, rand=0.9999)
    assert d is not None and 300.0 <= d <= 600.0


def test_failed_resumes_drive_a_fresh_session() -> None:
    b = Backoff(P)
    for _ in range(P.max_failed_resumes - 1):
        b, _ = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=True, rand=0.5)
        assert not b.must_go_fresh()
    b, _ = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=True, rand=0.5)
    assert b.must_go_fresh()
    # A fresh attempt does not count as a failed resume; reaching live clears it.
    b, _ = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=None, resumed=False, rand=0.5)
    assert b.must_go_fresh()
    b, _ = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=0.5, resumed=False, rand=0.5)
    assert not b.must_go_fresh() and b.failed_resumes == 0


def test_reset_only_after_stable_period() -> None:
    b = Backoff(P, attempt=5, quota_attempt=2)
    b2, _ = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=P.stable_after - 0.001, resumed=True, rand=0.5)
    assert b2.attempt == 6 and b2.quota_attempt == 2
    b3, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=P.stable_after, resumed=True, rand=0.5)
    assert b3.attempt == 1 and b3.quota_attempt == 0
    assert d == pytest.approx(0.5 * P.initial)  # first failure of a new incident


def test_rand_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(P).after_ending(A.RESUME_NOW, live_for=None, resumed=False, rand=1.0)


# --- properties -----------------------------------------------------------------------------

policies = st.builds(
    BackoffPolicy,
    initial=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 4.0),
    cap=st.floats(5.0, 120.0),
    stable_after=st.floats(1.0, 60.0),
    quick_failure=st.floats(0.1, 1.0),
    max_attempts=st.integers(0, 30),
    quota_initial=st.floats(1.0, 120.0),
    quota_cap=st.floats(120.0, 1200.0),
    max_failed_resumes=st.integers(1, 5),
)
actions = st.sampled_from(Action)
live = st.one_of(st.none(), st.floats(0.0, 10_000.0, allow_nan=False))
rands = st.floats(0.0, 1.0, exclude_max=True)
endings = st.tuples(actions, live, st.booleans(), rands)


def _unstable(p: BackoffPolicy) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), st.floats(0.0, p.stable_after, exclude_max=True))


@given(p=policies, seq=st.lists(endings, max_size=60))
def test_delays_within_bounds(p: BackoffPolicy, seq: list) -> None:
    b = Backoff(p)
    for action, live_for, resumed, rand in seq:
        b, d = b.after_ending(action, live_for=live_for, resumed=resumed, rand=rand)
        if d is None:
            b = Backoff(p)  # the caller gives up; start a new session
            continue
        assert math.isfinite(d)
        if action is A.LONG_BACKOFF:
            assert p.quota_initial / 2 <= d <= p.quota_cap
        else:
            assert 0.0 <= d <= p.cap


@given(p=policies, seq=st.lists(endings, min_size=1, max_size=60))
def test_counters_reset_only_after_stable(p: BackoffPolicy, seq: list) -> None:
    b = Backoff(p)
    for action, live_for, resumed, rand in seq:
        nb, d = b.after_ending(action, live_for=live_for, resumed=resumed, rand=rand)
        stable = live_for is not None and live_for >= p.stable_after
        if not stable:
            assert nb.attempt >= b.attempt
            assert nb.quota_attempt >= b.quota_attempt
            if live_for is None:
                assert nb.failed_resumes >= b.failed_resumes
        if d is None:
            nb = Backoff(p)
        b = nb


@given(p=policies, data=st.data())
def test_gives_up_within_budget(p: BackoffPolicy, data: st.DataObject) -> None:
    # Any sequence of failures with no stable connection: at most max_attempts + 1 attempts.
    # (A healthy planned ending, live >= quick_failure, is not a failure and is left out.)
    b = Backoff(p)
    attempts = 1  # the first connection
    while True:
        action = data.draw(actions)
        live_for = data.draw(_unstable(p))
        if action in (A.RESUME_NOW, A.FRESH_SESSION) and live_for is not None and live_for >= p.quick_failure:
            continue
        b, d = b.after_ending(action, live_for=live_for, resumed=data.draw(st.booleans()), rand=data.draw(rands))
        if d is None:
            break
        attempts += 1
        assert attempts <= p.max_attempts + 1
    assert attempts <= p.max_attempts + 1


@given(p=policies, data=st.data())
def test_quick_failures_get_at_most_one_zero_delay(p: BackoffPolicy, data: st.DataObject) -> None:
    # With rand > 0 (not denormal), a stream of quick failures (never live, or live < quick_failure) yields a
    # zero delay at most once - for its first ending - so accept-then-close cannot hot-loop.
    b = Backoff(p)
    zeros = []
    quick = st.one_of(st.none(), st.floats(0.0, p.quick_failure, exclude_max=True))
    for i in range(p.max_attempts + 2):
        action = data.draw(st.sampled_from([A.RESUME_NOW, A.FRESH_SESSION, A.RESUME_AFTER_BACKOFF, A.LONG_BACKOFF]))
        rand = data.draw(st.floats(1e-12, 1.0, exclude_max=True))  # > 0, no underflow
        b, d = b.after_ending(action, live_for=data.draw(quick), resumed=data.draw(st.booleans()), rand=rand)
        if d is None:
            break
        if d == 0.0:
            zeros.append(i)
    assert zeros in ([], [0])


@given(p=policies, seq=st.lists(endings, max_size=40))
def test_fatal_always_gives_up(p: BackoffPolicy, seq: list) -> None:
    b = Backoff(p)
    for action, live_for, resumed, rand in seq:
        b, d = b.after_ending(action, live_for=live_for, resumed=resumed, rand=rand)
        if action is A.FATAL:
            assert d is None
        if d is None:
            b = Backoff(p)


@given(p=policies, n=st.integers(1, 200), live=st.floats(0, 1))
def test_healthy_rotations_never_exhaust_the_budget(p: BackoffPolicy, n: int, live: float) -> None:
    # goAway rotations of connections that were live for a while (but less than stable_after)
    # are planned endings: however many, the session keeps going, with no delay.
    live_for = p.quick_failure + live * max(0.0, p.stable_after - p.quick_failure)
    b = Backoff(p)
    for _ in range(n):
        b, d = b.after_ending(A.RESUME_NOW, live_for=live_for, resumed=True, rand=0.5)
        assert d == 0.0
    assert b.attempt == 0
