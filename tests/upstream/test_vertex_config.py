"""The Vertex and ephemeral-token config keys, end to end through real ``geminid`` subprocesses.

A configuration with which no dial can work (no project, no google-auth, unreadable credentials,
an unreadable token file) is one line on stderr and exit 2, at ``geminid run`` and at
``geminid check-config``; a good one is shown by check-config without any secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vertex_token_server import TokenServer

from geminid.daemon.backend import build_backend, check_upstream
from geminid.daemon.config import Config, UpstreamConfig
from geminid.daemon.errors import ConfigError
from geminid.daemon.upstream import EphemeralToken, VertexCredentials

CLI = [sys.executable, "-m", "geminid.daemon.cli"]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI", "GOOGLE_", "CREDENTIALS_DIRECTORY"))}
    return {**env, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), **extra}


def geminid(tmp_path: Path, command: str, toml: str, **env: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "config.toml"
    conf.write_text(toml)
    args = [*CLI, command, "--config", str(conf), "--state-dir", str(tmp_path / "state")]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env_for(tmp_path, **env))


def one_line_exit_2(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def tokens():
    with TokenServer() as server:
        yield server


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_vertex_without_a_project_is_one_line_and_exit_2(tmp_path, command):
    result = geminid(tmp_path, command, '[upstream]\nbackend = "vertex"\n')
    one_line_exit_2(result, "upstream.vertex_project")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_unreadable_vertex_credentials_are_one_line_and_exit_2(tmp_path, command):
    toml = '[upstream]\nbackend = "vertex"\nvertex_project = "p"\nvertex_credentials_file = "nope.json"\n'
    one_line_exit_2(geminid(tmp_path, command, toml), "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    toml = toml.replace("nope.json", "bad.json")
    one_line_exit_2(geminid(tmp_path, command, toml), "not valid JSON")


def test_a_bad_adc_file_and_a_bad_location_are_one_line(tmp_path):
    toml = '[upstream]\nbackend = "vertex"\nvertex_project = "p"\n'
    missing = str(tmp_path / "adc.json")
    one_line_exit_2(
        geminid(tmp_path, "check-config", toml, GOOGLE_APPLICATION_CREDENTIALS=missing),
        "GOOGLE_APPLICATION_CREDENTIALS",
    )
    toml += 'vertex_location = "us central1"\n'
    one_line_exit_2(geminid(tmp_path, "check-config", toml), "upstream.vertex_location")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_vertex_without_google_auth_installed_says_how_to_install_it(tmp_path, tokens, command):
    # A regular ``google`` package first on the path hides the installed namespace package, so
    # ``import google.auth`` fails exactly as it does where the extra is not installed.
    shadow = tmp_path / "shadow" / "google"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    key = tokens.key_file(tmp_path)
    toml = f'[upstream]\nbackend = "vertex"\nvertex_project = "p"\nvertex_credentials_file = "{key}"\n'
    result = geminid(tmp_path, command, toml, PYTHONPATH=str(tmp_path / "shadow"))
    one_line_exit_2(result, "pip install 'geminid[vertex]'")


def test_check_config_shows_a_good_vertex_config_without_secrets(tmp_path, tokens):
    key = tokens.key_file(tmp_path)
    toml = (
        '[upstream]\nbackend = "vertex"\nvertex_project = "my-proj"\n'
        f'vertex_location = "europe-west4"\nvertex_credentials_file = "{key}"\n'
    )
    result = geminid(tmp_path, "check-config", toml)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'backend = "vertex"' in out and 'vertex_project = "my-proj"' in out
    assert "transparent = true" in out  # Vertex is transparent unless told otherwise
    assert tokens.private_key_marker not in out + result.stderr
    assert tokens.calls == 0  # checking a config never fetches a token


def test_an_explicit_transparent_false_is_kept_on_vertex(tmp_path, tokens):
    key = tokens.key_file(tmp_path)
    toml = (f'[upstream]\nbackend = "vertex"\nvertex_project = "p"\nvertex_credentials_file = "{key}"\n'
            "transparent = false\n")
    result = geminid(tmp_path, "check-config", toml)
    assert result.returncode == 0 and "transparent = false" in result.stdout


def test_the_index_convention_can_be_configured_and_a_wrong_one_is_one_line(tmp_path, tokens):
    key = tokens.key_file(tmp_path)
    toml = f'[upstream]\nbackend = "vertex"\nvertex_project = "p"\nvertex_credentials_file = "{key}"\n'
    result = geminid(tmp_path, "check-config", toml)
    assert result.returncode == 0 and 'consumed_index = "auto"' in result.stdout  # detected by default
    result = geminid(tmp_path, "check-config", toml + 'consumed_index = "1-session"\n')
    assert result.returncode == 0 and 'consumed_index = "1-session"' in result.stdout
    one_line_exit_2(geminid(tmp_path, "check-config", toml + 'consumed_index = "2-session"\n'),
                    "upstream.consumed_index")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_an_unreadable_token_file_is_one_line_and_exit_2(tmp_path, command):
    toml = '[upstream]\nauth_token_file = "token"\n'
    one_line_exit_2(geminid(tmp_path, command, toml), "upstream.auth_token_file")


def test_a_token_file_with_a_key_or_on_vertex_is_refused(tmp_path):
    (tmp_path / "token").write_text("auth_tokens/abc\n")
    result = geminid(tmp_path, "check-config", '[upstream]\nauth_token_file = "token"\n',
                     GEMINI_API_KEY="AIza-xyz")
    one_line_exit_2(result, "not both")
    toml = '[upstream]\nauth_token_file = "token"\nbackend = "vertex"\nvertex_project = "p"\n'
    one_line_exit_2(geminid(tmp_path, "check-config", toml), "upstream.auth_token_file")


def test_an_unknown_backend_is_refused(tmp_path):
    one_line_exit_2(geminid(tmp_path, "check-config", '[upstream]\nbackend = "azure"\n'), "upstream.backend")


def test_the_token_file_backend_uses_the_constrained_method_and_is_no_embedded_fake(tmp_path):
    token = tmp_path / "token"
    token.write_text("auth_tokens/abc\n")
    cfg = Config(upstream=UpstreamConfig(auth_token_file=token))
    assert not cfg.embedded_fake
    check_upstream(cfg.upstream, {})
    backend = build_backend(cfg)
    assert backend.kind == "gemini-ephemeral" and isinstance(backend.credentials, EphemeralToken)
    assert backend.endpoint.resource.endswith("GenerativeService.BidiGenerateContentConstrained")
    assert "v1alpha" in backend.endpoint.resource


def test_the_vertex_backend_names_models_and_dials_the_regional_endpoint(tmp_path, tokens):
    cfg = Config(upstream=UpstreamConfig(
        backend="vertex", vertex_project="p1", vertex_location="asia-northeast1",
        vertex_credentials_file=tokens.key_file(tmp_path),
    ))
    assert not cfg.embedded_fake
    backend = build_backend(cfg)
    assert isinstance(backend.credentials, VertexCredentials)
    assert backend.endpoint.host == "asia-northeast1-aiplatform.googleapis.com"
    assert backend.endpoint.resource == "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    assert backend.model_name is not None
    assert backend.model_name("models/gemini-3.8-live") == (
        "projects/p1/locations/asia-northeast1/publishers/google/models/gemini-3.8-live"
    )


def test_a_vertex_config_without_a_project_is_refused_by_the_builder_too():
    with pytest.raises(ConfigError, match="vertex_project"):
        check_upstream(UpstreamConfig(backend="vertex"), {})


def test_the_dial_expands_the_model_of_the_setup_only(tmp_path):
    from geminid.daemon.upstream import Dial, Endpoint, FixedKey, vertex_model

    dial = Dial(Endpoint.parse("ws://h/x"), FixedKey("k"), 1, 1, 1024,
                model_name=lambda m: vertex_model(m, "p", "us-central1"))
    setup = {"setup": {"model": "models/m", "sessionResumption": {}}}
    out = dial.upstream_setup(setup)
    assert out["setup"]["model"] == "projects/p/locations/us-central1/publishers/google/models/m"  # type: ignore[index]
    assert setup["setup"]["model"] == "models/m"  # the session's own setup is untouched
    # A name the rule refuses goes as it is: the server's 1008 is classified like any other.
    odd = {"setup": {"model": "a/b/c"}}
    assert dial.upstream_setup(odd) == odd
    assert json.dumps(Dial(Endpoint.parse("ws://h/x"), FixedKey("k"), 1, 1, 1024).upstream_setup(setup))
