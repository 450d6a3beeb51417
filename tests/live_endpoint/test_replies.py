"""ReplyView (pure): a reply that started again after a reconnect reaches a Live client once."""

from __future__ import annotations

import base64
from typing import Any

from geminid.daemon.live.replies import INTERRUPTED, ReplyView
from geminid.daemon.live.toolreuse import ToolReuse
from geminid.daemon.live.translate import translate


def text(t: str, *, done: bool = False) -> dict[str, Any]:
    sc: dict[str, Any] = {"modelTurn": {"parts": [{"text": t}]}}
    if done:
        sc["turnComplete"] = True
    return {"serverContent": sc}


def audio(data: bytes) -> dict[str, Any]:
    b64 = base64.b64encode(data).decode()
    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                                      "data": b64}}]}}}


def joined(frames: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for f in frames
                   for p in f.get("serverContent", {}).get("modelTurn", {}).get("parts", []))


def test_the_repeated_start_of_a_restarted_reply_is_left_out() -> None:
    v = ReplyView()
    got = v.message(text("turn 3: he"), replayed=False)
    v.connection_changed()
    got += v.message(text("turn "), replayed=True)  # wholly given: left out
    got += v.message(text("3: heard"), replayed=True)  # goes past: cut to the new part
    got += v.message(text(" x.", done=True), replayed=True)
    assert joined(got) == "turn 3: heard x."
    assert [f["serverContent"].get("turnComplete") for f in got] == [None, None, True]
    assert v.hidden == 1
    # the turn is over: the next one starts from nothing
    assert v.message(text("turn 4", done=True), replayed=False) == [text("turn 4", done=True)]


def test_a_different_answer_is_shown_after_interrupted() -> None:
    v = ReplyView()
    v.message(text("turn 3: heard a"), replayed=False)
    v.connection_changed()
    got = v.message(text("turn 3: said b"), replayed=True)
    assert got == [INTERRUPTED, text("turn 3: said b")]
    assert v.diverged == 1
    # from there on, the new answer goes through whole
    assert v.message(text(" more"), replayed=True) == [text(" more")]


def test_replayed_frames_without_a_reconnect_in_between_are_not_compared() -> None:
    # "replayed" marks every frame of the restarted reply: only the first after a reconnect
    # starts the comparison again, later ones extend what was given.
    v = ReplyView()
    v.connection_changed()
    a = v.message(text("turn 1: "), replayed=True)
    b = v.message(text("turn 1: "), replayed=True)
    assert joined(a + b) == "turn 1: turn 1: "


def test_audio_and_transcriptions_are_compared_by_channel() -> None:
    v = ReplyView()
    v.message({"serverContent": {"inputTranscription": {"text": "(400 ms of audio)"}}}, replayed=False)
    v.message(audio(b"\x01\x02\x03\x04"), replayed=False)
    v.connection_changed()
    assert v.message({"serverContent": {"inputTranscription": {"text": "(400 ms of audio)"}}},
                     replayed=True) == []
    got = v.message(audio(b"\x01\x02\x03\x04\x05\x06"), replayed=True)
    data = got[0]["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"]
    assert base64.b64decode(data) == b"\x05\x06"


def test_a_lost_tool_call_is_cancelled_and_its_turn_starts_again() -> None:
    v = ReplyView()
    v.message(text("turn 2: get_wea"), replayed=False)
    out = translate("session.tool_call_lost", {"ids": ["fc_1"]}, v, ToolReuse(), continue_on_context_loss=False)
    assert isinstance(out, list) and [f.text for f in out] == ['{"toolCallCancellation":{"ids":["fc_1"]}}']
    # the model's new answer (not marked replayed: it answers a new toolResponse) starts again
    got = v.message(text("turn 2: get_weather returned 1.", done=True), replayed=False)
    assert joined(got) == "ther returned 1."


def test_frames_other_than_server_content_pass() -> None:
    v = ReplyView()
    v.connection_changed()
    msg = {"toolCall": {"functionCalls": [{"id": "a", "name": "f"}]}}
    assert v.message(msg, replayed=True) == [msg]


def test_a_hidden_repeat_carries_no_usage_to_count_twice() -> None:
    # The repeated frame's usage describes what the client was already given (with its own
    # usageMetadata): forwarded, an SDK tallying usage would count it twice.
    usage = {"promptTokenCount": 7, "responseTokenCount": 3, "totalTokenCount": 10}
    v = ReplyView()
    first = {**text("turn 3: he"), "usageMetadata": usage}
    assert v.message(first, replayed=False) == [first]
    v.connection_changed()
    assert v.message({**text("turn 3: he"), "usageMetadata": usage}, replayed=True) == []
    assert v.hidden == 1
    # a repeat that goes past what was given keeps its usage (it is news)
    got = v.message({**text("ard", done=True), "usageMetadata": usage}, replayed=True)
    assert got == [{**text("ard", done=True), "usageMetadata": usage}]
