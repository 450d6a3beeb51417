"""Acceptance (#12): the JavaScript SDK (``@google/genai`` from npm, run with node) completes turns
against geminid's Live endpoint, configured only through its public options (``apiKey`` = the
local token, ``httpOptions.baseUrl`` = geminid's ``base_url``) and, for TLS, the environment
(``NODE_EXTRA_CA_CERTS`` = the endpoint's ``ca_file``).

The SDK is pinned in tests/live_endpoint/js/package-lock.json (2.32.0: the newest release whose
``engines`` admits Node.js 20, which this machine and CI have; 3.x wants 22) and installed with
``npm ci`` into a cache directory outside the repo (``$GEMINID_JS_CACHE``, else the system temp
dir), keyed by the lock file's hash, once per machine. Skipped (with the reason) only when node
or npm is absent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_proc import SENTINEL_KEY
from live_harness import MODEL, LiveDaemon

from geminid.protocol.client import open_client

JS = Path(__file__).resolve().parent / "js"
PINNED = ("package.json", "package-lock.json")


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run @google/genai (the JavaScript SDK); "
                    f"found node={node}, npm={npm}")
    return node, npm


def _install(npm: str) -> Path:
    """A directory holding the pinned node_modules and peer.mjs: js/ itself when someone ran
    ``npm ci`` there, else a cache directory (``npm ci`` once per lock file)."""
    if (JS / "node_modules" / "@google" / "genai" / "package.json").exists():
        return JS
    digest = hashlib.sha256(b"".join((JS / f).read_bytes() for f in PINNED)).hexdigest()[:16]
    base = Path(os.environ.get("GEMINID_JS_CACHE") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    home = base / f"geminid-js-{digest}"
    with open(base / f".geminid-js-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be installing it
        if not (home / "node_modules" / "@google" / "genai" / "package.json").exists():
            staging = Path(tempfile.mkdtemp(prefix=f"geminid-js-{digest}-", dir=base))
            for f in PINNED:
                shutil.copy(JS / f, staging / f)
            proc = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=staging, capture_output=True, text=True, timeout=600,
            )
            if proc.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise AssertionError(f"npm ci failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(home)
            staging.rename(home)
    # The script is copied beside node_modules (an ES module resolves imports from its own
    # directory), each time, so that an edit to js/peer.mjs is what runs.
    shutil.copy(JS / "peer.mjs", home / "peer.mjs")
    return home


@pytest.fixture(scope="module")
def js_peer() -> tuple[str, Path]:
    node, npm = _tools()
    return node, _install(npm)


async def run_peer(js_peer: tuple[str, Path], args: dict[str, Any], *, ca_file: str | None,
                   expect_ok: bool = True) -> list[dict[str, Any]]:
    """Run peer.mjs with ``args``; its JSON lines. Fails the test unless it exits 0 (or, with
    ``expect_ok=False``, unless it exits non-zero)."""
    node, home = js_peer
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE", "NODE_"))}
    if ca_file is not None:
        env["NODE_EXTRA_CA_CERTS"] = ca_file
    with trio.fail_after(120):
        proc = await trio.run_process(
            [node, str(home / "peer.mjs"), json.dumps(args)], cwd=home, env=env,
            capture_stdout=True, capture_stderr=True, check=False,
        )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert (proc.returncode == 0) == expect_ok, (
        f"peer.mjs exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def turns(lines: list[dict[str, Any]]) -> list[str]:
    return [line["text"] for line in lines if line["event"] == "turn"]


def last_handle(lines: list[dict[str, Any]]) -> str | None:
    closed = [line for line in lines if line["event"] == "closed"]
    assert closed, lines
    return closed[-1]["handle"]


async def test_js_sdk_turns_over_tls_and_resumes_with_local_handle(tmp_path, fake, js_peer):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        assert live["base_url"].startswith("https://127.0.0.1:")
        args = {"baseUrl": live["base_url"], "apiKey": proc.token(), "model": MODEL,
                "turns": ["my name is Ada", "and I like tea"]}
        first = await run_peer(js_peer, args, ca_file=live["ca_file"])
        assert turns(first) == ['turn 1: heard "my name is Ada".',
                                'turn 2: heard "and I like tea"; previous "my name is Ada".']
        handle = last_handle(first)
        assert handle is not None and handle.startswith("gmdh-")
        assert fake.handles.entry(handle) is None and SENTINEL_KEY not in handle

        # The SDK's own sessionResumption config, holding geminid's local handle: same conversation.
        again = await run_peer(js_peer, {**args, "turns": ["please recall"], "handle": handle},
                               ca_file=live["ca_file"])
        [recalled] = turns(again)
        assert recalled.startswith("turn 3:") and '"my name is Ada"' in recalled
        # The token travelled as ?key= in the URL the SDK dials; it must not reach the log.
        assert proc.token() not in proc.output() and SENTINEL_KEY not in proc.output()
    finally:
        await proc.aclose()


async def test_js_sdk_without_trusting_the_ca_is_refused_by_tls(tmp_path, fake, js_peer):
    """The control for the test above: NODE_EXTRA_CA_CERTS is what makes node trust the endpoint."""
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        args = {"baseUrl": live["base_url"], "apiKey": proc.token(), "model": MODEL, "turns": ["hi"]}
        lines = await run_peer(js_peer, args, ca_file=None, expect_ok=False)
        [error] = [line["error"] for line in lines if line["event"] == "error"]
        assert "self-signed" in error or "self signed" in error, error
    finally:
        await proc.aclose()


async def test_js_sdk_named_session_over_plain_ws_is_the_json_rpc_session(tmp_path, fake, js_peer):
    """``live.tls = false``: base_url is http://, the SDK dials ws://; ``/sessions/NAME`` binds
    the SDK to the session JSON-RPC clients see."""
    proc = LiveDaemon(tmp_path, fake.url(), env={"GEMINID_LIVE_TLS": "false"})
    try:
        live = await proc.start_live()
        assert live["base_url"].startswith("http://127.0.0.1:") and live["ca_file"] is None
        args = {"baseUrl": live["base_url"] + "/sessions/kitchen", "apiKey": proc.token(),
                "model": MODEL, "turns": ["hello from node"]}
        lines = await run_peer(js_peer, args, ca_file=None)
        assert turns(lines) == ['turn 1: heard "hello from node".']
        async with open_client(proc.sock_path) as c:
            names = [s["session"] for s in await c.sessions()]
            assert "kitchen" in names
            # The JSON-RPC side continues the same conversation the SDK started.
            await c.attach("kitchen")
            await c.send("kitchen", {"clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "and from json-rpc"}]}],
                "turnComplete": True}})
            text = ""
            with trio.fail_after(30):
                while True:
                    method, params = await c.next_event()
                    if method != "session.message":
                        continue
                    sc = params["message"].get("serverContent") or {}
                    for part in (sc.get("modelTurn") or {}).get("parts", []):
                        text += part.get("text", "")
                    if sc.get("turnComplete"):
                        break
        assert text == 'turn 2: heard "and from json-rpc"; previous "hello from node".'
    finally:
        await proc.aclose()


@pytest.mark.parametrize("opt_in", [False, True])
async def test_js_sdk_opts_in_to_context_loss_with_the_header(tmp_path, fake, js_peer, opt_in):
    """``httpOptions.headers = {"x-geminid-context-loss": "continue"}`` reaches the upgrade under
    node: after a context loss the SDK's session goes on; without it the SDK sees close 1011."""
    node, home = js_peer
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        args = {"baseUrl": live["base_url"], "apiKey": proc.token(), "model": MODEL,
                "turns": ["my name is Ada", "again"], "pauseAfter": 1, "untilHeard": True,
                "headers": {"x-geminid-context-loss": "continue"} if opt_in else {}}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE", "NODE_"))}
        env["NODE_EXTRA_CA_CERTS"] = live["ca_file"]
        peer = await trio.lowlevel.open_process(
            [node, str(home / "peer.mjs"), json.dumps(args)], cwd=home, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert peer.stdin is not None and peer.stdout is not None
        lines: list[dict[str, Any]] = []
        buf = b""
        try:
            with trio.fail_after(120):
                async def line() -> dict[str, Any]:
                    nonlocal buf
                    while b"\n" not in buf:
                        chunk = await peer.stdout.receive_some()
                        assert chunk, f"peer.mjs ended early: {lines}"
                        buf += chunk
                    raw, buf = buf.split(b"\n", 1)
                    lines.append(json.loads(raw))
                    return lines[-1]

                assert (await line())["text"] == 'turn 1: heard "my name is Ada".'
                assert (await line())["event"] == "paused"
                before = len(fake.accepted)
                fake.expire_handles()
                await fake.drop_all()  # the resume is refused ("not found"): a fresh conversation
                while len(fake.accepted) <= before or fake.accepted[-1].resumed_handle is not None:
                    await trio.sleep(0.05)
                await peer.stdin.send_all(b"go\n")
                after = await line()
                code = await peer.wait()
        finally:
            if peer.returncode is None:
                peer.kill()
                await peer.wait()
        if opt_in:
            assert after["event"] == "turn" and 'heard "again"' in after["text"], lines
            assert code == 0, lines
        else:
            assert after["event"] == "closed" and after["code"] == 1011, lines
            assert "context lost" in after["reason"] and code == 1, lines
    finally:
        await proc.aclose()
