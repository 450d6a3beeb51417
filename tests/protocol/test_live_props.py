"""Property tests for the Live codec: round trips, casing, base64, durations, robustness."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from geminid.protocol import live as L
from geminid.protocol import live_schema as S
from geminid.protocol.errors import FrameError, LiveMessageError

# ----------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
structs = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
ids = st.text(min_size=1, max_size=12)

# Every field name the schema knows, both casings: fuzzed objects then reach deep paths.
_FIELD_NAMES = sorted({n for m in S.MESSAGES.values() for n in m.lookup})
field_names = st.sampled_from(_FIELD_NAMES) | st.text(max_size=6)
schemaish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_names, inner, max_size=4),
    max_leaves=25,
)
client_fuzz = st.dictionaries(
    st.sampled_from(L.CLIENT_KINDS + ("client_content", "tool_response", "realtime_input")),
    schemaish,
    min_size=0,
    max_size=2,
)

generation_configs = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "maxOutputTokens": st.integers(1, 8192),
        "topK": st.integers(1, 64),
        "candidateCount": st.integers(1, 4),
        "speechConfig": st.just({"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}}),
    },
)


@st.composite
def client_messages(draw) -> dict:
    """A canonical client message made by one of the builders."""
    which = draw(
        st.sampled_from(
            ["setup", "content", "audio", "video", "text", "signals", "tool", "context"]
        )
    )
    if which == "setup":
        return L.setup(
            draw(st.text(min_size=1, max_size=20)),
            generation_config=draw(st.none() | generation_configs),
            system_instruction=draw(st.none() | st.text(max_size=20)),
            tools=draw(
                st.none()
                | st.just(
                    [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}]
                )
            ),
            session_resumption=draw(
                st.none() | st.just({}) | st.builds(lambda h: {"handle": h}, ids)
            ),
            context_window_compression=draw(
                st.none()
                | st.builds(lambda t: {"slidingWindow": {"targetTokens": t}}, st.integers(0, 10**6))
            ),
            input_audio_transcription=draw(st.booleans()),
            output_audio_transcription=draw(st.booleans()),
            realtime_input_config=draw(
                st.none() | st.just({"automaticActivityDetection": {"disabled": True}})
            ),
            response_modalities=draw(st.none() | st.sampled_from([["TEXT"], ["AUDIO"]])),
        )
    if which == "content":
        turns = draw(
            st.text(max_size=30)
            | st.lists(
                st.builds(
                    lambda r, t: {"role": r, "parts": [{"text": t}]},
                    st.sampled_from(["user", "model"]),
                    st.text(max_size=20),
                ),
                max_size=3,
            )
        )
        return L.client_content(turns, turn_complete=draw(st.booleans()))
    if which == "audio":
        return L.realtime_audio(
            draw(st.binary(max_size=64)), rate=draw(st.sampled_from([8000, 16000, 24000]))
        )
    if which == "video":
        return L.realtime_video(draw(st.binary(max_size=64)), "image/jpeg")
    if which == "text":
        return L.realtime_text(draw(st.text(max_size=30)))
    if which == "signals":
        return draw(st.sampled_from([L.audio_stream_end(), L.activity_start(), L.activity_end()]))
    if which == "tool":
        responses = draw(
            st.lists(st.builds(L.function_response, ids, st.text(max_size=10), structs), max_size=3)
        )
        return L.tool_response(responses)
    return L.context_update(
        system_instruction=draw(st.none() | st.text(max_size=20)),
        tools=draw(st.none() | st.just([{"urlContext": {}}])),
    )


def _respell(spec: S.MessageSpec, value: Any, draw) -> Any:
    """The same message with each known field name randomly in snake_case or camelCase."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        field = spec.field(key)
        assert field is not None
        name = S.to_snake(key) if draw(st.booleans()) and not key.startswith("$") else key
        if field.kind == "message" and item is not None:
            sub = S.message(field.ref)
            item = (
                [_respell(sub, x, draw) for x in item]
                if field.repeated
                else _respell(sub, item, draw)
            )
        out[name] = item
    return out


# ----------------------------------------------------------------- round trips


@settings(max_examples=150)
@given(client_messages())
def test_builders_encode_validate_round_trip(msg):
    kind, canonical = L.validate_client_message(json.loads(L.encode(msg)), transparent_allowed=True)
    assert kind == next(iter(msg))
    assert canonical == msg
    assert L.client_message_kind(msg) == kind


@settings(max_examples=150)
@given(client_messages(), st.data())
def test_snake_case_variants_validate_to_the_same_canonical_form(msg, data):
    respelled = _respell(S.message(S.CLIENT_ROOT), msg, data.draw)
    assert L.validate_client_message(respelled, transparent_allowed=True) == (next(iter(msg)), msg)


@given(st.binary(max_size=100), st.booleans(), st.booleans())
def test_base64_any_alphabet_any_padding(data, urlsafe, strip):
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if strip:
        text = text.rstrip("=")
    assert L.b64decode_any(text) == data
    assert L.b64decode_any(L.b64encode(data)) == data
    assert L.b64encode(data) == base64.b64encode(data).decode()


@given(st.integers(-(10**15), 10**15))
def test_duration_round_trip_nanoseconds(nanos):
    whole, frac = divmod(abs(nanos), 10**9)
    text = ("-" if nanos < 0 else "") + (
        f"{whole}.{frac:09d}".rstrip("0") + "s" if frac else f"{whole}s"
    )
    seconds = L.parse_duration(text)
    assert abs(seconds - nanos / 1e9) <= max(1e-9, abs(seconds) * 1e-15)
    assert (
        L.format_duration(seconds) == text
        or abs(L.parse_duration(L.format_duration(seconds)) - seconds) <= 1e-9
    )


@given(st.floats(-1e9, 1e9, allow_nan=False))
def test_format_duration_parses_back(seconds):
    assert (
        abs(L.parse_duration(L.format_duration(seconds)) - seconds) <= 1e-9 + abs(seconds) * 1e-15
    )


@settings(max_examples=150)
@given(
    handle=st.text(max_size=30),
    resumable=st.booleans(),
    index=st.none() | st.integers(0, 2**62),
    text=st.text(max_size=30),
    ids_=st.lists(ids, max_size=4),
    pcm=st.binary(max_size=64),
    seconds=st.integers(0, 3600),
    args=structs,
    binary=st.booleans(),
)
def test_server_builders_parse_back(
    handle, resumable, index, text, ids_, pcm, seconds, args, binary
):
    def parse(msg):
        frame = L.encode(msg)
        return L.parse_server_frame(frame.encode() if binary else frame)

    upd = parse(L.session_resumption_update(handle, resumable, index))
    assert (upd.new_handle, upd.resumable, upd.last_consumed_index) == (handle, resumable, index)
    assert parse(L.go_away(seconds)).time_left == seconds
    assert parse(L.server_text(text)).text == text
    assert parse(L.input_transcription(text)).input_transcription == text
    assert parse(L.output_transcription(text)).output_transcription == text
    assert parse(L.tool_call_cancellation(ids_)).cancelled_ids == ids_
    calls = [{"id": i, "name": "f", "args": args} for i in ids_]
    assert parse(L.tool_call(calls)).function_calls == calls
    assert parse(L.server_audio(pcm)).audio_chunks == [pcm]
    done = parse(L.turn_complete(L.usage_metadata(3, 4)))
    assert done.turn_boundary and done.usage == {
        "promptTokenCount": 3,
        "responseTokenCount": 4,
        "totalTokenCount": 7,
    }


# ----------------------------------------------------------------- robustness

_ACCESSORS = [
    "usage", "time_left", "new_handle", "resumable", "last_consumed_index", "turn_complete",
    "generation_complete", "interrupted", "turn_boundary", "function_calls", "cancelled_ids",
    "text", "audio_chunks", "input_transcription", "output_transcription",
    "interaction_status", "interaction_complete", "waiting_for_input", "turn_complete_reason",
    "interim_input_transcription",
]  # fmt: skip

server_keys = st.sampled_from(sorted({n for m in S.MESSAGES.values() for n in m.lookup})) | st.text(
    max_size=6
)
server_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(server_keys, inner, max_size=4),
    max_leaves=25,
)


def _parse_safely(frame) -> None:
    try:
        msg = L.parse_server_frame(frame)
    except FrameError:
        return
    if msg is not None:
        assert msg.kind in L.SERVER_KINDS + ("usageMetadata", "unknown")
        for name in _ACCESSORS:
            getattr(msg, name)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_parse_arbitrary_bytes_raises_only_frame_error(data):
    _parse_safely(data)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_parse_arbitrary_text_raises_only_frame_error(text):
    _parse_safely(text)


@settings(max_examples=200)
@given(server_json, st.booleans())
def test_parse_arbitrary_json_raises_only_frame_error(value, binary):
    text = json.dumps(value)
    _parse_safely(text.encode() if binary else text)


@settings(max_examples=200)
@given(json_values | client_fuzz)
def test_validate_arbitrary_json_raises_only_validation_error(value):
    try:
        kind, canonical = L.validate_client_message(value)
    except L.LiveValidationError as err:
        assert err.kind in L.LiveValidationError.KINDS
        assert len(err.server_reason().encode()) <= L.MAX_REASON_BYTES
        assert isinstance(err, LiveMessageError)
    else:
        assert kind in L.CLIENT_KINDS and list(canonical) == [kind]
        # canonical output is a fixed point
        assert L.validate_client_message(canonical) == (kind, canonical)


# The audio fast path must accept only what the full validator accepts, with the same result.
_b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ", max_size=40)


@given(
    data=st.one_of(_b64ish, st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())),
    mime=st.one_of(st.just("audio/pcm;rate=16000"), st.text(max_size=10), st.integers()),
    extra=st.dictionaries(st.sampled_from(["mime_type", "data", "video", "x"]), st.just("v"), max_size=1),
)
def test_audio_fast_path_agrees_with_the_full_validator(data, mime, extra):
    from geminid.protocol.live import _fast_audio, _validate

    media = {"data": data, "mimeType": mime, **extra}
    msg = {"realtimeInput": {"audio": media}}
    fast = _fast_audio(msg)
    if fast is None:
        return
    assert _validate(msg, False) == ("realtimeInput", fast)


@given(st.one_of(_b64ish, st.text(max_size=12), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())))
@example("===")
@example("A=B=")
@example("AB\u00e9=")
@example("AB\n")
def test_quick_base64_check_is_the_regex(data):
    """``_fast_b64`` (the audio hot path's check) answers exactly what ``_FAST_B64`` does."""
    from geminid.protocol.live import _FAST_B64, _fast_b64

    assert _fast_b64(data) == (_FAST_B64.fullmatch(data) is not None)


@given(st.dictionaries(server_keys, server_json, min_size=1, max_size=4), st.booleans())
@example({"server_content": {"model_turn": {"parts": [{"text": "a"}]}}}, False)
@example({"serverContent": {"modelTurn": {"parts": [{"text": "é_"}]}}}, True)
def test_camel_case_frames_skip_the_walk_and_parse_the_same(obj, ascii_only):
    """parse_server_frame skips the casing walk for a frame with no ``_`` and no ``\\u``
    escape (the service's own frames); the result must be what the walk gives, for any frame."""
    text = json.dumps(obj, ensure_ascii=ascii_only)
    msg = L.parse_server_frame(text)
    walked = L._normalise(S.message(S.SERVER_ROOT), json.loads(text))
    assert msg is not None
    assert msg.raw == walked
    assert msg.kind == L._server_kind(walked)
