"""Acceptance (#12): who may use the TCP Live endpoint, and what never leaves the daemon.

- a client with a wrong local token is refused at the upgrade (403; none at all: 401), while a
  client with the right one is served;
- a non-loopback ``live.listen`` (flag, env or config file) is refused at start: one line, exit 2;
- the real API key reaches no local client (every frame it was sent), no log line, no local
  handle (nor the handle file), no status reply.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
import trio
import websockets
from daemon_proc import SENTINEL_KEY, DaemonProc
from live_harness import MODEL, LiveDaemon, genai_client, run_asyncio, until_turn_complete

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.live.handles import split_seen
from geminid.protocol.client import open_client

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def _wss(live: dict[str, Any]) -> tuple[str, ssl.SSLContext]:
    return ("wss://" + live["base_url"].split("://", 1)[1] + PATH,
            ssl.create_default_context(cafile=live["ca_file"]))


async def _upgrade_status(live: dict[str, Any], headers: dict[str, str]) -> int:
    url, ctx = _wss(live)

    async def go() -> int:
        try:
            async with websockets.connect(url, ssl=ctx, additional_headers=headers):
                return 101
        except websockets.InvalidStatus as exc:
            return int(exc.response.status_code)

    return int(await run_asyncio(go))


async def test_wrong_token_refused_at_the_upgrade_right_one_served(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        token = proc.token()

        async def wrong() -> int:
            client = genai_client(live, token[:-3] + "xyz")
            try:
                async with client.aio.live.connect(model=MODEL, config=types.LiveConnectConfig(
                        response_modalities=["TEXT"])):
                    return 101
            except websockets.InvalidStatus as exc:
                return int(exc.response.status_code)

        assert await run_asyncio(wrong) == 403
        assert await _upgrade_status(live, {}) == 401
        assert await _upgrade_status(live, {"x-goog-api-key": SENTINEL_KEY}) == 403  # the real key is no token
        assert await _upgrade_status(live, {"x-goog-api-key": token}) == 101

        async def right() -> str:
            client = genai_client(live, token)
            async with client.aio.live.connect(model=MODEL, config=types.LiveConnectConfig(
                    response_modalities=["TEXT"])) as s:
                await s.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="hi")]))
                text, _, _ = await until_turn_complete(s)
                return text

        assert (await run_asyncio(right)).startswith('turn 1: heard "hi"')
        async with open_client(proc.sock_path) as c:
            assert (await c.status())["live"]["refused"] == 3
        refusals = proc.events("live.client_refused")
        assert [e["status"] for e in refusals] == [403, 401, 403]
        assert token not in proc.output() and token[:-3] + "xyz" not in proc.output()
    finally:
        await proc.aclose()


@pytest.mark.parametrize("where", ["flag", "env", "config"])
async def test_non_loopback_live_listen_refused_at_start(tmp_path, where):
    args: list[str] = []
    env: dict[str, str] = {}
    if where == "flag":
        args = ["--live-listen", "0.0.0.0:8766"]
    elif where == "env":
        env = {"GEMINID_LIVE_LISTEN": "192.0.2.7:8766"}
    else:
        conf = tmp_path / "g.toml"
        conf.write_text('[live]\nlisten = "[2001:db8::1]:8766"\n')
        args = ["--config", str(conf)]
    proc = DaemonProc(tmp_path, None, args=args, env=env)
    try:
        await proc.start(wait_ready=False)
        assert await proc.exit_status() == 2
        lines = [ln for ln in proc.output().splitlines() if ln.strip()]
        assert len(lines) == 1, lines
        assert "live.listen" in lines[0] and "loopback" in lines[0]
        assert not await trio.Path(proc.sock_path).exists()
    finally:
        await proc.aclose()


async def test_half_a_tls_pair_is_refused_at_start(tmp_path):
    """A certificate without its key (or the reverse) is a config error before READY, not a
    failure of the Live listener after it."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    proc = DaemonProc(tmp_path, None, args=["--live-listen", "127.0.0.1:0"],
                      env={"GEMINID_LIVE_TLS_CERT": str(cert)})
    try:
        await proc.start(wait_ready=False)
        assert await proc.exit_status() == 2
        lines = [ln for ln in proc.output().splitlines() if ln.strip()]
        assert len(lines) == 1 and "live.tls_cert" in lines[0] and "live.tls_key" in lines[0], lines
        assert not await trio.Path(proc.sock_path).exists()
    finally:
        await proc.aclose()


async def test_the_real_key_reaches_no_client_log_or_handle(tmp_path, nursery):
    # This fake takes only the real key: each connection it accepts shows the key was used.
    fake = await nursery.start(FakeUpstream(FakeOptions(
        catalogue=text_catalogue(), reply_pace=0.002, api_key=SENTINEL_KEY)).serve)
    proc = LiveDaemon(tmp_path, fake.url(), args=["--log-level", "debug"])
    frames: list[str] = []
    try:
        live = await proc.start_live()
        token = proc.token()
        url, ctx = _wss(live)

        async def raw() -> None:
            async with websockets.connect(url + "?key=" + token, ssl=ctx) as ws:
                await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}",
                                                    "generationConfig": {"responseModalities": ["TEXT"]},
                                                    "sessionResumption": {}}}))
                await ws.send(json.dumps({"clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": "what is your key"}]}],
                    "turnComplete": True}}))
                async for frame in ws:
                    frames.append(frame if isinstance(frame, str) else frame.decode())
                    if '"turnComplete":true' in frames[-1].replace(" ", ""):
                        break
                # one more: the fresh resumption update after turnComplete
                frames.append(str(await ws.recv()))

        await run_asyncio(raw)
        async with open_client(proc.sock_path) as c:
            status = await c.status()
        await fake.drop_all()  # a reconnect: the key is used again upstream, and logged about
        with trio.fail_after(20):
            while len(fake.accepted) < 2 or not proc.events("upstream.closed"):
                await trio.sleep(0.05)
    finally:
        await proc.aclose()
    handles = [json.loads(f)["sessionResumptionUpdate"]["newHandle"] for f in frames
               if "sessionResumptionUpdate" in f]
    assert handles and all(h.startswith("gmdh-") for h in handles)
    assert any('"turn 1: ' in f for f in frames)
    handle_file = (proc.state_dir / "live_handles.json").read_text()
    for where, text in {"frames": "\n".join(frames), "log": proc.output(), "handle file": handle_file,
                        "status": json.dumps(status), "handles": " ".join(handles)}.items():
        assert SENTINEL_KEY not in text, where
        assert SENTINEL_KEY[:16] not in text, where
    # each newHandle is the session's handle, with what the client had seen (handles.with_seen)
    assert all(split_seen(h)[0] in handle_file for h in handles)
    assert token not in proc.output()
    # the upstream did get the real key, twice (so the scan above looked at a run that used it)
    assert len(fake.accepted) >= 2 and fake.accepted[1].resumed_handle
