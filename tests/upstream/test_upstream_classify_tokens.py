"""Ephemeral-token refusals (GEMINI_LIVE_2026.md §6, UNCONFIRMED codes) get their own causes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.upstream import (
    CREDENTIAL_CAUSES,
    FATAL_CAUSES,
    Action,
    Context,
    Ending,
    EndingKind,
    classify,
)

TRACE = "Request trace id: 9f3a0c, "
EXHAUSTED = ["Token has been used too many times", "token has been USED TOO MANY TIMES."]
EXPIRED = ["Token has expired", "Auth token expired.", "Invalid or expired token", "TOKEN_EXPIRED"]


def closed(code: int, reason: str) -> Ending:
    return Ending(EndingKind.CLOSED, code=code, reason=reason)


@pytest.mark.parametrize("code", [1008, 1011])
@pytest.mark.parametrize(("reason", "cause"), [(r, "token_exhausted") for r in EXHAUSTED]
                         + [(r, "token_expired") for r in EXPIRED])
@pytest.mark.parametrize("handle_sent", [False, True])
def test_a_refreshable_token_is_retried_at_once_with_its_own_cause(code, reason, cause, handle_sent):
    ctx = Context(handle_sent=handle_sent, credential_refreshable=True)
    assert classify(closed(code, TRACE + reason), ctx) == classify(closed(code, reason), ctx)
    verdict = classify(closed(code, TRACE + reason), ctx)
    assert (verdict.action, verdict.cause) == (Action.RESUME_NOW, cause)
    assert cause in CREDENTIAL_CAUSES and cause not in FATAL_CAUSES


@pytest.mark.parametrize("code", [1008, 1011])
@pytest.mark.parametrize("reason", EXHAUSTED + EXPIRED)
def test_after_the_refresh_or_for_a_key_it_is_bounded_retries_not_fatal(code, reason):
    verdict = classify(closed(code, reason), Context(handle_sent=True))
    assert verdict.action is Action.RESUME_AFTER_BACKOFF
    assert verdict.cause in ("token_exhausted", "token_expired")


def test_a_deadline_is_still_a_deadline_and_a_stale_handle_still_wins():
    ctx = Context(handle_sent=True, credential_refreshable=True)
    assert classify(closed(1011, "Deadline expired before operation could complete."), ctx).cause == "deadline"
    verdict = classify(closed(1008, "session not found; token expired"), ctx)
    assert (verdict.action, verdict.cause) == (Action.FRESH_SESSION, "stale_handle")


@given(code=st.sampled_from([1008, 1011]), reason=st.text(max_size=60), refreshable=st.booleans())
def test_token_causes_only_for_token_reasons(code, reason, refreshable):
    verdict = classify(closed(code, reason), Context(handle_sent=True, credential_refreshable=refreshable))
    low = reason.lower()
    if verdict.cause in ("token_exhausted", "token_expired"):
        assert "token" in low or "too many" in low or "uses" in low
        assert verdict.action is (Action.RESUME_NOW if refreshable else Action.RESUME_AFTER_BACKOFF)
    else:
        # Without a token reason the credential flag changes nothing for a close.
        assert verdict == classify(closed(code, reason), Context(handle_sent=True))
