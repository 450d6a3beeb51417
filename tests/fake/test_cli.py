"""The fake-upstream CLI: flag parsing, and a real process that serves and stops on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import trio

from geminid.daemon.fake import FakeUpstream, Fault
from geminid.daemon.fake.cli import add_arguments, options_from_args
from geminid.daemon.fake.routing import ws_path

from .helpers import connect, text_of
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
            await client.setup()
            await client.say("hi")
            assert text_of(await client.turn()) == 'turn 1: heard "hi".'
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            rc = await proc.wait()
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()
