"""The credentials seam: what each dial presents comes from the credentials, asked afresh per dial."""

from __future__ import annotations

import attrs
import pytest
import trio
from dialing import dial_once

from geminid.daemon.config import Secret
from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.upstream import (
    API_KEY_HEADER,
    ApiKey,
    Credentials,
    DialAuth,
    Ending,
    EndingKind,
    Endpoint,
    FixedKey,
)
from geminid.protocol import live

MODEL = "models/gemini-3.8-live"
SETUP = live.encode(live.setup(MODEL))


async def _dial(url: str, credentials: Credentials) -> Ending | None:
    """One real dial to ``url``; None when it reached setupComplete, else how it ended."""
    return await dial_once(Endpoint.parse(url), credentials, timeout=5, setup=SETUP)


@pytest.fixture
async def fake(nursery):
    return await nursery.start(FakeUpstream(FakeOptions(api_key="key-one", reply_pace=0.001)).serve)


async def test_api_key_is_sent_in_the_key_header():
    auth = await ApiKey(Secret("abc")).auth_for_dial()
    assert auth == DialAuth(headers=((API_KEY_HEADER, b"abc"),))
    assert await ApiKey(None).auth_for_dial() == DialAuth()
    assert await FixedKey("xyz").auth_for_dial() == DialAuth(headers=((API_KEY_HEADER, b"xyz"),))


async def test_a_rotated_key_is_presented_at_the_next_dial(fake):
    key = ApiKey(Secret("key-one"))
    assert await _dial(fake.url(), key) is None
    assert key.rotate(Secret("key-two")) is True
    ending = await _dial(fake.url(), key)
    assert ending is not None and ending.kind is EndingKind.REJECTED and ending.http_status == 403
    assert key.rotate(Secret("key-one")) is True
    assert await _dial(fake.url(), key) is None
    assert [c.auth_ok for c in fake.connections] == [True, False, True]


async def test_rotate_reports_whether_the_key_changed():
    key = ApiKey(Secret("a"))
    assert key.rotate(Secret("a")) is False
    assert key.rotate(None) is True
    assert key.rotate(None) is False


async def test_no_key_presents_nothing_and_is_refused(fake):
    ending = await _dial(fake.url(), ApiKey(None))
    assert ending is not None and ending.http_status == 401


@attrs.define
class _QueryToken:
    """A credential carried in the URL, fetched per dial (the shape of a token with a query form)."""

    token: str
    dials: int = 0
    refreshable = True

    async def auth_for_dial(self) -> DialAuth:
        self.dials += 1
        await trio.lowlevel.checkpoint()  # a real fetch awaits I/O here, inside the connect timeout
        return DialAuth(query=(("key", self.token),))

    def invalidate(self) -> None:
        self.token = ""


async def test_query_parameters_and_a_call_per_dial(fake):
    token = _QueryToken("key-one")
    assert await _dial(fake.url(), token) is None
    assert await _dial(fake.url(), token) is None
    assert token.dials == 2
    token.invalidate()
    ending = await _dial(fake.url(), token)
    assert ending is not None and ending.http_status == 401


async def test_credentials_are_awaited_inside_the_connect_timeout(autojump_clock):
    class Hangs:
        refreshable = True

        async def auth_for_dial(self) -> DialAuth:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        def invalidate(self) -> None:
            pass

    ending = await _dial("ws://127.0.0.1:9/x", Hangs())
    assert ending is not None and ending.kind is EndingKind.CONNECT_TIMEOUT


def test_no_secret_in_any_repr():
    for obj in (ApiKey(Secret("s3cr3t")), FixedKey("s3cr3t"), DialAuth(headers=((API_KEY_HEADER, b"s3cr3t"),),
                                                                          query=(("key", "s3cr3t"),))):
        assert "s3cr3t" not in repr(obj) and "s3cr3t" not in str(obj)


def test_the_link_knows_no_header_name():
    """The key header is written once, in auth.py; the link only forwards what credentials give."""
    from pathlib import Path

    import geminid.daemon.upstream.link as link

    assert "goog" not in Path(link.__file__).read_text()
