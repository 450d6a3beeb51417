"""A refused credential: fatal for a key, one immediate retry for a token that can be refreshed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.upstream import FATAL_CAUSES, Action, Context, Ending, EndingKind, classify

REJECTED_401 = Ending(EndingKind.REJECTED, http_status=401)


def test_a_key_refused_with_401_is_fatal():
    verdict = classify(REJECTED_401, Context(handle_sent=True))
    assert (verdict.action, verdict.cause) == (Action.FATAL, "bad_key")


def test_a_refreshable_credential_refused_with_401_is_retried_at_once():
    verdict = classify(REJECTED_401, Context(handle_sent=True, credential_refreshable=True))
    assert (verdict.action, verdict.cause) == (Action.RESUME_NOW, "credential_refresh")


def test_403_stays_fatal_even_for_a_refreshable_credential():
    """403 is a permission problem (wrong project, missing role): a new token does not fix it."""
    ending = Ending(EndingKind.REJECTED, http_status=403)
    verdict = classify(ending, Context(handle_sent=False, credential_refreshable=True))
    assert verdict.action is Action.FATAL and verdict.cause in FATAL_CAUSES


@given(status=st.integers(100, 599), handle=st.booleans())
def test_refreshable_changes_only_the_401_row(status, handle):
    ending = Ending(EndingKind.REJECTED, http_status=status)
    plain = classify(ending, Context(handle_sent=handle))
    refreshable = classify(ending, Context(handle_sent=handle, credential_refreshable=True))
    assert (plain == refreshable) is (status != 401)
