"""The failure budget is refunded by progress; the dial rate stays bounded (issue #11 points 1, 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.upstream import Action, Backoff, BackoffPolicy
from geminid.daemon.upstream.backoff import RotationLimit

A = Action
P = BackoffPolicy()

policies = st.builds(
    BackoffPolicy,
    initial=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 4.0),
    cap=st.floats(5.0, 120.0),
    stable_after=st.floats(1.0, 60.0),
    quick_failure=st.floats(0.1, 1.0),
    max_attempts=st.integers(0, 30),
    max_failed_resumes=st.integers(1, 5),
)
retryable = st.sampled_from([A.RESUME_NOW, A.FRESH_SESSION, A.RESUME_AFTER_BACKOFF, A.LONG_BACKOFF])
rands = st.floats(0.0, 1.0, exclude_max=True)


def test_a_drop_every_few_seconds_after_a_resume_never_gives_up() -> None:
    b = Backoff(P)
    for _ in range(1000):
        b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=3.0, resumed=True, rand=0.999, progress=True)
        assert d is not None and d <= P.initial  # each drop is the first failure of its incident
    assert b.spent == 1


def test_without_progress_the_same_drops_give_up() -> None:
    b, d = Backoff(P), 0.0
    for _ in range(P.max_attempts + 1):
        b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=3.0, resumed=True, rand=0.5)
    assert d is None


def test_quick_deaths_after_setup_keep_growing_the_delay() -> None:
    b = Backoff(P)
    delays = []
    for _ in range(8):
        b, d = b.after_ending(A.RESUME_AFTER_BACKOFF, live_for=0.05, resumed=True, rand=0.5, progress=True)
        assert d is not None
        delays.append(d)
    assert delays == pytest.approx([0.5 * min(P.cap, P.initial * 2**i) for i in range(8)])


@given(p=policies, data=st.data())
def test_the_budget_is_spent_only_by_endings_without_progress(p: BackoffPolicy, data: st.DataObject) -> None:
    # Any mix of endings: the session gives up (non-fatally) only after more than max_attempts
    # endings in a row without progress; with progress in between it never does.
    b = Backoff(p)
    since_progress = 0
    for _ in range(data.draw(st.integers(1, 80))):
        action = data.draw(retryable)
        progress = data.draw(st.booleans())
        live_for = data.draw(st.floats(0.0, p.stable_after * 2)) if progress else None
        b, d = b.after_ending(action, live_for=live_for, resumed=data.draw(st.booleans()),
                              rand=data.draw(rands), progress=progress)
        since_progress = 1 if progress else since_progress + 1
        assert b.spent <= since_progress
        if d is None:
            assert since_progress > p.max_attempts
            return


@given(p=policies, data=st.data())
def test_quick_deaths_with_progress_get_at_most_one_zero_delay(p: BackoffPolicy, data: st.DataObject) -> None:
    # The dial rate stays bounded: a link that dies right after setup again and again, each
    # time having reached live, is redialled at once at most for the first death; every later
    # delay is the full-jitter draw over a base that grows to the cap.
    b = Backoff(p)
    zeros = []
    quick = st.floats(0.0, p.quick_failure, exclude_max=True)
    for i in range(40):
        rand = data.draw(st.floats(1e-12, 1.0, exclude_max=True))
        b, d = b.after_ending(data.draw(retryable), live_for=data.draw(quick), resumed=True, rand=rand, progress=True)
        if d is None:  # only with max_attempts == 0
            assert p.max_attempts == 0
            return
        if d == 0.0:
            zeros.append(i)
    assert zeros in ([], [0])
    assert b.attempt >= 39  # the growth never reset


@given(
    per_window=st.integers(1, 10), window=st.floats(1.0, 300.0),
    gaps=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=80),
)
def test_rotations_never_exceed_the_rate_limit(per_window: int, window: float, gaps: list[float]) -> None:
    limit = RotationLimit(per_window=per_window, window=window)
    now, dials, delays = 0.0, [], []
    for gap in gaps:
        now += gap  # a rotation comes some time after the previous dial
        limit, delay = limit.after_rotation(now)
        assert delay >= 0.0
        delays.append(delay)
        now += delay
        dials.append(now)
    for i in range(len(dials) - per_window):
        assert dials[i + per_window] - dials[i] >= window - 1e-9
    # ... and it never waits when there is room: the first per_window rotations are immediate.
    assert delays[:per_window] == [0.0] * len(delays[:per_window])


def test_a_rotation_is_never_a_failure() -> None:
    b = Backoff(P, attempt=5, spent=11)
    b = b.after_rotation(live_for=0.01)
    assert b.spent == 0 and b.attempt == 5  # quick: the growth stays, the budget is refunded
    assert b.after_rotation(live_for=3.0).attempt == 0
