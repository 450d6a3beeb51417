"""Ephemeral tokens: ``Authorization: Token``, re-read from the file before every dial; the Constrained path."""

from __future__ import annotations

import io

import pytest
import structlog
from dialing import dial_once

from geminid.daemon import logsetup
from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.upstream import (
    CredentialError,
    Ending,
    EndingKind,
    Endpoint,
    EphemeralToken,
)

TOKEN_A = "auth_tokens/first-token-aaaaaaaa"
TOKEN_B = "auth_tokens/second-token-bbbbbbb"


def token_of(auth) -> str:
    (name, value), = auth.headers
    assert name == b"authorization" and value.startswith(b"Token ")
    return value.removeprefix(b"Token ").decode()


async def test_the_file_is_re_read_before_every_dial(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN_A + "\n")
    creds = EphemeralToken(path)
    assert creds.refreshable is True
    assert token_of(await creds.auth_for_dial()) == TOKEN_A
    path.write_text(TOKEN_B)  # the backend rotated it
    assert token_of(await creds.auth_for_dial()) == TOKEN_B
    creds.invalidate()  # nothing cached: still the file's content
    assert token_of(await creds.auth_for_dial()) == TOKEN_B


@pytest.mark.parametrize(("content", "needle"), [(None, "cannot read it"), ("  \n", "one token"),
                                                 ("a b", "one token")])
async def test_a_missing_or_malformed_file_is_a_credential_error_naming_it(tmp_path, content, needle):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CredentialError) as info:
        await EphemeralToken(path).auth_for_dial()
    assert str(path) in str(info.value) and needle in str(info.value)


async def test_tokens_are_redacted_and_never_in_repr(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN_A)
    creds = EphemeralToken(path)
    logsetup.clear_secrets()
    buf = io.StringIO()
    logsetup.configure_logging("debug", "json", stream=buf)
    try:
        auth = await creds.auth_for_dial()
        structlog.get_logger("test").info("careless", value=token_of(auth))
        assert TOKEN_A not in repr(creds) and TOKEN_A not in repr(auth)
    finally:
        logsetup.configure_logging("info", "json", stream=io.StringIO())
        logsetup.clear_secrets()
    assert "careless" in buf.getvalue() and TOKEN_A not in buf.getvalue()


async def _dial(endpoint: Endpoint, credentials) -> Ending | None:
    return await dial_once(endpoint, credentials)


async def test_the_token_reaches_the_fakes_constrained_route_and_a_rotation_is_used(tmp_path, nursery):
    fake = await nursery.start(FakeUpstream(FakeOptions(api_key=TOKEN_B, reply_pace=0.001)).serve)
    endpoint = Endpoint.ephemeral(base=f"ws://{fake.host}:{fake.port}")
    path = tmp_path / "token"
    path.write_text(TOKEN_A)
    creds = EphemeralToken(path)
    ending = await _dial(endpoint, creds)
    assert ending is not None and ending.kind is EndingKind.REJECTED and ending.http_status == 403
    path.write_text(TOKEN_B)
    assert await _dial(endpoint, creds) is None
    assert [c.auth_ok for c in fake.connections] == [False, True]
    assert fake.connections[1].path.endswith("v1alpha.GenerativeService.BidiGenerateContentConstrained")


async def test_an_unreadable_token_file_is_a_network_ending_not_a_crash(tmp_path):
    ending = await _dial(Endpoint.ephemeral(base="ws://127.0.0.1:9"), EphemeralToken(tmp_path / "absent"))
    assert ending is not None and ending.kind is EndingKind.NETWORK
    assert ending.reason.startswith("credential: upstream.auth_token_file")
