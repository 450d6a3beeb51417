"""The README's configurations of google-genai behind geminid ("Use it from google-genai /
pipecat / LiveKit / the browser"), each checked as a user would run it: a fresh Python process
whose only geminid-specific input is its configuration.

- ``SSL_CERT_FILE`` = the endpoint's ``ca_file`` instead of ``async_client_args={"ssl": ...}``:
  google-genai builds its WebSocket SSL context from it when ``genai.Client`` is made
  (``_api_client._ensure_websocket_ssl_ctx``);
- with neither, the SDK refuses the self-signed certificate (the control);
- ``base_url`` with ``/sessions/NAME``, and with a trailing slash.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
import trio
from daemon_proc import SENTINEL_KEY
from live_harness import MODEL, LiveDaemon

pytest.importorskip("google.genai")

# One turn with google-genai, configured from argv[1] (JSON); prints the reply, or the error.
SCRIPT = r"""
import asyncio, json, ssl, sys
from google import genai
from google.genai import types

args = json.loads(sys.argv[1])
http_options = {"base_url": args["base_url"]}
if args.get("cafile"):
    http_options["async_client_args"] = {"ssl": ssl.create_default_context(cafile=args["cafile"])}
client = genai.Client(api_key=args["token"], http_options=http_options)
config = types.LiveConnectConfig(response_modalities=["TEXT"])

async def main():
    async with client.aio.live.connect(model=args["model"], config=config) as s:
        await s.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text=args["text"])]), turn_complete=True)
        text = ""
        async for msg in s.receive():
            text += msg.text or ""
        return text

try:
    print(json.dumps({"text": asyncio.run(main())}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


async def one_turn(args: dict[str, Any], env_extra: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI", "GOOGLE", "SSL_CERT_", "REQUESTS_CA_BUNDLE"))}
    env.update(env_extra)
    with trio.fail_after(120):
        proc = await trio.run_process([sys.executable, "-c", SCRIPT, json.dumps(args)], env=env,
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


async def test_genai_trusts_the_endpoint_through_ssl_cert_file(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        args = {"base_url": live["base_url"], "token": proc.token(), "model": MODEL, "text": "hi"}
        got = await one_turn(args, {"SSL_CERT_FILE": live["ca_file"]})
        assert got == {"text": 'turn 1: heard "hi".'}
        # The control: neither SSL_CERT_FILE nor an ssl context, and the SDK refuses the certificate.
        refused = await one_turn(args, {})
        assert "CERTIFICATE_VERIFY_FAILED" in refused.get("error", ""), refused
        assert SENTINEL_KEY not in proc.output()
    finally:
        await proc.aclose()


async def test_genai_base_url_with_a_session_name_or_a_trailing_slash(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        base = {"token": proc.token(), "model": MODEL, "cafile": live["ca_file"]}
        named = await one_turn({**base, "base_url": live["base_url"] + "/sessions/den", "text": "a"},
                               {})
        assert named == {"text": 'turn 1: heard "a".'}
        again = await one_turn({**base, "base_url": live["base_url"] + "/sessions/den/", "text": "b"},
                               {})
        assert again == {"text": 'turn 2: heard "b"; previous "a".'}
        plain = await one_turn({**base, "base_url": live["base_url"] + "/", "text": "c"}, {})
        assert plain == {"text": 'turn 1: heard "c".'}
    finally:
        await proc.aclose()
