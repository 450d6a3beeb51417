"""geminictl with no flags against a daemon whose upstream is the fake as the service is in 2026
(the strict catalogue: retired models and TEXT on audio-only models refused). Real sockets, real
subprocesses: the daemon core in process, ``python -m geminid.protocol.ctl`` as the user runs it."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.config import Config, ServerConfig, SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.fake import catalogue as C
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import SessionRegistry
from geminid.daemon.server import serve_unix
from geminid.daemon.upstream import BackoffPolicy, Dial, Endpoint, FixedKey
from geminid.protocol import ctl


@pytest.fixture
def sockdir():
    d = Path(tempfile.mkdtemp(prefix="gd", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def daemon(nursery, sockdir, tmp_path):
    async def start(**fake_options) -> tuple[FakeUpstream, Path]:
        fake_options.setdefault("catalogue", C.catalogue_2026())
        opts = FakeOptions(reply_pace=0.002, **fake_options)
        fake = await nursery.start(FakeUpstream(opts).serve)
        cfg = Config(
            state_dir=tmp_path / "state",
            backoff=BackoffPolicy(stable_after=1, quick_failure=0.2),
            upstream=UpstreamConfig(stall_timeout=5),
            session=SessionConfig(event_ring=64, inactivity_timeout=0),
            server=ServerConfig(socket_path=sockdir / "g.sock"),
        )
        store = CheckpointStore(cfg.state_dir)
        await nursery.start(store.run)
        dial = Dial(Endpoint.parse(fake.url()), FixedKey("k"), 5, 5, 1 << 24)
        registry = SessionRegistry(cfg, store, dial, Metrics(), upstream_kind="fake")
        await nursery.start(registry.run, {})
        path = await nursery.start(serve_unix, registry, cfg.server)
        return fake, Path(path)

    return start


async def _ctl(path: Path, *args: str) -> trio.CompletedProcess:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "geminid.protocol.ctl", "--socket", str(path), *args],
            capture_stdout=True, capture_stderr=True, check=False,
        )


def test_build_setup_defaults():
    assert ctl.DEFAULT_MODEL == "models/gemini-3.8-live"
    assert ctl.build_setup() == {
        "model": "models/gemini-3.8-live",
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "outputAudioTranscription": {},
    }
    assert ctl.build_setup("models/x", "be brief", text=True) == {
        "model": "models/x",
        "generationConfig": {"responseModalities": ["TEXT"]},
        "systemInstruction": {"parts": [{"text": "be brief"}]},
    }
    base = {"model": "models/gemini-3.8-live-extended-thinking",
            "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}, "tools": []}
    assert ctl.build_setup(None, None, False, base) == {
        **base,
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}, "responseModalities": ["AUDIO"]},
        "outputAudioTranscription": {},
    }


async def test_open_and_say_with_no_flags_on_3_8(daemon):
    fake, path = await daemon()
    opened = await _ctl(path, "open", "s")
    assert opened.returncode == 0, opened.stderr
    said = await _ctl(path, "say", "s", "Hello there")
    assert said.returncode == 0, said.stderr
    assert said.stdout.decode() == 'turn 1: heard "Hello there".\n'
    setup = fake.accepted[0].setup["setup"]
    assert setup["model"] == "models/gemini-3.8-live"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]


async def test_say_prints_the_whole_extended_thinking_answer(daemon, tmp_path):
    fake, path = await daemon()
    setup_file = tmp_path / "setup.json"
    setup_file.write_text(json.dumps({"setup": {
        "model": "models/gemini-3.8-live-extended-thinking",
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}},
    }}))
    opened = await _ctl(path, "open", "x", "--setup", f"@{setup_file}")
    assert opened.returncode == 0, opened.stderr
    said = await _ctl(path, "say", "x", "plan it")
    assert said.returncode == 0, said.stderr
    # the filler (turnComplete + IN_PROGRESS) and the answer (turnComplete + IDLE)
    assert said.stdout.decode() == 'turn 1: let me think.turn 1: heard "plan it".\n'


async def test_say_prints_a_tool_call_and_exits_non_zero(daemon):
    fake, path = await daemon()
    setup = {"tools": [{"functionDeclarations": [{
        "name": "get_weather", "behavior": "BLOCKING",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}]}
    assert (await _ctl(path, "open", "t", "--setup", json.dumps(setup))).returncode == 0
    said = await _ctl(path, "say", "t", "weather in Rome")
    assert said.returncode == ctl.EXIT_TOOL_CALL
    call = json.loads(said.stdout.decode().strip().splitlines()[-1])["toolCall"]["functionCalls"][0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "weather in Rome"}
    assert "tool call" in said.stderr.decode()


async def test_open_text_on_an_audio_only_model_fails(daemon):
    fake, path = await daemon()
    opened = await _ctl(path, "open", "t", "--text")
    # the fake refuses TEXT with 1007, which the daemon reports; what matters: not live
    with trio.fail_after(10):
        while not fake.accepted or fake.accepted[0].close_code is None:
            await trio.sleep(0.01)
    assert fake.accepted[0].close_code == 1007
    assert opened.returncode in (0, 1)


async def test_open_text_where_the_catalogue_accepts_it(daemon):
    cat = C.catalogue_2026().with_model(C.GEMINI_3_8.accepts_text())
    fake, path = await daemon(catalogue=cat)
    assert (await _ctl(path, "open", "t", "--text")).returncode == 0
    said = await _ctl(path, "say", "t", "hi")
    assert said.stdout.decode() == 'turn 1: heard "hi".\n'
    assert fake.accepted[0].setup["setup"]["generationConfig"]["responseModalities"] == ["TEXT"]


async def test_bad_setup_argument_is_a_usage_error(daemon, tmp_path):
    _, path = await daemon()
    for bad in ("{not json", "[1]", f"@{tmp_path / 'missing.json'}"):
        res = await _ctl(path, "open", "b", "--setup", bad)
        assert res.returncode == ctl.EXIT_USAGE, bad
        assert res.stderr.decode().startswith("geminictl: --setup")
