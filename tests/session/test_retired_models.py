"""Issue #10: a setup naming a retired model is warned about (``session.open``'s answer, and
``geminid check-config`` for the checkpointed sessions the daemon would restore); the model
rules have one owner, :mod:`geminid.protocol.models`, which the fake's catalogue shares."""

from __future__ import annotations

import argparse

from session_harness import open_core

from geminid.daemon import config_load
from geminid.daemon.checkpoint import encode_record
from geminid.daemon.fake import FakeOptions, catalogue, permissive_catalogue
from geminid.protocol import live, models

RETIRED_SETUP = live.setup("gemini-2.0-flash-live-001", response_modalities=["TEXT"])["setup"]


async def test_session_open_warns_about_a_retired_model(state_dir):
    opts = FakeOptions(catalogue=permissive_catalogue())
    async with open_core(state_dir, fake_options=opts) as core:
        result = await core.registry.open("old", RETIRED_SETUP)
        assert len(result.warnings) == 1 and "retired" in result.warnings[0]
        assert "gemini-3.8-live" in result.warnings[0]
        current = await core.registry.open("new", live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"])
        assert current.warnings == ()


def test_check_config_warns_about_a_checkpointed_retired_model(tmp_path, capsys, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "old.ckpt").write_bytes(encode_record("old", {"setup": RETIRED_SETUP}))
    (state / "new.ckpt").write_bytes(encode_record("new", {"setup": {"model": "models/gemini-3.8-live"}}))
    (state / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert config_load.saved_session_warnings(state) == [
        f"session 'old': {models.retired_warning('models/gemini-2.0-flash-live-001')}"
    ]
    for name in ("GEMINID_CONFIG", "GEMINID_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINID_STATE_DIR", str(state))
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    parser = argparse.ArgumentParser()
    config_load.add_config_arguments(parser)
    assert config_load.check_config_main(parser.parse_args([])) == 0
    err = capsys.readouterr().err
    assert "geminid: warning: session 'old'" in err and "retired" in err and "'new'" not in err


def test_the_fake_and_the_daemon_share_the_retired_list():
    assert catalogue.RETIRED == models.RETIRED
    for name in models.RETIRED:
        assert catalogue.catalogue_2026().lookup(f"models/{name}") is None  # the fake closes 1008
