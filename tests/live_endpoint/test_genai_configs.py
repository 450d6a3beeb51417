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

import asyncio
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

        first, after = await run_asyncio(lambda: asyncio.wait_for(session(), 120))
        assert first == 'turn 1: heard "my name is Ada".'
        if opt_in:
            # answered in the new conversation (fresh upstream, no resume: lose_the_context);
            # "turn 2" when turn 1 was taken after the last handle and so replayed into it
            assert after.startswith(("turn 1: ", "turn 2: ")) and 'heard "again"' in after, after
        else:
            assert after.startswith("APIError 1011") and "context lost" in after, after
    finally:
        await proc.aclose()


def _pipecat_like() -> Any:
    """The LiveConnectConfig pipecat's GeminiLiveLLMService._connect builds (its main of
    2026-08-21: generation_config with speech and media resolution, both transcriptions,
    resumption, historyConfig, compression, VAD tuning, tools, thinking)."""
    from google.genai import types

    return types.LiveConnectConfig(
        generation_config=types.GenerationConfig(
            max_output_tokens=4096, response_modalities=[types.Modality.AUDIO],
            speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Charon")),
                language_code="en-US"),
            media_resolution=types.MediaResolution.MEDIA_RESOLUTION_UNSPECIFIED),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(handle=None),
        history_config=types.HistoryConfig(initial_history_in_client_content=True),
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow(), trigger_tokens=100_000),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False, silence_duration_ms=500, prefix_padding_ms=100)),
        system_instruction="You are a test.",
        tools=[{"function_declarations": [{
            "name": "get_weather", "description": "the weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]}],
    )


def _livekit_like() -> Any:
    """The LiveConnectConfig livekit-plugins-google's RealtimeSession._build_connect_config builds
    (its main of 2026-08-22) with its defaults: AUDIO, voice Puck, both transcriptions,
    resumption, an empty realtime_input_config, a tool."""
    from google.genai import types

    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        generation_config=types.GenerationConfig(candidate_count=1),
        system_instruction=types.Content(parts=[types.Part(text="You are a test.")]),
        speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(
            prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Puck"))),
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="get_weather", description="the weather")])],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(handle=None),
        realtime_input_config=types.RealtimeInputConfig(),
    )


# Both frameworks still set LiveConnectConfig.generation_config, which google-genai 3.x deprecates.
@pytest.mark.filterwarnings("ignore:Setting `LiveConnectConfig.generation_config` is deprecated")
@pytest.mark.parametrize("framework", ["pipecat", "livekit"])
async def test_the_setups_pipecat_and_livekit_build_complete_an_audio_turn(tmp_path, fake, framework):
    """What pipecat and LiveKit's plugin send through google-genai is accepted by geminid (its
    setup validation, then the fake's admission) and answered in audio with transcriptions. The
    frameworks are not installed here: their configs are rebuilt from their sources (docstrings)."""
    from google import genai
    from google.genai import types

    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        client = genai.Client(api_key=proc.token(), http_options=types.HttpOptions(
            base_url=live["base_url"], headers={"x-goog-api-client": f"{framework}/test"},
            async_client_args={"ssl": ssl.create_default_context(cafile=live["ca_file"])}))
        config = _pipecat_like() if framework == "pipecat" else _livekit_like()

        async def turn() -> tuple[str, int, str | None]:
            async with client.aio.live.connect(model=MODEL, config=config) as s:
                await s.send_client_content(turns=types.Content(
                    role="user", parts=[types.Part(text="hello")]), turn_complete=True)
                said, audio, handle = "", 0, None
                async for msg in s.receive():
                    sc = msg.server_content
                    if sc and sc.output_transcription and sc.output_transcription.text:
                        said += sc.output_transcription.text
                    if sc and sc.model_turn:
                        audio += sum(1 for p in sc.model_turn.parts or [] if p.inline_data)
                    upd = msg.session_resumption_update
                    if upd and upd.new_handle:
                        handle = upd.new_handle
                return said, audio, handle

        said, audio, handle = await run_asyncio(lambda: asyncio.wait_for(turn(), 120))
        assert said == 'turn 1: heard "hello".' and audio > 0
        assert handle is not None and handle.startswith("gmdh-")
        # geminid passed the framework's setup upstream (canonical camelCase), tools and all
        sent = fake.accepted[-1].setup["setup"]
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        assert ("historyConfig" in sent) == (framework == "pipecat"), sent
        assert sent["outputAudioTranscription"] == {} and sent["inputAudioTranscription"] == {}
    finally:
        await proc.aclose()
