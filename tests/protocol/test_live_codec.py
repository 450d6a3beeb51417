"""Specific cases for the Gemini Live codec: builders, validation errors, server parsing."""

from __future__ import annotations

import json

import pytest

from geminid.protocol import live as L
from geminid.protocol.errors import FrameError, LiveMessageError


def refused(obj, **kw) -> L.LiveValidationError:
    with pytest.raises(L.LiveValidationError) as info:
        L.validate_client_message(obj, **kw)
    return info.value


# ----------------------------------------------------------------- builders


def test_setup_builder_is_canonical_camel_case():
    msg = L.setup(
        "gemini-3.8-live",
        generation_config={"temperature": 0.2, "speech_config": {"voice_config": {}}},
        system_instruction="be brief",
        session_resumption={},
        context_window_compression={
            "trigger_tokens": 1000,
            "sliding_window": {"target_tokens": 500},
        },
        input_audio_transcription=True,
        output_audio_transcription=True,
        realtime_input_config={"automatic_activity_detection": {"disabled": True}},
        response_modalities=["AUDIO"],
    )
    assert msg == {
        "setup": {
            "model": "models/gemini-3.8-live",
            "generationConfig": {
                "temperature": 0.2,
                "speechConfig": {"voiceConfig": {}},
                "responseModalities": ["AUDIO"],
            },
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
            "sessionResumption": {},
            "contextWindowCompression": {
                "triggerTokens": 1000,
                "slidingWindow": {"targetTokens": 500},
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
        }
    }
    assert L.validate_client_message(json.loads(L.encode(msg))) == ("setup", msg)


def test_setup_keeps_a_resource_name_and_allows_transparent():
    msg = L.setup(
        "projects/p/locations/l/publishers/google/models/m",
        session_resumption={"handle": "h", "transparent": True},
    )
    assert msg["setup"]["model"].startswith("projects/")
    assert msg["setup"]["sessionResumption"] == {"handle": "h", "transparent": True}
    # ...but the default validator (the Developer API) refuses it like the real server does.
    err = refused(msg)
    assert err.kind == "unknown_field" and err.path == "setup.sessionResumption.transparent"
    assert L.validate_client_message(msg, transparent_allowed=True) == ("setup", msg)


def test_setup_builder_refuses_junk_early():
    with pytest.raises(L.LiveValidationError) as info:
        L.setup("m", generation_config={"input_audio_transcription": {}})
    assert info.value.path == "setup.generationConfig.input_audio_transcription"


def test_client_content_builder():
    assert L.client_content("hi") == {
        "clientContent": {
            "turns": [{"parts": [{"text": "hi"}], "role": "user"}],
            "turnComplete": True,
        }
    }
    msg = L.client_content(
        [{"parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}],
        turn_complete=False,
    )
    assert [t["role"] for t in msg["clientContent"]["turns"]] == ["user", "model"]
    assert msg["clientContent"]["turnComplete"] is False


def test_realtime_builders():
    assert L.realtime_audio(b"\x00\x01") == {
        "realtimeInput": {"audio": {"data": "AAE=", "mimeType": "audio/pcm;rate=16000"}}
    }
    assert (
        L.realtime_audio(b"", rate=8000)["realtimeInput"]["audio"]["mimeType"]
        == "audio/pcm;rate=8000"
    )
    assert L.realtime_video(b"\xff", "image/jpeg") == {
        "realtimeInput": {"video": {"data": "/w==", "mimeType": "image/jpeg"}}
    }
    assert L.realtime_text("yo") == {"realtimeInput": {"text": "yo"}}
    assert L.audio_stream_end() == {"realtimeInput": {"audioStreamEnd": True}}
    assert L.activity_start() == {"realtimeInput": {"activityStart": {}}}
    assert L.activity_end() == {"realtimeInput": {"activityEnd": {}}}
    for msg in (
        L.realtime_audio(b"x"),
        L.realtime_video(b"x", "image/png"),
        L.realtime_text("t"),
        L.audio_stream_end(),
        L.activity_start(),
        L.activity_end(),
    ):
        assert L.validate_client_message(msg) == ("realtimeInput", msg)


def test_tool_response_builder():
    msg = L.tool_response([L.function_response("c1", "get_weather", {"temp_c": 21})])
    assert msg == {
        "toolResponse": {
            "functionResponses": [{"id": "c1", "name": "get_weather", "response": {"temp_c": 21}}]
        }
    }


def test_context_update_builder():
    msg = L.context_update(
        system_instruction="new rules", tools=[{"function_declarations": [{"name": "f"}]}]
    )
    assert msg == {
        "contextUpdate": {
            "systemInstruction": {"parts": [{"text": "new rules"}]},
            "tools": {"tools": [{"functionDeclarations": [{"name": "f"}]}]},
        }
    }


def test_encode_is_compact_and_keeps_unicode():
    assert L.encode({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'
    with pytest.raises(LiveMessageError):
        L.encode({"x": float("nan")})
    with pytest.raises(LiveMessageError):
        L.encode({"x": object()})


# ----------------------------------------------------------------- base64 and durations


def test_b64_both_alphabets():
    data = bytes([0xFB, 0xFF, 0xBF])
    assert L.b64encode(data) == "+/+/"
    assert L.b64decode_any("+/+/") == data
    assert L.b64decode_any("-_-_") == data
    assert L.b64decode_any("AAE") == b"\x00\x01"
    assert L.b64decode_any("AAE=") == b"\x00\x01"
    assert L.b64decode_any("") == b""


@pytest.mark.parametrize("junk", ["A", "AB=C", "AB===", "A!==", "AAE==", " AAE=", 5, None, b"AAE="])
def test_b64_junk(junk):
    with pytest.raises(LiveMessageError):
        L.b64decode_any(junk)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50s", 50.0),
        ("1.5s", 1.5),
        ("0.000001s", 1e-6),
        ("0s", 0.0),
        ("-2.25s", -2.25),
        ("0.000000001s", 1e-9),
    ],
)
def test_parse_duration(text, seconds):
    assert L.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "50",
        "s",
        "1.s",
        ".5s",
        "1.5 s",
        "1e3s",
        "1.0000000001s",
        "50S",
        50,
        None,
        "999999999999999s",
    ],
)
def test_parse_duration_junk(junk):
    with pytest.raises(LiveMessageError):
        L.parse_duration(junk)


def test_format_duration():
    assert L.format_duration(50) == "50s"
    assert L.format_duration(1.5) == "1.5s"
    assert L.format_duration(1e-6) == "0.000001s"
    assert L.format_duration(-0.25) == "-0.25s"
    for bad in (float("nan"), float("inf"), True, "5"):
        with pytest.raises(LiveMessageError):
            L.format_duration(bad)


# ----------------------------------------------------------------- validation errors


def test_unknown_field_deep_in_generation_config():
    err = refused({"setup": {"model": "models/m", "generationConfig": {"foo": 1}}})
    assert (err.kind, err.path) == ("unknown_field", "setup.generationConfig.foo")
    assert err.server_reason() == (
        "Invalid JSON payload received. Unknown name \"foo\" at 'setup.generation_config': Cannot find field."
    )
    assert isinstance(err, LiveMessageError) and err.data["path"] == err.path


def test_unknown_field_inside_a_turn_part():
    msg = {"client_content": {"turns": [{"role": "user", "parts": [{"text": "a"}, {"txet": "b"}]}]}}
    err = refused(msg)
    assert (err.kind, err.path) == ("unknown_field", "clientContent.turns[0].parts[1].txet")
    assert "at 'client_content.turns[0].parts[1]'" in err.server_reason()


def test_unknown_top_level_key():
    err = refused({"sertup": {}})
    assert (err.kind, err.path) == ("unknown_field", "sertup")
    assert (
        err.server_reason()
        == 'Invalid JSON payload received. Unknown name "sertup": Cannot find field.'
    )


def test_transcription_inside_generation_config_is_unknown():
    err = refused({"setup": {"generationConfig": {"outputAudioTranscription": {}}}})
    assert err.path == "setup.generationConfig.outputAudioTranscription"


def test_missing_role():
    err = refused(
        {"clientContent": {"turns": [{"role": "user", "parts": []}, {"parts": [{"text": "x"}]}]}}
    )
    assert (err.kind, err.path) == ("missing_field", "clientContent.turns[1].role")
    assert err.server_reason() == "Request contains an invalid argument."


def test_role_not_required_on_system_instruction():
    assert (
        L.validate_client_message({"setup": {"systemInstruction": {"parts": [{"text": "x"}]}}})[0]
        == "setup"
    )


def test_missing_function_response_id():
    err = refused({"toolResponse": {"functionResponses": [{"name": "f", "response": {}}]}})
    assert (err.kind, err.path) == ("missing_field", "toolResponse.functionResponses[0].id")


@pytest.mark.parametrize("obj", [{}, {"setup": None}])
def test_no_message_type(obj):
    assert refused(obj).kind == "not_one_key"


def test_two_top_level_keys():
    err = refused({"setup": {}, "client_content": {"turns": []}})
    assert (err.kind, err.path) == ("not_one_key", "clientContent")
    assert "Oneof field" in err.server_reason()


@pytest.mark.parametrize("obj", [[], "setup", 3, None, True])
def test_root_not_an_object(obj):
    err = refused(obj)
    assert (err.kind, err.path) == ("not_object", "")


def test_message_field_not_an_object():
    err = refused({"setup": {"generationConfig": 5}})
    assert (err.kind, err.path) == ("not_object", "setup.generationConfig")
    assert "GenerationConfig" in err.server_reason()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": 5}, "setup.model"),
        ({"generationConfig": {"temperature": "hot"}}, "setup.generationConfig.temperature"),
        ({"generationConfig": {"maxOutputTokens": 1.5}}, "setup.generationConfig.maxOutputTokens"),
        (
            {"generationConfig": {"responseModalities": "TEXT"}},
            "setup.generationConfig.responseModalities",
        ),
        (
            {"generationConfig": {"responseModalities": ["SMELL"]}},
            "setup.generationConfig.responseModalities[0]",
        ),
        ({"generationConfig": {"candidateCount": True}}, "setup.generationConfig.candidateCount"),
        ({"model": ["m"]}, "setup.model"),
    ],
)
def test_invalid_values(body, path):
    err = refused({"setup": body})
    assert (err.kind, err.path) == ("invalid_value", path)


def test_numbers_as_strings_and_integral_floats_are_fine():
    L.validate_client_message(
        {"setup": {"generationConfig": {"maxOutputTokens": "100", "topK": 3, "temperature": "0.5"}}}
    )
    L.validate_client_message({"setup": {"contextWindowCompression": {"triggerTokens": 1000.0}}})


def test_enum_names_are_case_insensitive_and_ints_accepted():
    L.validate_client_message({"setup": {"generationConfig": {"responseModalities": ["text", 1]}}})


def test_invalid_bytes():
    err = refused({"realtimeInput": {"audio": {"data": "not base64!", "mimeType": "audio/pcm"}}})
    assert (err.kind, err.path) == ("invalid_value", "realtimeInput.audio.data")


def test_same_field_in_both_casings():
    err = refused({"clientContent": {"turnComplete": True, "turn_complete": False}})
    assert (err.kind, err.path) == ("invalid_value", "clientContent.turnComplete")


def test_part_oneof():
    err = refused(
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "a", "inlineData": {"data": ""}}]}]
            }
        }
    )
    assert err.kind == "invalid_value"
    assert "Oneof field 'data'" in err.server_reason()


def test_struct_payload_keys_untouched():
    msg = {
        "tool_response": {
            "function_responses": [
                {
                    "id": "1",
                    "name": "f",
                    "response": {"snake_key": {"inner_snake": [{"x_y": 1}]}, "camelKey": None},
                }
            ]
        }
    }
    kind, canonical = L.validate_client_message(msg)
    assert kind == "toolResponse"
    assert canonical == {
        "toolResponse": {
            "functionResponses": [
                {
                    "id": "1",
                    "name": "f",
                    "response": {"snake_key": {"inner_snake": [{"x_y": 1}]}, "camelKey": None},
                }
            ]
        }
    }
    # a deep copy: mutating the result leaves the input alone
    canonical["toolResponse"]["functionResponses"][0]["response"]["snake_key"]["new"] = 1
    assert "new" not in msg["tool_response"]["function_responses"][0]["response"]["snake_key"]


def test_function_call_args_and_schema_properties_keep_user_keys():
    msg = {
        "setup": {
            "tools": [
                {
                    "function_declarations": [
                        {
                            "name": "f",
                            "parameters": {
                                "type": "OBJECT",
                                "properties": {"my_arg": {"type": "STRING", "max_length": "5"}},
                                "required": ["my_arg"],
                            },
                            "parameters_json_schema": {
                                "type": "object",
                                "properties": {"snake_case": {}},
                            },
                        }
                    ]
                }
            ]
        }
    }
    _, canonical = L.validate_client_message(msg)
    decl = canonical["setup"]["tools"][0]["functionDeclarations"][0]
    assert decl["parameters"]["properties"] == {"my_arg": {"type": "STRING", "maxLength": "5"}}
    assert decl["parametersJsonSchema"] == {"type": "object", "properties": {"snake_case": {}}}
    turn = {
        "role": "model",
        "parts": [{"function_call": {"id": "1", "name": "f", "args": {"a_b": {"c_d": 1}}}}],
    }
    _, canonical = L.validate_client_message({"clientContent": {"turns": [turn]}})
    assert canonical["clientContent"]["turns"][0]["parts"][0] == {
        "functionCall": {"id": "1", "name": "f", "args": {"a_b": {"c_d": 1}}}
    }


def test_struct_must_be_an_object():
    err = refused({"toolResponse": {"functionResponses": [{"id": "1", "response": [1]}]}})
    assert (err.kind, err.path) == ("not_object", "toolResponse.functionResponses[0].response")


def test_null_fields_are_unset_not_errors():
    kind, canonical = L.validate_client_message(
        {"setup": {"model": "models/m", "generationConfig": None}}
    )
    assert canonical == {"setup": {"model": "models/m", "generationConfig": None}}


def test_client_message_kind():
    assert L.client_message_kind({"client_content": {"anything": 1}}) == "clientContent"
    assert L.client_message_kind({"realtimeInput": {}}) == "realtimeInput"
    with pytest.raises(L.LiveValidationError):
        L.client_message_kind({"setup": {}, "toolResponse": {}})
    with pytest.raises(L.LiveValidationError):
        L.client_message_kind({"bogus": {}})
    with pytest.raises(L.LiveValidationError):
        L.client_message_kind([])


def test_server_reason_is_cut_at_123_bytes():
    err = refused({"setup": {"generationConfig": {"é" * 100: 1}}})
    reason = err.server_reason()
    assert len(reason.encode("utf-8")) <= 123
    assert reason.startswith("Invalid JSON payload received. Unknown name")


def test_very_deep_nesting_is_a_validation_error():
    deep: object = 1
    for _ in range(5000):
        deep = {"a": deep}
    err = refused({"toolResponse": {"functionResponses": [{"id": "1", "response": deep}]}})
    assert err.kind == "invalid_value"


# ----------------------------------------------------------------- server parsing


def test_bare_empty_frame_is_none():
    assert L.parse_server_frame(b"{}") is None
    assert L.parse_server_frame(" {} ") is None


def test_binary_and_text_frames():
    for frame in (
        b'{"setupComplete":{}}',
        '{"setupComplete":{}}',
        bytearray(b'{"setupComplete":{}}'),
    ):
        msg = L.parse_server_frame(frame)
        assert msg is not None and msg.kind == "setupComplete"


@pytest.mark.parametrize(
    "frame", [b"\xff\xfe", b"not json", "[1]", '"s"', b"null", "", 5, None, "[" * 100_000]
)
def test_bad_frames(frame):
    with pytest.raises(FrameError):
        L.parse_server_frame(frame)


def test_resumption_update_int64_as_string():
    msg = L.parse_server_frame(
        '{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true,"lastConsumedClientMessageIndex":"12"}}'
    )
    assert (msg.kind, msg.new_handle, msg.resumable, msg.last_consumed_index) == (
        "sessionResumptionUpdate",
        "h1",
        True,
        12,
    )
    empty = L.parse_server_frame('{"sessionResumptionUpdate":{}}')
    assert (empty.new_handle, empty.resumable, empty.last_consumed_index) == ("", False, None)


def test_unknown_server_keys_kept_and_snake_case_normalised():
    frame = {
        "server_content": {"turn_complete": True, "brandNewField": {"x_y": 1}},
        "usage_metadata": {"total_token_count": 7},
        "futureMessage": {"a_b": 2},
    }
    msg = L.parse_server_frame(json.dumps(frame).encode())
    assert msg.raw == {
        "serverContent": {"turnComplete": True, "brandNewField": {"x_y": 1}},
        "usageMetadata": {"totalTokenCount": 7},
        "futureMessage": {"a_b": 2},
    }
    assert msg.kind == "serverContent" and msg.turn_complete and msg.turn_boundary
    assert msg.usage == {"totalTokenCount": 7}


def test_tool_call_args_untouched():
    frame = {
        "tool_call": {
            "function_calls": [{"id": "1", "name": "f", "args": {"snake_arg": {"deep_key": 1}}}]
        }
    }
    msg = L.parse_server_frame(json.dumps(frame))
    assert msg.function_calls == [{"id": "1", "name": "f", "args": {"snake_arg": {"deep_key": 1}}}]


def test_kinds():
    assert L.parse_server_frame('{"usageMetadata":{"totalTokenCount":1}}').kind == "usageMetadata"
    assert L.parse_server_frame('{"voiceActivity":{}}').kind == "unknown"
    assert L.parse_server_frame('{"whatever":1}').kind == "unknown"


def test_go_away():
    msg = L.parse_server_frame(L.encode(L.go_away(50)))
    assert msg.kind == "goAway" and msg.time_left == 50.0
    assert L.parse_server_frame('{"goAway":{"timeLeft":"junk"}}').time_left is None
    assert L.parse_server_frame('{"goAway":{}}').time_left is None
    assert L.parse_server_frame('{"setupComplete":{}}').time_left is None


def test_accessors_tolerate_wrong_shapes():
    msg = L.parse_server_frame(
        '{"serverContent":[1],"toolCall":"x","toolCallCancellation":{"ids":[1,"a"]},'
        '"sessionResumptionUpdate":{"newHandle":5,"resumable":"yes","lastConsumedClientMessageIndex":"x"}}'
    )
    assert msg.text == "" and msg.audio_chunks == [] and msg.function_calls == []
    assert msg.cancelled_ids == ["a"]
    assert (msg.new_handle, msg.resumable, msg.last_consumed_index) == ("", False, None)
    assert not msg.turn_boundary and msg.input_transcription is None


def test_text_and_audio_accessors():
    frame = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {"text": "Hel"},
                    {"text": "secret plan", "thought": True},
                    {"text": "lo"},
                    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAE"}},
                    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "!!"}},
                    {"inlineData": {"mimeType": "image/png", "data": "AAE="}},
                ]
            }
        }
    }
    msg = L.parse_server_frame(json.dumps(frame))
    assert msg.text == "Hello"
    assert msg.audio_chunks == [b"\x00\x01"]


def test_server_message_helper_camelcases_known_fields_only():
    assert L.server_message(
        server_content={"turn_complete": True}, usage_metadata={"total_token_count": 3}
    ) == {
        "serverContent": {"turnComplete": True},
        "usageMetadata": {"totalTokenCount": 3},
    }
    assert L.server_message(tool_call={"function_calls": [{"id": "1", "args": {"a_b": 1}}]}) == {
        "toolCall": {"functionCalls": [{"id": "1", "args": {"a_b": 1}}]}
    }


def test_server_builders_round_trip():
    usage = L.usage_metadata(10, 5)
    cases = [
        (L.setup_complete(), "setupComplete", {}),
        (
            L.session_resumption_update("h", True, 3),
            "sessionResumptionUpdate",
            {"new_handle": "h", "resumable": True, "last_consumed_index": 3},
        ),
        (
            L.session_resumption_update("", False),
            "sessionResumptionUpdate",
            {"new_handle": "", "resumable": False, "last_consumed_index": None},
        ),
        (L.go_away(1.5), "goAway", {"time_left": 1.5}),
        (L.server_text("hi"), "serverContent", {"text": "hi", "turn_boundary": False}),
        (
            L.generation_complete(),
            "serverContent",
            {"generation_complete": True, "turn_boundary": True},
        ),
        (L.turn_complete(usage), "serverContent", {"turn_complete": True, "usage": usage}),
        (L.turn_complete(), "serverContent", {"turn_complete": True, "usage": None}),
        (L.interrupted(), "serverContent", {"interrupted": True, "turn_boundary": True}),
        (
            L.tool_call([{"id": "1", "name": "f", "args": {}}]),
            "toolCall",
            {"function_calls": [{"id": "1", "name": "f", "args": {}}]},
        ),
        (
            L.tool_call_cancellation(["1", "2"]),
            "toolCallCancellation",
            {"cancelled_ids": ["1", "2"]},
        ),
        (
            L.input_transcription("in"),
            "serverContent",
            {"input_transcription": "in", "output_transcription": None},
        ),
        (L.output_transcription("out"), "serverContent", {"output_transcription": "out"}),
        (L.server_audio(b"\x01\x02"), "serverContent", {"audio_chunks": [b"\x01\x02"], "text": ""}),
    ]
    for built, kind, expected in cases:
        assert json.loads(L.encode(built)) == built
        msg = L.parse_server_frame(L.encode(built).encode())
        assert msg is not None and msg.kind == kind, built
        assert msg.raw == built
        for attr, value in expected.items():
            assert getattr(msg, attr) == value, (built, attr)
    assert (
        L.session_resumption_update("h", True, 12)["sessionResumptionUpdate"][
            "lastConsumedClientMessageIndex"
        ]
        == "12"
    )
    assert (
        L.server_audio(b"")["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["mimeType"]
        == "audio/pcm;rate=24000"
    )
