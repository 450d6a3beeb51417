"""Reconnection backoff: pure, configurable, property-tested.

The policy object is the configuration; the decision logic lives in pure functions below it
(no clock, no randomness of its own: callers pass elapsed times and a random draw), so that the
rules can be tested exhaustively with hypothesis and the session actor stays a thin caller.
"""

from __future__ import annotations

import attrs

from .classify import Action


@attrs.frozen
class BackoffPolicy:
    """How a session retries after an ending.

    Defaults follow what users of the real service converged on (GEMINI_LIVE.md §6):
    full-jitter exponential from 0.4 s doubling to a 30 s cap, reset only after a connection
    has been healthy for ``stable_after`` seconds, and a minutes-long backoff for quota errors.
    """

    #: 0.4 rather than 0.5: the median first retry after an unplanned drop is then ~200 ms
    #: (the goal is a p50 under 250 ms from drop to resumed), still well spread by the jitter.
    initial: float = 0.4
    factor: float = 2.0
    cap: float = 30.0
    #: A connection must stay live this long before the failure counter resets.
    stable_after: float = 10.0
    #: A connection that ends sooner than this after setupComplete counts as a quick failure:
    #: even a "resume now" ending then waits, so that accept-then-close cannot hot-loop.
    quick_failure: float = 2.0
    #: Failed attempts allowed in one incident before the session goes to ``failed``.
    max_attempts: int = 12
    #: Quota (RESOURCE_EXHAUSTED, HTTP 429) backoff: starts here, doubles, capped.
    quota_initial: float = 60.0
    quota_cap: float = 600.0
    #: Failed resumes in a row after which the handle is dropped and a fresh session started.
    max_failed_resumes: int = 3
    #: goAway rotations are not failures, so they do not spend attempts; instead at most
    #: ``rotation_limit`` rotation dials in any ``rotation_window`` seconds (see RotationLimit).
    rotation_limit: int = 6
    rotation_window: float = 60.0


# --- Decision logic ------------------------------------------------------------------------
#
# Properties (proved by tests/core/test_backoff.py with hypothesis):
#
# * every delay is within [0, policy.cap], or [quota_initial/2, quota_cap] for LONG_BACKOFF;
# * the counters go back to zero only through an ending with ``live_for >= stable_after``
#   (failed_resumes also resets when a connection reaches live, as the rule says);
# * every ending that does not follow a stable connection counts one attempt, so any sequence
#   of endings without a stable connection gives up (returns None) by the
#   (max_attempts + 1)-th ending: at most max_attempts + 1 connection attempts per incident;
# * a zero delay is only given for a RESUME_NOW / FRESH_SESSION ending that was healthy
#   (live >= quick_failure) or the first failure of an incident. So a stream of quick
#   failures gets at most one zero delay (the first); after it, every delay is the full-jitter
#   ``rand * base`` with ``base >= initial`` - non-zero whenever ``rand > 0``. (Full jitter
#   itself can draw 0; with rand from random.random() that has probability 2**-53 per draw,
#   and the attempt budget bounds the loop regardless.)


@attrs.frozen
class Backoff:
    """The retry state of one session. Immutable: ``after_ending`` returns the next state.

    Pure on purpose: the caller supplies how long the connection was live and a uniform random
    draw, so that the rules can be checked exhaustively and replayed from logs.
    """

    policy: BackoffPolicy
    #: Consecutive failures in the current incident.
    attempt: int = 0
    #: Consecutive quota (LONG_BACKOFF) endings in the current incident.
    quota_attempt: int = 0
    #: Resumes in a row that never reached live (setupComplete).
    failed_resumes: int = 0
    #: The failure budget spent: endings since the last progress (see ``after_ending``).
    #: Without progress it moves exactly like ``attempt``; ``attempt`` drives the delay.
    spent: int = 0

    def after_ending(
        self, action: Action, *, live_for: float | None, resumed: bool, rand: float, progress: bool = False
    ) -> tuple[Backoff, float | None]:
        """Next state and the delay before the next attempt; ``None`` means give up.

        ``live_for``: seconds the ended connection was live after setupComplete (None: it
        never reached live). ``resumed``: the attempt's setup carried a handle. ``rand``: a
        uniform draw in [0, 1). ``progress``: the connection reached live (the session core
        says so: the conversation was resumed or carried on). Progress refunds the failure
        budget, so a link that drops every few seconds but recovers every time never fails;
        the delay still grows for quick deaths (live < ``quick_failure``), so a link that dies
        right after setup is redialled at a bounded rate, not in a tight loop.
        """
        if not 0.0 <= rand < 1.0:
            raise ValueError(f"rand must be in [0, 1), got {rand!r}")
        p = self.policy
        state = self
        stable = live_for is not None and live_for >= p.stable_after
        quick = live_for is None or live_for < p.quick_failure
        if stable:
            # Reset only after setupComplete *and* a healthy period (GEMINI_LIVE.md §6).
            state = attrs.evolve(state, attempt=0, quota_attempt=0, failed_resumes=0, spent=0)
        if progress:
            # The budget is for incidents that make no progress; a connection that lived past
            # the quick-failure mark also ends the delay growth (this drop starts afresh).
            state = attrs.evolve(state, spent=0, attempt=state.attempt if quick else 0)
        if live_for is not None:
            state = attrs.evolve(state, failed_resumes=0)
        elif resumed:
            state = attrs.evolve(state, failed_resumes=state.failed_resumes + 1)

        if action is Action.FATAL:
            return state, None

        first = state.attempt == 0
        planned = action in (Action.RESUME_NOW, Action.FRESH_SESSION)
        # A planned ending (a goAway rotation, the lifetime cut, a clean 1000) of a connection
        # that was healthy is not a failure: it neither resets nor spends the budget, so a
        # session rotated every minute lives for ever. A planned ending that came quickly does
        # count, so that accept-then-close cannot keep us busy for ever; and only a stable
        # connection resets the counter.
        if stable and planned:
            count = 0
        elif planned and not quick:
            count = None  # neither spent nor reset
        else:
            count = 1
        attempt = 0 if count == 0 else state.attempt + (count or 0)
        spent = 0 if count == 0 else state.spent + (count or 0)
        if spent > p.max_attempts:
            return attrs.evolve(state, attempt=attempt, spent=spent), None
        nxt = attrs.evolve(state, attempt=attempt, spent=spent)

        if planned:
            if not quick or first:
                return nxt, 0.0
            # Quick failure of a "resume now": accept-then-close must not hot-loop.
            return nxt, _full_jitter(p, state.attempt, rand)
        if action is Action.LONG_BACKOFF:
            # Equal jitter: never less than half the base, so quota waits stay minutes long.
            base = _grow(p.quota_initial, 2.0, state.quota_attempt, p.quota_cap)
            delay = base / 2.0 + rand * base / 2.0
            return attrs.evolve(nxt, quota_attempt=state.quota_attempt + 1), delay
        # RESUME_AFTER_BACKOFF
        return nxt, _full_jitter(p, state.attempt, rand)

    def after_rotation(self, *, live_for: float) -> Backoff:
        """A goAway rotation (planned by the server) ended a live connection: it is never a
        failure, however soon it came. It refunds the budget like any progress; the dial rate
        of a server that sends goAway in a loop is bounded by :class:`RotationLimit` instead."""
        p = self.policy
        if live_for >= p.stable_after:
            return attrs.evolve(self, attempt=0, quota_attempt=0, failed_resumes=0, spent=0)
        attempt = self.attempt if live_for < p.quick_failure else 0
        return attrs.evolve(self, attempt=attempt, failed_resumes=0, spent=0)

    def must_go_fresh(self) -> bool:
        """Too many resumes in a row failed before live: drop the handle (§6 1011 row)."""
        return self.failed_resumes >= self.policy.max_failed_resumes


@attrs.frozen
class RotationLimit:
    """The rate limit on goAway rotations: at most ``per_window`` rotation dials in any
    ``window`` seconds; the next one waits until the oldest of them leaves the window.

    Pure: the caller passes trio time. A server that sends goAway right after every setup thus
    gets ``per_window`` quick rotations, then one every ``window / per_window`` seconds on
    average, and the session never fails for it (rotations do not spend the failure budget).
    """

    per_window: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    window: float = 60.0
    #: The times of the last ``per_window`` rotation dials (trio time), oldest first.
    recent: tuple[float, ...] = ()

    def after_rotation(self, now: float) -> tuple[RotationLimit, float]:
        """The delay before the dial that follows a rotation at ``now``, and the next state."""
        at = now
        if len(self.recent) >= self.per_window:
            at = max(now, self.recent[-self.per_window] + self.window)
        return attrs.evolve(self, recent=(*self.recent, at)[-self.per_window:]), at - now

    def describe(self) -> str:
        """The rule in words, for the status of a rate-limited rotation."""
        return f"rotation rate limit: {self.per_window} rotations in {self.window:g} s"


def _full_jitter(p: BackoffPolicy, attempt: int, rand: float) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, initial * factor**attempt))."""
    return rand * _grow(p.initial, p.factor, attempt, p.cap)


def _grow(initial: float, factor: float, n: int, cap: float) -> float:
    """min(cap, initial * factor**n), without overflowing for huge n."""
    try:
        return min(cap, initial * factor ** min(n, 4096))
    except OverflowError:
        return cap
