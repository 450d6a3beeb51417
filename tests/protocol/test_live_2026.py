"""The codec's 2026 fields: interactionStatus (and the one interaction-complete rule),
waitingForInput, interimInputTranscription, turnCompleteReason."""

from __future__ import annotations

import json

import pytest

from geminid.protocol import live as L
from geminid.protocol.live import InteractionStatus as IS


def parse(msg: dict) -> L.ServerMessage:
    parsed = L.parse_server_frame(json.dumps(msg).encode())
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        ("IN_PROGRESS", IS.IN_PROGRESS),
        ("IDLE", IS.IDLE),
        ("REQUIRES_ACTION", IS.IDLE),  # deprecated alias of IDLE
        ("INTERACTION_STATUS_UNSPECIFIED", IS.UNSPECIFIED),
        ("WAITING_FOR_INPUT", IS.UNKNOWN),  # listed by vercel/ai, not by the SDK
        ("", IS.UNKNOWN),
        (3, None),
        (None, None),
    ],
)
def test_interaction_status_parse(wire, status):
    assert IS.parse(wire) is status
    content = {"turnComplete": True} | ({} if wire is None else {"interactionStatus": wire})
    assert parse({"serverContent": content}).interaction_status is status


@pytest.mark.parametrize(
    ("turn_complete", "status", "complete"),
    [
        (True, None, True),
        (False, None, False),
        (True, IS.IDLE, True),
        (False, IS.IDLE, True),
        (True, IS.IN_PROGRESS, False),  # an extended-thinking filler
        (True, IS.UNSPECIFIED, True),
        (False, IS.UNSPECIFIED, False),
        (True, IS.UNKNOWN, True),  # unknown value: turnComplete decides
        (False, IS.UNKNOWN, False),
    ],
)
def test_interaction_complete_rule(turn_complete, status, complete):
    assert L.interaction_complete(turn_complete, status) is complete


def test_the_extended_thinking_sequence():
    filler = parse(L.turn_complete(L.usage_metadata(1, 2), "IN_PROGRESS"))
    answer = parse(L.turn_complete(None, "IDLE"))
    assert filler.turn_complete and filler.turn_boundary and not filler.interaction_complete
    assert answer.interaction_complete
    legacy = parse(L.turn_complete())
    assert legacy.interaction_status is None and legacy.interaction_complete
    assert parse({"serverContent": {"turnComplete": True, "interactionStatus": "REQUIRES_ACTION"}}).interaction_complete
    assert not parse(L.generation_complete()).interaction_complete


def test_waiting_for_input_interim_and_reason():
    waiting = parse(L.waiting_for_input())
    assert waiting.waiting_for_input and not waiting.turn_boundary and not waiting.interaction_complete
    interim = parse(L.interim_input_transcription("hel"))
    assert interim.interim_input_transcription == "hel" and interim.input_transcription is None
    reason = parse({"server_content": {"turn_complete": True, "turn_complete_reason": "NEED_MORE_INPUT"}})
    assert reason.turn_complete_reason == "NEED_MORE_INPUT"
    assert parse({"serverContent": {"turnCompleteReason": 7}}).turn_complete_reason is None
    assert parse({"serverContent": {"waitingForInput": "yes"}}).waiting_for_input is False
    # snake_case on the wire is normalised too
    assert parse({"server_content": {"interaction_status": "IDLE", "waiting_for_input": True}}).waiting_for_input


def test_builders_use_the_schema_names():
    assert L.turn_complete(None, "IDLE") == {"serverContent": {"turnComplete": True, "interactionStatus": "IDLE"}}
    assert L.turn_complete() == {"serverContent": {"turnComplete": True}}
    assert L.waiting_for_input() == {"serverContent": {"waitingForInput": True}}
    assert L.interim_input_transcription("x") == {"serverContent": {"interimInputTranscription": {"text": "x"}}}


def test_tool_response_scheduling_is_validated():
    ok = {"toolResponse": {"functionResponses": [
        {"id": "a", "name": "f", "response": {}, "willContinue": True}]}}
    for s in ("SILENT", "WHEN_IDLE", "INTERRUPT"):
        ok["toolResponse"]["functionResponses"][0]["scheduling"] = s
        assert L.validate_client_message(ok)[0] == "toolResponse"
    ok["toolResponse"]["functionResponses"][0]["scheduling"] = "INTERRUPTED"
    with pytest.raises(L.LiveValidationError) as err:
        L.validate_client_message(ok)
    assert err.value.server_reason().startswith("Invalid value at 'tool_response.function_responses[0].scheduling'")


def test_function_declaration_behavior_is_validated():
    setup = {"setup": {"model": "models/gemini-3.8-live", "tools": [
        {"functionDeclarations": [{"name": "f", "behavior": "NON_BLOCKING"}]}]}}
    assert L.validate_client_message(setup)[0] == "setup"
    setup["setup"]["tools"][0]["functionDeclarations"][0]["behavior"] = "ASYNC"
    with pytest.raises(L.LiveValidationError):
        L.validate_client_message(setup)
