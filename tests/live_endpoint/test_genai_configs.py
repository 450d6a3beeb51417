"""The README's configurations of google-genai behind geminid ("Use it from google-genai /
pipecat / LiveKit / the browser"), each checked as a user would run it: a fresh Python process
whose only geminid-specific input is its configuration.

- ``SSL_CERT_FILE`` = the endpoint's ``ca_file`` instead of ``async_client_args={"ssl": ...}``:
  google-genai builds its WebSocket SSL context from it when ``genai.Client`` is made
  (``_api_client._ensure_websocket_ssl_ctx``);
- with neither, the SDK refuses the self-signed certificate (the control);
- ``base_url`` with ``/sessions/NAME``, and with a trailing slash;
- the ``x-geminid-context-loss: continue`` header through ``http_options.headers``.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from typing import Any

import pytest
import trio
from daemon_proc import SENTINEL_KEY
from live_harness import MODEL, LiveDaemon, run_asyncio

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


@pytest.mark.parametrize("opt_in", [False, True])
async def test_genai_opts_in_to_context_loss_with_the_header(tmp_path, fake, opt_in):
    """``http_options.headers = {"x-geminid-context-loss": "continue"}``: the SDK's way to say
    ``?context_loss=continue`` (a query in base_url would end up before the ``/ws/...`` path).
    Without it the context loss closes the SDK's session 1011 (APIError); with it the session goes
    on in the new conversation."""
    from google import genai
    from google.genai import errors, types

    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        headers = {"x-geminid-context-loss": "continue"} if opt_in else {}
        client = genai.Client(api_key=proc.token(), http_options={
            "base_url": live["base_url"], "headers": headers,
            "async_client_args": {"ssl": ssl.create_default_context(cafile=live["ca_file"])}})
        config = types.LiveConnectConfig(response_modalities=["TEXT"])

        async def lose_the_context() -> None:
            before = len(fake.accepted)
            fake.expire_handles()
            await fake.drop_all()  # the resume is refused ("not found"): a fresh conversation
            with trio.fail_after(30):
                while len(fake.accepted) <= before or fake.accepted[-1].resumed_handle is not None:
                    await trio.sleep(0.05)

        async def session() -> tuple[str, str]:
            async with client.aio.live.connect(model=MODEL, config=config) as s:
                async def turn(text: str) -> str:
                    await s.send_client_content(turns=types.Content(
                        role="user", parts=[types.Part(text=text)]), turn_complete=True)
                    got = ""
                    while f'heard "{text}"' not in got:  # a replayed turn's answer may come first
                        got = "".join([m.text or "" async for m in s.receive()])
                    return got

                first = await turn("my name is Ada")
                trio.from_thread.run(lose_the_context)
                try:
                    return first, await turn("again")
                except errors.APIError as exc:
                    return first, f"APIError {exc.code}: {exc}"

        first, after = await run_asyncio(session)
        assert first == 'turn 1: heard "my name is Ada".'
        if opt_in:
            # the new conversation counts from 1 again, and knows nothing of Ada
            assert after.startswith(("turn 1: ", "turn 2: ")) and "Ada" not in after, after
        else:
            assert after.startswith("APIError 1011") and "context lost" in after, after
    finally:
        await proc.aclose()
