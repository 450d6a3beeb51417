"""The fake-upstream CLI: flag parsing, and a real process that serves and stops on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import trio

from geminid.daemon.fake import FakeOptions, FakeUpstream, Fault
from geminid.daemon.fake import catalogue as C
from geminid.daemon.fake.cli import add_arguments, catalogue_from_args, options_from_args
from geminid.daemon.fake.routing import ws_path

from .helpers import connect, transcript_of
from .test_routing_auth import _status


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_map_to_options(monkeypatch):
    monkeypatch.setenv("MY_KEY", "s3cret")
    args = _parse(
        "--port", "0", "--api-key-env", "MY_KEY", "--lifetime", "0.5", "--goaway-before", "0.1",
        "--handle-ttl", "0.002", "--max-sessions", "3", "--no-empty-frames", "--reply-pace", "0",
        "--latency", "0.01", "--transparent", "--cut-mode", "cancelled", "--no-goaway",
        "--drop-every", "5", "--close-every", "6", "--close-code", "1011", "--close-reason", "bye",
        "--stall-after", "7", "--goaway-after", "8", "--expire-handles-after", "9",
        "--refuse", "2", "--refuse-status", "503",
    )
    opts = options_from_args(args)
    assert opts.api_key == "s3cret"
    assert (opts.lifetime, opts.goaway_before, opts.handle_ttl, opts.max_sessions) == (0.5, 0.1, 0.002, 3)
    assert not opts.empty_frames and opts.transparent and not opts.goaway and opts.cut_mode == "cancelled"
    assert (opts.reply_pace, opts.latency, opts.port) == (0.0, 0.01, 0)
    assert [(p.fault, p.trigger.seconds) for p in opts.faults] == [
        (Fault.drop(), 5.0), (Fault.close(1011, "bye"), 6.0), (Fault.stall(), 7.0),
        (Fault.goaway(0.1), 8.0), (Fault.expire_handles(), 9.0),
    ]
    assert (args.refuse, args.refuse_status) == (2, 503)


def test_no_key_env_accepts_any(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert options_from_args(_parse()).api_key is None


async def _read_url(proc) -> str:
    buf = b""
    with trio.fail_after(30):
        while True:
            for line in buf.decode(errors="replace").splitlines(keepends=True):
                if line.startswith("ws://") and line.endswith("\n"):
                    return line.strip()
            chunk = await proc.stdout.receive_some()
            assert chunk, buf
            buf += chunk


async def test_cli_process_serves_and_stops_on_sigint():
    env = {**os.environ, "GEMINI_API_KEY": "cli-key"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "geminid.daemon.fake.cli", "--port", "0", "--reply-pace", "0", "--refuse", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    try:
        url = await _read_url(proc)
        assert "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent" in url
        fake = FakeUpstream()  # only used for its port by the helpers
        fake.port = int(url.split(":")[2].split("/")[0])
        assert await _status(fake, ws_path(), [(b"x-goog-api-key", b"cli-key")]) == 429  # --refuse 1
        assert await _status(fake, ws_path(), [(b"x-goog-api-key", b"wrong")]) == 403
        async with connect(fake, key="cli-key") as client:
            await client.setup(model="models/gemini-3.8-live", output_audio_transcription=True)
            await client.say("hi")
            assert transcript_of(await client.turn()) == 'turn 1: heard "hi".'
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            rc = await proc.wait()
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()


def test_catalogue_flags():
    assert catalogue_from_args(_parse()) == C.catalogue_2026()
    assert catalogue_from_args(_parse("--catalogue", "permissive")).fallback is C.LEGACY
    cat = catalogue_from_args(_parse(
        "--accept-text", "models/gemini-3.8-live",
        "--modality-refusal", "gemini-2.5-flash-native-audio-preview-12-2025=1011",
    ))
    assert "TEXT" in cat.lookup("gemini-3.8-live").modalities
    assert cat.lookup("gemini-2.5-flash-native-audio-preview-12-2025").modality_refusal == (
        1011, "Internal error encountered.")
    for bad in (("--accept-text", "gemini-2.0-flash-live-001"), ("--modality-refusal", "gemini-3.8-live=1000")):
        try:
            catalogue_from_args(_parse(*bad))
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")
    opts = options_from_args(_parse("--no-plain-interaction-status", "--resumable-in-progress",
                                    "--resumable-pending-calls"))
    assert not opts.plain_interaction_status and opts.resumable_in_progress and opts.resumable_pending_calls
    assert options_from_args(_parse()).plain_interaction_status
    opts = options_from_args(_parse("--idle-after-silent", "--idle-while-call-pending", "--decline", "nothing",
                                    "--decline-word", "hush", "--when-idle-at-pause"))
    assert opts.idle_after_silent and opts.idle_while_call_pending and opts.when_idle_at_pause
    assert opts.decline == "nothing" and opts.decline_words == ("hush",)
    d = options_from_args(_parse())
    assert not d.idle_after_silent and not d.idle_while_call_pending and d.decline is None
    assert not d.when_idle_at_pause
    assert d.decline_words == FakeOptions().decline_words


async def test_geminid_fake_upstream_ready_line_is_not_redacted():
    """#11.15: the ready line says whether a key is configured; the log pipeline redacts any
    field named ``key``, so it used to print ``key=<redacted:...>``."""
    env = {**os.environ, "GEMINI_API_KEY": "cli-key"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "geminid.daemon.cli", "fake-upstream", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    buf = b""
    try:
        with trio.fail_after(30):
            while b"fake.ready" not in buf or not buf.split(b"fake.ready", 1)[1].count(b"\n"):
                chunk = await proc.stdout.receive_some()
                assert chunk, buf
                buf += chunk
        line = next(x for x in buf.decode().splitlines() if "fake.ready" in x)
        assert "configured key" in line and "redacted" not in line and "cli-key" not in line
        assert "gemini-3.8-live" in line
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await proc.wait()
        await proc.stdout.aclose()
