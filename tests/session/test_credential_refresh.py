"""A refused credential that can be fetched anew (a token, not a key) is refreshed once per
incident (issue #14 seam, classify's ``credential_refreshable``): the 401 is retried at once with
``Credentials.invalidate()`` called, and a second 401 in the same incident is the fatal
``bad_key``. A real session against the fake, which refuses the upgrade with 401 (as the service
does for an expired token) and checks the key it is shown."""

from __future__ import annotations

from session_harness import open_core

from geminid.daemon.fake import FakeOptions, text_catalogue
from geminid.daemon.upstream import DialAuth
from geminid.daemon.upstream.auth import API_KEY_HEADER


class TokenSource:
    """Hands out the tokens in order; ``invalidate`` moves to the next one (a refresh)."""

    refreshable = True

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.invalidated = 0

    async def auth_for_dial(self) -> DialAuth:
        return DialAuth(headers=((API_KEY_HEADER, self.tokens[0].encode()),))

    def invalidate(self) -> None:
        self.invalidated += 1
        if len(self.tokens) > 1:
            self.tokens.pop(0)


async def test_an_expired_token_is_refreshed_once_and_the_session_goes_live(state_dir):
    tokens = TokenSource("expired", "right-key")
    async with open_core(state_dir, fake_options=FakeOptions(api_key="right-key", catalogue=text_catalogue()), credentials=tokens) as core:
        core.fake.refuse_next(1, status=401)
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        core.nursery.cancel_scope.cancel()
    assert tokens.invalidated == 1 and core.fake.dials == 2
    assert "failed" not in rec.statuses() and "backoff" not in rec.statuses()  # retried at once


async def test_a_second_refusal_in_the_same_incident_is_fatal(state_dir):
    tokens = TokenSource("revoked", "also-revoked", "right-key")
    async with open_core(state_dir, fake_options=FakeOptions(api_key="right-key", catalogue=text_catalogue()), credentials=tokens) as core:
        core.fake.refuse_next(2, status=401)
        rec = await core.open()
        await rec.wait(lambda r: "failed" in r.statuses())
        core.nursery.cancel_scope.cancel()
    assert tokens.invalidated == 1 and core.fake.dials == 2
    assert [p["cause"] for p in rec.of("session.status") if p["status"] == "failed"] == ["bad_key"]
