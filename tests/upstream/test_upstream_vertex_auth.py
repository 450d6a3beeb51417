"""VertexCredentials with the real google-auth: a generated service-account key, a loopback token endpoint.

Time: the credentials take ``now`` as a parameter, and google-auth stamps ``expiry`` with
``google.auth._helpers.utcnow``; the ``clock`` fixture drives both from one offset clock, so a
test moves time forward instead of sleeping.
"""

from __future__ import annotations

import datetime
import io
import json
import socket

import pytest
import structlog
import trio
import trio.testing
from dialing import dial_once
from vertex_token_server import TokenServer

from geminid.daemon import logsetup
from geminid.daemon.errors import ConfigError
from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.upstream import (
    Ending,
    EndingKind,
    Endpoint,
    VertexCredentials,
    auth_google,
    vertex_model,
)


class Clock:
    """UTC as the test says: a fixed start plus an offset the test moves."""

    def __init__(self) -> None:
        self.start = auth_google.utcnow()
        self.offset = datetime.timedelta()

    def __call__(self) -> datetime.datetime:
        return self.start + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += datetime.timedelta(seconds=seconds)


@pytest.fixture
def server():
    with TokenServer() as s:
        yield s


@pytest.fixture
def clock(monkeypatch):
    import google.auth._helpers

    c = Clock()
    monkeypatch.setattr(google.auth._helpers, "utcnow", c)
    return c


@pytest.fixture
def creds(server, clock, tmp_path):
    return VertexCredentials.from_file(server.key_file(tmp_path), now=clock)


def bearer(auth) -> str:
    (name, value), = auth.headers
    assert name == b"authorization" and value.startswith(b"Bearer ")
    return value.removeprefix(b"Bearer ").decode()


async def test_the_first_dial_fetches_a_token_and_later_dials_reuse_it(server, creds, clock):
    first = bearer(await creds.auth_for_dial())
    assert server.calls == 1 and server.bad_assertions == 0
    assert first == server.issued[0]
    clock.advance(30 * 60)  # 30 min into a 60 min token: still valid beyond the margin
    for _ in range(5):
        assert bearer(await creds.auth_for_dial()) == first
    assert server.calls == 1


async def test_a_token_expiring_within_five_minutes_is_refreshed_before_the_dial(server, creds, clock):
    first = bearer(await creds.auth_for_dial())
    clock.advance(54 * 60)  # 6 min left: reused
    assert bearer(await creds.auth_for_dial()) == first
    clock.advance(90)  # 4.5 min left: refreshed
    second = bearer(await creds.auth_for_dial())
    assert second != first and server.calls == 2 and second == server.issued[1]


async def test_short_lived_tokens_are_refreshed_at_every_dial(server, creds):
    server.expires_in = 5  # expires in seconds: always inside the margin
    tokens = [bearer(await creds.auth_for_dial()) for _ in range(3)]
    assert tokens == server.issued and len(set(tokens)) == 3 and server.calls == 3


@pytest.mark.parametrize("expires_in", [3600, 5])
async def test_many_concurrent_dials_share_one_refresh(server, creds, expires_in):
    server.expires_in = expires_in
    server.gate.clear()  # the first refresh blocks in the token endpoint
    got: list[str] = []

    async def dial() -> None:
        got.append(bearer(await creds.auth_for_dial()))

    async with trio.open_nursery() as nursery:
        for _ in range(25):
            nursery.start_soon(dial)
        # Every dial is now waiting: one in the worker thread, the others on the lock.
        await trio.testing.wait_all_tasks_blocked()
        server.gate.set()
    assert server.calls == 1 and creds.refreshes == 1
    assert got == [server.issued[0]] * 25


async def test_invalidate_forces_a_refresh(server, creds):
    first = bearer(await creds.auth_for_dial())
    assert creds.refreshable is True
    creds.invalidate()
    second = bearer(await creds.auth_for_dial())
    assert second != first and server.calls == 2
    assert bearer(await creds.auth_for_dial()) == second and server.calls == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_token_endpoint_is_a_clear_credential_error(server, tmp_path, clock):
    path = server.key_file(tmp_path, token_uri=f"http://127.0.0.1:{_closed_port()}/token")
    creds = VertexCredentials.from_file(path, now=clock)
    with pytest.raises(auth_google.CredentialError) as info:
        await creds.auth_for_dial()
    text = str(info.value)
    assert "Vertex AI token refresh failed" in text and str(path) in text
    assert server.private_key_marker not in text


async def test_an_erroring_token_endpoint_is_a_network_ending_with_the_reason(server, creds):
    server.fail = (400, {"error": "invalid_grant", "error_description": "account disabled"})
    ending = await _dial(Endpoint.parse("ws://127.0.0.1:9/x"), creds)
    assert ending is not None and ending.kind is EndingKind.NETWORK
    assert ending.reason.startswith("credential: Vertex AI token refresh failed")
    assert "RefreshError" in ending.reason and "invalid_grant" in ending.reason
    assert server.private_key_marker not in ending.reason
    # It recovers when the endpoint does: the next dial fetches a token.
    server.fail = None
    assert bearer(await creds.auth_for_dial()) == server.issued[0]


async def test_no_token_in_repr_str_or_log_output(server, creds, tmp_path):
    logsetup.clear_secrets()
    buf = io.StringIO()
    logsetup.configure_logging("debug", "json", stream=buf)
    try:
        first = bearer(await creds.auth_for_dial())
        creds.invalidate()
        second = bearer(await creds.auth_for_dial())
        auth = await creds.auth_for_dial()
        for obj in (creds, auth):
            for text in (repr(obj), str(obj)):
                assert first not in text and second not in text
        # A careless log line carrying the token is redacted: the token was registered.
        structlog.get_logger("test").info("careless", value=f"Bearer {second}")
        server.fail = (400, {"error": "invalid_grant", "error_description": f"echo {second}"})
        creds.invalidate()
        with pytest.raises(auth_google.CredentialError) as info:
            await creds.auth_for_dial()
        assert second not in str(info.value)
    finally:
        logsetup.configure_logging("info", "json", stream=io.StringIO())
    out = buf.getvalue()
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events.count("upstream.token_refreshed") == 2 and "upstream.token_refresh_failed" in events
    assert "careless" in events and "<redacted:" in out
    assert first not in out and second not in out and server.private_key_marker not in out
    logsetup.clear_secrets()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read it"),
        ("{not json", "not valid JSON"),
        ('{"type": "nonsense"}', "type 'nonsense'"),
        ('{"type": "service_account", "private_key": "-----BEGIN SECRETPEM"}', "not usable as service_account"),
    ],
)
def test_a_bad_credential_file_is_one_clear_error_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        VertexCredentials.from_file(path)
    text = str(info.value)
    assert str(path) in text and needle in text
    assert "SECRETPEM" not in text and "\n" not in text


def test_without_google_auth_constructing_is_one_line(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_google(name, *args, **kwargs):
        if name == "google" or name.startswith("google."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_google)
    for make in (lambda: VertexCredentials.from_file(tmp_path / "x.json"), VertexCredentials.from_adc):
        with pytest.raises(ConfigError) as info:
            make()
        assert str(info.value) == "Vertex AI needs google-auth: pip install 'geminid[vertex]'"


def test_the_module_imports_without_google_auth():
    """Importing auth_google imports nothing of google (it is imported by the package itself)."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(auth_google.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert names and not any(name.startswith("google") for name in names)


# --- the bearer reaches a real server: the fake's Vertex route -----------------------------------

MODEL = "gemini-3.8-live"


async def _dial(endpoint: Endpoint, credentials, model: str = "models/gemini-3.8-live") -> Ending | None:
    return await dial_once(endpoint, credentials, model=model)


async def test_the_bearer_token_reaches_the_fakes_vertex_route(server, creds, nursery):
    # The fake accepts exactly one credential; the token endpoint issues exactly it, then another.
    server.fixed_token = "ya29.the-token-the-fake-accepts"
    fake = await nursery.start(FakeUpstream(FakeOptions(api_key=server.fixed_token, reply_pace=0.001)).serve)
    endpoint = Endpoint.vertex("p", "us-central1", base=f"ws://{fake.host}:{fake.port}")
    model = vertex_model(MODEL, "p", "us-central1")
    assert await _dial(endpoint, creds, model) is None
    (record,) = fake.connections
    assert record.route == "vertex" and record.version == "v1" and record.auth_ok and record.accepted
    assert record.setup is not None and record.setup["setup"]["model"] == model
    # A refreshed token the fake does not accept is refused at the upgrade: the header is what counts.
    server.fixed_token = "ya29.a-token-the-fake-refuses"
    creds.invalidate()
    ending = await _dial(endpoint, creds, model)
    assert ending is not None and ending.kind is EndingKind.REJECTED and ending.http_status == 403
    assert [c.auth_ok for c in fake.connections] == [True, False] and server.calls == 2


async def test_application_default_credentials_from_the_environment(server, tmp_path, clock, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.key_file(tmp_path)))
    creds = VertexCredentials.from_adc(now=clock)
    assert bearer(await creds.auth_for_dial()) == server.issued[0] and server.bad_assertions == 0


def test_an_authorized_user_file_is_accepted_and_its_refresh_token_never_shown(tmp_path):
    path = tmp_path / "user.json"
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "cid", "client_secret": "csecret-0123456789",
        "refresh_token": "1//refresh-token-0123456789",
    }))
    creds = VertexCredentials.from_file(path)
    assert "refresh-token" not in repr(creds) and "csecret" not in repr(creds)
    assert str(path) in repr(creds)


async def test_a_dial_cancelled_during_the_refresh_leaves_a_usable_registered_token(server, creds):
    """A connect timeout abandons the worker thread; its token is used (and redacted) afterwards."""
    logsetup.clear_secrets()
    server.gate.clear()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(creds.auth_for_dial)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    server.gate.set()
    with trio.fail_after(10):
        while creds._creds.token is None:  # the abandoned thread finishes on its own
            await trio.sleep(0.01)
    token = bearer(await creds.auth_for_dial())
    assert server.calls == 1 and token == server.issued[0]
    assert token not in logsetup.redact_text(f"x {token} y")
    logsetup.clear_secrets()


async def test_twenty_expiries_sixty_dials_twenty_token_requests(server, creds, clock, nursery):
    """Link level: three dials per token lifetime through the fake's Vertex route, no failed dial."""
    fake = await nursery.start(FakeUpstream(FakeOptions(reply_pace=0.001)).serve)
    endpoint = Endpoint.vertex("p", "global", base=f"ws://{fake.host}:{fake.port}")
    model = vertex_model(MODEL, "p", "global")
    for _expiry in range(20):
        for _dial_i in range(3):
            assert await _dial(endpoint, creds, model) is None
            clock.advance(19 * 60)  # 57 min after three dials: the fourth is inside the margin
    assert server.calls == 20 and len(set(server.issued)) == 20
    assert len(fake.connections) == 60 and all(c.accepted for c in fake.connections)


def test_in_a_python_without_google_auth_the_package_imports_and_construction_is_one_line(tmp_path):
    """A real interpreter where ``google`` cannot be imported (a meta-path blocker)."""
    import subprocess
    import sys

    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "google" or name.startswith("google."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
import geminid.daemon.upstream as up
from geminid.daemon.errors import ConfigError
try:
    up.VertexCredentials.from_file(sys.argv[1])
except ConfigError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sa.json")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Vertex AI needs google-auth: pip install 'geminid[vertex]'\n"
