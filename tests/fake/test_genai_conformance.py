"""Acceptance: google-genai's own async live client (asyncio + websockets) against the trio fake.

The SDK always builds ``wss://`` URLs from ``base_url`` (``_websocket_base_url``) and passes an SSL
context; the only patch is to those two, so it speaks plain ``ws://`` to the loopback fake.
Everything it sends goes through the fake's validator: a refusal here is a codec/schema bug.
"""

from __future__ import annotations

import asyncio

import pytest
import trio

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

from geminid.daemon.fake import catalogue as C  # noqa: E402

KEY = "conformance-key"
MODEL = "gemini-3.8-live"  # with TEXT: the fakes here use text_catalogue()


def _client(port: int):
    client = genai.Client(
        api_key=KEY, http_options={"base_url": f"http://127.0.0.1:{port}", "api_version": "v1beta"}
    )
    api = client._api_client
    api._websocket_base_url = lambda http_options=None: f"ws://127.0.0.1:{port}"
    api._websocket_ssl_ctx = {}
    return client


async def _until_turn_complete(session, out):
    async for msg in session.receive():
        out.append(msg)
        if msg.session_resumption_update and msg.session_resumption_update.resumable:
            out.handle = msg.session_resumption_update.new_handle
        if msg.server_content and msg.server_content.turn_complete:
            return


class _Log(list):
    handle = None

    def text(self):
        return "".join(m.text or "" for m in self if m.server_content and m.server_content.model_turn)


async def _scenario(port: int) -> dict:
    client = _client(port)
    weather = types.FunctionDeclaration(
        name="get_weather",
        description="Weather for a city",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
        behavior=types.Behavior.BLOCKING,
    )
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        session_resumption=types.SessionResumptionConfig(),
        tools=[types.Tool(function_declarations=[weather])],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow(target_tokens=1000)
        ),
        system_instruction="You are a test.",
    )
    result: dict = {}
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        # 1. a text turn
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="my name is Ada")]), turn_complete=True
        )
        await _until_turn_complete(session, log)
        result["text"] = log.text()

        # 2. realtime audio ending in audioStreamEnd
        log = _Log()
        for _ in range(10):
            await session.send_realtime_input(audio=types.Blob(data=bytes(640), mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(audio_stream_end=True)
        await _until_turn_complete(session, log)
        result["audio"] = log.text()
        result["input_transcription"] = [
            m.server_content.input_transcription.text
            for m in log
            if m.server_content and m.server_content.input_transcription
        ]

        # 3. a tool call round trip
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="what is the weather?")]), turn_complete=True
        )
        call = None
        async for msg in session.receive():
            if msg.tool_call:
                call = msg.tool_call.function_calls[0]
                break
        result["call_name"] = call.name
        await session.send_tool_response(
            function_responses=[types.FunctionResponse(id=call.id, name=call.name, response={"temp": 21})]
        )
        await _until_turn_complete(session, log)
        result["tool_reply"] = log.text()
        # the resumable handle that follows the turn
        async for msg in session.receive():
            upd = msg.session_resumption_update
            if upd and upd.resumable:
                handle = upd.new_handle
                break
    # 4. a second connection resuming with the handle sees the first one's context
    config2 = types.LiveConnectConfig(
        response_modalities=["TEXT"], session_resumption=types.SessionResumptionConfig(handle=handle)
    )
    async with client.aio.live.connect(model=MODEL, config=config2) as session:
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="please recall")]), turn_complete=True
        )
        await _until_turn_complete(session, log)
        result["resumed"] = log.text()
    return result


async def test_google_genai_live_client_against_fake(start_fake):
    fake = await start_fake(api_key=KEY, reply_pace=0.005)
    result = await trio.to_thread.run_sync(lambda: asyncio.run(_scenario(fake.port)))
    assert result["text"] == 'turn 1: heard "my name is Ada".'
    assert result["input_transcription"] == ["(200 ms of audio)"]
    assert result["audio"] == 'turn 2: heard "(200 ms of audio)"; previous "my name is Ada".'
    assert result["call_name"] == "get_weather"
    assert result["tool_reply"] == 'turn 3: get_weather returned {"temp":21}.'
    assert result["resumed"] == (
        'turn 4: heard "please recall"; previous "what is the weather?"; '
        'recall ["my name is Ada", "(200 ms of audio)", "what is the weather?"].'
    )
    first, second = fake.accepted
    assert first.close_code != 1007 and second.close_code != 1007, (first.invalid, second.invalid)
    assert second.resumed_handle is not None
    assert fake.conversations["c1"].connection_ids == [1, 2]
    assert "realtimeInput" in first.client_kinds() and "toolResponse" in first.client_kinds()


# --------------------------------------------------------------------- a 3.8-style session


def _idle(msg) -> bool:
    sc = msg.server_content
    return bool(sc and sc.turn_complete and (sc.interaction_status is None or sc.interaction_status.value == "IDLE"))


async def _until_idle(session, out) -> None:
    while True:
        async for msg in session.receive():
            out.append(msg)
            if msg.session_resumption_update and msg.session_resumption_update.resumable:
                out.handle = msg.session_resumption_update.new_handle
            if _idle(msg):
                return


def _transcript(log) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in log
        if m.server_content and m.server_content.output_transcription
    )


async def _scenario_3_8(port: int) -> dict:
    client = _client(port)
    book = types.FunctionDeclaration(
        name="book_ticket",
        description="Book a ticket",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
        behavior=types.Behavior.NON_BLOCKING,
    )
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"],
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(),
        tools=[types.Tool(function_declarations=[book])],
    )
    result: dict = {}
    async with client.aio.live.connect(model="gemini-3.8-live", config=config) as session:
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="book_ticket to Rome")]), turn_complete=True
        )
        call = None
        async for msg in session.receive():
            log.append(msg)
            if msg.tool_call:
                call = msg.tool_call.function_calls[0]
                break
        result["call"] = (call.name, call.args)
        await _until_idle(session, log)  # the filler
        result["filler"] = _transcript(log)
        result["audio_mime"] = {
            p.inline_data.mime_type for m in log if m.server_content and m.server_content.model_turn
            for p in m.server_content.model_turn.parts or [] if p.inline_data
        }
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="what time is it")]), turn_complete=True
        )
        await _until_idle(session, log)
        result["meanwhile"] = _transcript(log)
        log = _Log()
        await session.send_tool_response(function_responses=[types.FunctionResponse(
            id=call.id, name=call.name, response={"booked": True},
            scheduling=types.FunctionResponseScheduling.WHEN_IDLE,
        )])
        await _until_idle(session, log)
        result["tool_reply"] = _transcript(log)
        handle = log.handle
        if handle is None:
            async for msg in session.receive():
                upd = msg.session_resumption_update
                if upd and upd.resumable:
                    handle = upd.new_handle
                    break
    config2 = types.LiveConnectConfig(
        response_modalities=["AUDIO"], output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(handle=handle),
    )
    async with client.aio.live.connect(model="gemini-3.8-live", config=config2) as session:
        log = _Log()
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="recall")]), turn_complete=True
        )
        await _until_idle(session, log)
        result["resumed"] = _transcript(log)
    return result


async def test_google_genai_live_client_3_8_session(start_fake):
    """Issue #10: the SDK's own client runs a 3.8-style session against the strict fake."""
    fake = await start_fake(api_key=KEY, reply_pace=0.005, catalogue=C.catalogue_2026())
    result = await trio.to_thread.run_sync(lambda: asyncio.run(_scenario_3_8(fake.port)))
    assert result["call"] == ("book_ticket", {"city": "book_ticket to Rome"})
    assert result["filler"] == "turn 1: calling book_ticket."
    assert result["audio_mime"] == {"audio/pcm;rate=24000"}
    assert result["meanwhile"] == 'turn 2: heard "what time is it"; previous "book_ticket to Rome".'
    assert result["tool_reply"] == 'turn 1: book_ticket returned {"booked":true}.'
    assert result["resumed"].startswith('turn 3: heard "recall"; previous "what time is it"; recall [')
    first, second = fake.accepted
    assert first.close_code != 1007 and second.close_code != 1007, (first.invalid, second.invalid)
    assert second.resumed_handle is not None
