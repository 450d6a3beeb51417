"""Acceptance (issue #14): a Vertex session through the daemon's core, real google-auth, real sockets.

A service-account key generated here (RSA via ``cryptography``), its ``token_uri`` pointing at a
loopback token endpoint (:class:`TokenServer`) that google-auth itself calls and that issues
tokens living ONE real second. The fake's Vertex path accepts only tokens that endpoint issued
and that have not expired (401 at the upgrade otherwise), and cuts each connection after 0.7 s
with a goAway. The session must ride through 20+ token expiries and 20+ rotations with no
refused dial, every turn heard once by the model and answered once, and the token endpoint
called about once per expiry (at dials, never per message).

Time is real (google-auth stamps expiries with the wall clock): the refresh margin is the seam
(half a second instead of five minutes), and the whole run takes about 15 s.
"""

from __future__ import annotations

import datetime
import io
import time
from pathlib import Path

import pytest
import trio
from vertex_token_server import TokenServer

from geminid.daemon import logsetup
from geminid.daemon.backend import build_backend
from geminid.daemon.config import Config, ServerConfig, SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import start_core
from geminid.daemon.server import serve_unix
from geminid.daemon.upstream import BackoffPolicy, Dial, VertexCredentials
from geminid.protocol import live
from geminid.protocol.client import open_client

pytestmark = pytest.mark.slow

SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]
ROTATIONS = 20
EXPIRIES = 20


def vertex_config(tmp_path: Path, sock: Path, fake: FakeUpstream, key_file: Path) -> Config:
    return Config(
        state_dir=tmp_path / "state",
        backoff=BackoffPolicy(initial=0.05, cap=0.2, stable_after=0.3, quick_failure=0.05,
                              rotation_limit=6, rotation_window=2.0),
        upstream=UpstreamConfig(
            backend="vertex", vertex_project="geminid-test", vertex_location="europe-west4",
            vertex_credentials_file=key_file, transparent=True,
            # The fake stands in for europe-west4-aiplatform.googleapis.com.
            endpoint=fake.url("v1", vertex=True),
            connect_timeout=5, setup_timeout=5, stall_timeout=2, keepalive_interval=0,
        ),
        session=SessionConfig(inactivity_timeout=0, goaway_margin=0.2),
        server=ServerConfig(socket_path=sock),
    )


async def test_a_vertex_session_lives_through_token_expiries_and_rotations(nursery, tmp_path):
    logs = io.StringIO()
    logsetup.configure_logging("debug", "json", stream=logs)
    try:
        await run_vertex_session(nursery, tmp_path, logs)
    finally:
        logsetup.configure_logging("info", "json", stream=io.StringIO())


async def run_vertex_session(nursery, tmp_path: Path, logs: io.StringIO) -> None:
    sock_dir = Path("/tmp") / f"gv{time.monotonic_ns() % 10**9}"
    sock_dir.mkdir()
    with TokenServer() as tokens:
        tokens.expires_in = 1
        fake = FakeUpstream(FakeOptions(
            catalogue=text_catalogue(), reply_pace=0.002, lifetime=0.7, goaway_before=0.35,
            bearer_check=tokens.valid,
        ))
        await nursery.start(fake.serve)
        cfg = vertex_config(tmp_path, sock_dir / "g.sock", fake, tokens.key_file(tmp_path))
        backend = build_backend(cfg)  # the daemon's own wiring: endpoint, model names, credentials
        assert backend.kind == "vertex" and isinstance(backend.credentials, VertexCredentials)
        # The one seam: a half-second refresh margin for one-second tokens (five minutes for
        # Google's hour-long ones).
        creds = VertexCredentials.from_file(
            cfg.upstream.vertex_credentials_file, margin=datetime.timedelta(seconds=0.5)
        )
        dial = Dial(backend.endpoint, creds, 5, 5, 1 << 24, model_name=backend.model_name)
        registry = await start_core(nursery, cfg, dial, Metrics(), upstream_kind="vertex", records={})
        path = await nursery.start(serve_unix, registry, cfg.server)

        started = time.monotonic()
        sent: list[str] = []
        answered = 0
        async with open_client(path) as client:
            await client.open("v", SETUP)
            await client.attach("v")
            events = client.events()
            with trio.fail_after(50):
                while len(fake.accepted) <= ROTATIONS or tokens.expired() < EXPIRIES:
                    text = f"turn {len(sent)}"
                    await client.send("v", live.client_content(text))
                    sent.append(text)
                    async for method, params in events:
                        if method == "session.message" and params["message"].get(
                            "serverContent", {}
                        ).get("turnComplete"):
                            answered += 1
                            break
                    await trio.sleep(0.05)
        elapsed = time.monotonic() - started

        # No failed dial: every upgrade the daemon made was accepted (no 401, no 403).
        refused = [(r.id, r.status) for r in fake.connections if not r.accepted]
        assert refused == []
        assert len(fake.accepted) > ROTATIONS and tokens.expired() >= EXPIRIES
        # Vertex's model name, and Bearer tokens the issuer minted (checked by the fake).
        setups = [r.setup["setup"] for r in fake.accepted if r.setup]
        assert {s["model"] for s in setups} == {
            "projects/geminid-test/locations/europe-west4/publishers/google/models/gemini-3.8-live"
        }
        assert all(s["sessionResumption"].get("transparent") for s in setups)
        # One conversation, resumed at every rotation; every turn heard exactly once, answered once.
        (conv,) = fake.conversations.values()
        assert conv.user_turns == sent
        assert answered == len(sent)
        # The token endpoint: about once per expiry (refreshed at dials that need it), never per
        # message; each call a valid RS256 assertion from the generated key.
        assert tokens.bad_assertions == 0
        assert tokens.calls == creds.refreshes
        assert tokens.calls <= len(fake.accepted) + 1
        assert tokens.calls <= elapsed / 0.5 + 2
        assert len(sent) > 2 * tokens.calls
        # Tokens and handles never reach a log line (debug level included) or the checkpoint.
        out = logs.getvalue()
        assert out.count('"upstream.token_refreshed"') == tokens.calls  # the log was captured
        assert not [t for t in tokens.issued if t in out]
        handles = [h for r in fake.accepted for h in r.handles]
        assert handles and not [h for h in handles if h in out]
    for p in (tmp_path / "state").rglob("*"):
        if p.is_file():
            text = p.read_text(errors="replace")
            assert not any(t in text for t in tokens.issued)
