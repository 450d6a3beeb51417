"""Reconnection backoff: pure, configurable, property-tested.

The policy object is the configuration; the decision logic lives in pure functions below it
(no clock, no randomness of its own: callers pass elapsed times and a random draw), so that the
rules can be tested exhaustively with hypothesis and the session actor stays a thin caller.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class BackoffPolicy:
    """How a session retries after an ending.

    Defaults follow what users of the real service converged on (GEMINI_LIVE.md §6):
    full-jitter exponential from 0.5 s doubling to a 30 s cap, reset only after a connection
    has been healthy for ``stable_after`` seconds, and a minutes-long backoff for quota errors.
    """

    initial: float = 0.5
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
