"""What google-genai itself puts on the wire validates with our validator.

The SDK's Live session is driven against a stand-in WebSocket (``ws_connect`` patched), so the
frames are exactly what ``client.aio.live.connect`` and the session's send methods produce,
mixed snake/camel casing and URL-safe base64 included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from geminid.protocol import live as L

genai = pytest.importorskip("google.genai")
types = genai.types
pytestmark = pytest.mark.filterwarnings("ignore")


class _FakeWS:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)

    async def recv(self, decode: bool = True):
        return b'{"setupComplete": {}}'

    async def close(self) -> None:
        pass


def _record(monkeypatch, vertex: bool, config, drive) -> list[dict]:
    ws = _FakeWS()

    @contextlib.asynccontextmanager
    async def fake_connect(*args, **kwargs):
        yield ws

    monkeypatch.setattr(genai.live, "ws_connect", fake_connect)
    if vertex:
        client = genai.Client(vertexai=True, api_key="test-key")
    else:
        client = genai.Client(api_key="test-key")

    async def main() -> None:
        async with client.aio.live.connect(model="gemini-live-test", config=config) as session:
            await drive(session)

    asyncio.run(main())
    return [json.loads(frame) for frame in ws.sent]


def _weather(city: str) -> str:
    """Get the weather for a city."""
    return "sunny"


CONFIG = types.LiveConnectConfig(
    response_modalities=["AUDIO"],
    temperature=0.3,
    speech_config=types.SpeechConfig(
        voice_config=types.VoiceConfig(
            prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Puck")
        )
    ),
    system_instruction="You are terse.",
    tools=[
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name="get_weather",
                    description="weather",
                    parameters=types.Schema(
                        type="OBJECT",
                        properties={"city_name": types.Schema(type="STRING")},
                        required=["city_name"],
                    ),
                )
            ]
        ),
        types.Tool(google_search=types.GoogleSearch()),
    ],
    session_resumption=types.SessionResumptionConfig(handle="abc"),
    context_window_compression=types.ContextWindowCompressionConfig(
        trigger_tokens=25600, sliding_window=types.SlidingWindow(target_tokens=12800)
    ),
    input_audio_transcription=types.AudioTranscriptionConfig(),
    output_audio_transcription=types.AudioTranscriptionConfig(),
    realtime_input_config=types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(
            disabled=False, silence_duration_ms=500
        )
    ),
)


async def _drive(session) -> None:
    await session.send_client_content(
        turns=[types.Content(role="user", parts=[types.Part(text="hello")])], turn_complete=True
    )
    await session.send_client_content(
        turns=types.Content(role="user", parts=[types.Part(text="more")]), turn_complete=False
    )
    await session.send_realtime_input(
        audio=types.Blob(data=b"\xfb\xff\x00" * 10, mime_type="audio/pcm;rate=16000")
    )
    await session.send_realtime_input(
        video=types.Blob(data=b"\xff\xd8\xff", mime_type="image/jpeg")
    )
    await session.send_realtime_input(text="typed")
    await session.send_realtime_input(audio_stream_end=True)
    await session.send_tool_response(
        function_responses=[
            types.FunctionResponse(
                id="call-1", name="get_weather", response={"temp_c": 21, "sky_cover": "clear"}
            )
        ]
    )


@pytest.mark.parametrize("vertex", [False, True])
def test_sdk_frames_validate(monkeypatch, vertex):
    frames = _record(monkeypatch, vertex, CONFIG, _drive)
    kinds = []
    for frame in frames:
        kind, canonical = L.validate_client_message(frame)
        kinds.append(kind)
        assert list(canonical) == [kind]
    assert kinds == ["setup", "clientContent", "clientContent", "realtimeInput", "realtimeInput",
                     "realtimeInput", "realtimeInput", "toolResponse"]  # fmt: skip
    setup = L.validate_client_message(frames[0])[1]["setup"]
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert "inputAudioTranscription" in setup and "realtimeInputConfig" in setup
    assert setup["contextWindowCompression"]["slidingWindow"] == {"targetTokens": 12800}
    audio = L.validate_client_message(frames[3])[1]["realtimeInput"]["audio"]
    assert L.b64decode_any(audio["data"]) == b"\xfb\xff\x00" * 10


def test_sdk_function_declarations_from_callables(monkeypatch):
    config = types.LiveConnectConfig(response_modalities=["TEXT"], tools=[_weather])

    async def nothing(session) -> None:
        return None

    frames = _record(monkeypatch, False, config, nothing)
    _, canonical = L.validate_client_message(frames[0])
    decl = canonical["setup"]["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "_weather"


def test_sdk_transparent_resumption_needs_the_flag(monkeypatch):
    config = types.LiveConnectConfig(
        session_resumption=types.SessionResumptionConfig(handle="h", transparent=True)
    )

    async def nothing(session) -> None:
        return None

    frames = _record(monkeypatch, True, config, nothing)
    with pytest.raises(L.LiveValidationError) as info:
        L.validate_client_message(frames[0])
    assert info.value.path == "setup.sessionResumption.transparent"
    assert L.validate_client_message(frames[0], transparent_allowed=True)[0] == "setup"
