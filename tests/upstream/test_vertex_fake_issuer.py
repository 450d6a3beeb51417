"""The fake's Vertex path against a token issuer the test controls (issue #14).

The issuer is :class:`TokenServer`, the loopback OAuth endpoint google-auth calls through the
key file's ``token_uri``; its tokens expire in real seconds. The fake refuses an unknown or an
expired bearer token with HTTP 401 at the upgrade, as the real service does, and the daemon's
VertexCredentials (real google-auth) recovers with one refresh: the credential seam's 401 rule.
"""

from __future__ import annotations

import datetime

import pytest
import trio
from dialing import dial_once as _dial_once
from vertex_token_server import TokenServer

from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.fake.routing import bearer_status
from geminid.daemon.upstream import (
    DialAuth,
    Ending,
    EndingKind,
    Endpoint,
    VertexCredentials,
    open_link,
    vertex_model,
)
from geminid.daemon.upstream.link import Dial
from geminid.protocol import live

MODEL = vertex_model("gemini-3.8-live", "p", "us-central1")


class Presents:
    """Credentials that present exactly the bearer token given (the test says which)."""

    refreshable = True

    def __init__(self, token: str) -> None:
        self.token = token

    async def auth_for_dial(self) -> DialAuth:
        return DialAuth(headers=((b"authorization", b"Bearer " + self.token.encode()),))

    def invalidate(self) -> None:
        pass


async def dial_once(endpoint: Endpoint, credentials) -> Ending | None:
    return await _dial_once(endpoint, credentials, model=MODEL)


@pytest.fixture
def tokens():
    with TokenServer() as server:
        yield server


@pytest.fixture
async def fake(nursery, tokens):
    return await nursery.start(FakeUpstream(FakeOptions(bearer_check=tokens.valid, reply_pace=0.001)).serve)


def endpoint_of(fake: FakeUpstream) -> Endpoint:
    return Endpoint.vertex("p", "us-central1", base=f"ws://{fake.host}:{fake.port}")


def test_bearer_status_is_401_unless_the_issuer_says_valid():
    valid = {"good"}.__contains__
    assert bearer_status([(b"Authorization", b"Bearer good")], valid) is None
    assert bearer_status([(b"authorization", b"Bearer other")], valid) == 401
    assert bearer_status([(b"authorization", b"Token good")], valid) == 401
    assert bearer_status([(b"x-goog-api-key", b"good")], valid) == 401
    assert bearer_status([], valid) == 401


async def test_an_unknown_token_is_refused_with_401_at_the_upgrade(fake, tokens):
    ending = await dial_once(endpoint_of(fake), Presents("ya29.never-issued"))
    assert ending is not None and ending.kind is EndingKind.REJECTED and ending.http_status == 401
    (record,) = fake.connections
    assert record.status == 401 and not record.accepted


async def test_an_expired_token_is_refused_and_a_fresh_one_from_google_auth_passes(fake, tokens, tmp_path):
    tokens.expires_in = 1
    # A zero margin: the credentials keep the token until it has expired (the refused dial).
    creds = VertexCredentials.from_file(tokens.key_file(tmp_path), margin=datetime.timedelta(0))
    assert await dial_once(endpoint_of(fake), creds) is None
    first = tokens.issued[-1]
    await trio.sleep(1.2)  # real seconds: google-auth and the issuer use the wall clock
    assert not tokens.valid(first)
    ending = await dial_once(endpoint_of(fake), Presents(first))
    assert ending is not None and ending.http_status == 401
    # The daemon's rule after a 401: invalidate, refresh once, dial again.
    creds.invalidate()
    assert await dial_once(endpoint_of(fake), creds) is None
    assert tokens.calls == 2 and tokens.issued[-1] != first
    assert [r.status for r in fake.connections] == [101, 401, 101]


async def test_the_developer_path_ignores_the_issuer(fake, tokens):
    # The issuer guards Vertex only; the Developer API route keeps the api_key rule.
    dev = Endpoint.parse(fake.url())
    assert await dial_once(dev, Presents("any-key")) is None


async def test_with_a_key_too_the_issuer_alone_guards_vertex(nursery, tokens, tmp_path):
    """A fake holding an API key (the crash loop's) and an issuer: Vertex takes the issuer's
    bearer token, not the key; the Developer path still takes the key only."""
    fake = await nursery.start(FakeUpstream(FakeOptions(api_key="dev-key", bearer_check=tokens.valid,
                                                        reply_pace=0.001)).serve)
    creds = VertexCredentials.from_file(tokens.key_file(tmp_path))
    assert await dial_once(endpoint_of(fake), creds) is None
    ending = await dial_once(endpoint_of(fake), Presents("dev-key"))
    assert ending is not None and ending.http_status == 401
    dev = Endpoint.parse(fake.url())
    assert await dial_once(dev, Presents("dev-key")) is None
    ending = await dial_once(dev, Presents(tokens.issued[-1]))
    assert ending is not None and ending.http_status == 403
    assert [r.status for r in fake.connections] == [101, 401, 101, 403]


# --- the fake's lastConsumedClientMessageIndex conventions ----------------------------------------


async def indexes_over_two_connections(fake: FakeUpstream) -> list[list[int]]:
    """Send two turns, resume from the last handle, send one more: the last index of each connection."""
    from geminid.daemon.upstream import FixedKey

    dial = Dial(endpoint_of(fake), FixedKey("k"), 10, 10, 1 << 20)
    seen: list[list[int]] = []
    handle = None
    for turns in (2, 1):
        setup = live.setup("gemini-3.8-live", response_modalities=["TEXT"])
        setup["setup"]["sessionResumption"] = {"transparent": True, **({"handle": handle} if handle else {})}
        mine: list[int] = []
        async with trio.open_nursery() as nursery:
            link, _ = await open_link(nursery, dial, live.encode(setup))
            for i in range(turns):
                await link.send(live.encode(live.client_content(f"t{i}")))
                with trio.fail_after(5):
                    while True:
                        msg = await link.receive()
                        if msg.kind == "sessionResumptionUpdate" and msg.resumable and msg.new_handle:
                            handle = msg.new_handle
                            if msg.last_consumed_index is not None:
                                mine.append(msg.last_consumed_index)
                        if msg.turn_complete:
                            break
            with trio.move_on_after(0.3):  # the updates after the last reply
                while True:
                    msg = await link.receive()
                    if msg.kind == "sessionResumptionUpdate" and msg.new_handle:
                        handle = msg.new_handle if msg.resumable else handle
                        if msg.last_consumed_index is not None:
                            mine.append(msg.last_consumed_index)
            await link.close()
            nursery.cancel_scope.cancel()
        seen.append([max(mine)])
    return seen


@pytest.mark.parametrize(("convention", "expected"), [
    ("0-connection", [[1], [0]]),
    ("1-connection", [[2], [1]]),
    ("0-session", [[1], [2]]),
    ("1-session", [[2], [3]]),
])
async def test_the_fake_offers_each_index_convention(nursery, convention, expected):
    from geminid.daemon.fake import text_catalogue

    fake = await nursery.start(FakeUpstream(FakeOptions(
        catalogue=text_catalogue(), reply_pace=0.001, consumed_index=convention,
    )).serve)
    assert await indexes_over_two_connections(fake) == expected
