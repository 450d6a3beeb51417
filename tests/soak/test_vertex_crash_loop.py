"""The crash loop on the Vertex path (issue #14): restarts under every index convention, and no
token, key or handle in any log line or checkpoint.

The crash loop of tests/soak/crash_lib.py (the daemon a real subprocess, SIGKILLed and restarted;
checks K1-K7), with the daemon configured as ``upstream.backend = "vertex"`` through its
environment: a service-account file generated here whose ``token_uri`` is a loopback token
endpoint (tests/upstream/vertex_token_server.py) that real google-auth calls in the daemon, the
fake's Vertex path checking every bearer token at the upgrade, and transparent resumption with
the fake naming ``lastConsumedClientMessageIndex`` in each of its conventions. A restarted
daemon resumes from its checkpoint's handle without the index history of the daemon it
replaces: under a session-scoped index the conversation's count at that resume is unknown to it.

K5 here: the API key, every bearer token the endpoint issued and the key file's private key in
no daemon log and no state file; no resumption handle in any log line.

CI form: 6 kills per convention. Longer: ``GEMINID_VERTEX_CRASH_KILLS=50``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "upstream"))

from crash_lib import CrashBackend, CrashParams, run_crash_loop, secret_leaks  # noqa: E402
from soak_lib import env_int, soak_seed  # noqa: E402
from vertex_token_server import TokenServer  # noqa: E402

from geminid.daemon.session.consumed import CONVENTIONS  # noqa: E402

pytestmark = pytest.mark.slow


def vertex_crash_backend(tokens: TokenServer, key_file: Path, convention: str) -> CrashBackend:
    return CrashBackend(
        fake_options={"bearer_check": tokens.valid, "consumed_index": convention},
        url=lambda fake: fake.url("v1", vertex=True),
        env={
            "GEMINID_UPSTREAM_BACKEND": "vertex",
            "GEMINID_UPSTREAM_VERTEX_PROJECT": "geminid-crash",
            "GEMINID_UPSTREAM_VERTEX_LOCATION": "europe-west4",
            "GEMINID_UPSTREAM_VERTEX_CREDENTIALS_FILE": str(key_file),
        },
        secrets=lambda: [*tokens.issued, tokens.private_key_marker],
    )


@pytest.mark.parametrize("convention", CONVENTIONS)
async def test_vertex_crash_loop(tmp_path, convention):
    with TokenServer() as tokens:
        # Tokens shorter than the daemon's five-minute margin: every dial fetches a fresh one.
        tokens.expires_in = 60
        key_file = tokens.key_file(tmp_path)
        params = CrashParams(kills=env_int("GEMINID_VERTEX_CRASH_KILLS", 6), sessions=2,
                             seed=soak_seed())
        result = await run_crash_loop(params, tmp_path,
                                      backend=vertex_crash_backend(tokens, key_file, convention))
        assert not result.violations, result.text()
        assert result.report["kills"] == params.kills
        assert result.report["turns_acked"] > params.kills
        assert result.report["duplicates"] == 0
        # The daemon really was on the Vertex path with google-auth's tokens.
        assert tokens.issued and tokens.bad_assertions == 0
        assert result.report["secrets_checked"] > len(tokens.issued)


def test_the_secret_check_finds_a_token_in_a_log_line_or_a_checkpoint(tmp_path):
    """K5 would catch a leak: a bearer token planted in a JSON log line, one in a checkpoint
    file, a handle in a log line; and nothing in files that hold none."""
    log = tmp_path / "run001.log"
    ckpt = tmp_path / "s.ckpt"
    clean = tmp_path / "clean.log"
    log.write_text('{"event": "upstream.dial", "authorization": "Bearer ya29.test-7-abc",'
                   ' "handle": "fake-c1-00ff"}\n')
    ckpt.write_bytes(b"\x00GCKP" + b"ya29.test-8-def" + b"\x01")
    clean.write_text('{"event": "upstream.dial", "handle": "#1a2b3c"}\n')
    tokens = ["ya29.test-7-abc", "ya29.test-8-def", "ya29.test-9-unused"]
    found = secret_leaks([log, ckpt, clean], {"a token": tokens, "a resumption handle": ["fake-c1-00ff"]})
    assert found == [f"K5 a token appears in {log}", f"K5 a resumption handle appears in {log}",
                     f"K5 a token appears in {ckpt}"]
    assert secret_leaks([clean], {"a token": tokens}) == []
