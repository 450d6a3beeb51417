"""The committed Live schema matches google-genai, and has the shape GEMINI_LIVE.md describes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from geminid.protocol import live_schema as S

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tests" / "tools" / "gen_live_schema.py"
COMMITTED = ROOT / "protocol" / "schemas" / "live_schema.json"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_live_schema", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_matches_the_sdk():
    """Regenerate from the installed google-genai; only the SDK version line may differ."""
    pytest.importorskip("google.genai")
    fresh = json.loads(_generator().render())
    committed = json.loads(COMMITTED.read_text("utf-8"))
    fresh.pop("source")
    committed.pop("source")
    assert fresh == committed, (
        "google-genai's view of the Live messages changed: run "
        ".venv/bin/python tests/tools/gen_live_schema.py, review the diff and commit it"
    )


def test_runtime_does_not_import_the_sdk():
    text = (ROOT / "protocol" / "live.py").read_text() + (
        ROOT / "protocol" / "live_schema.py"
    ).read_text()
    assert "google.genai" not in text and "import google" not in text


def test_transcription_configs_are_siblings_of_generation_config():
    setup = S.message("LiveClientSetup")
    assert setup.field("inputAudioTranscription").ref == "AudioTranscriptionConfig"
    assert setup.field("outputAudioTranscription") is not None
    assert setup.field("generationConfig").ref == "GenerationConfig"
    gen = S.message("GenerationConfig")
    assert gen.field("inputAudioTranscription") is None
    assert gen.field("outputAudioTranscription") is None


def test_free_form_fields_are_structs():
    assert S.message("FunctionResponse").field("response").kind == "struct"
    assert S.message("FunctionCall").field("args").kind == "struct"
    assert S.message("FunctionDeclaration").field("parametersJsonSchema").kind == "value"


def test_both_casings_are_accepted_and_map_to_camel():
    cfg = S.message("ContextWindowCompressionConfig")
    assert cfg.field("sliding_window") is cfg.field("slidingWindow")
    assert cfg.field("slidingWindow").name == "slidingWindow"
    assert cfg.field("sliding_window").proto_name == "sliding_window"


def test_client_and_server_roots():
    client = S.message(S.CLIENT_ROOT)
    assert sorted(client.fields) == sorted(
        ["setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate"]
    )
    server = S.message(S.SERVER_ROOT)
    for kind in ("setupComplete", "serverContent", "toolCall", "goAway", "usageMetadata"):
        assert server.field(kind) is not None
    assert (
        S.message("LiveServerSessionResumptionUpdate").field("lastConsumedClientMessageIndex").kind
        == "int"
    )


def test_snake_and_camel_helpers():
    assert S.to_snake("lastConsumedClientMessageIndex") == "last_consumed_client_message_index"
    assert S.to_camel("last_consumed_client_message_index") == "lastConsumedClientMessageIndex"
