"""ToolReuse (pure): a tool call lost to a reconnect and asked again alike is answered with the Live
client's own response; one it had not answered is cancelled; a different one is shown."""

from __future__ import annotations

from typing import Any

from geminid.daemon.live.replies import ReplyView
from geminid.daemon.live.toolreuse import ToolReuse
from geminid.daemon.live.translate import Answer, Forward, translate


def call(call_id: str, city: str = "Oslo") -> dict[str, Any]:
    return {"toolCall": {"functionCalls": [{"id": call_id, "name": "get_weather", "args": {"city": city}}]}}


def response(call_id: str) -> dict[str, Any]:
    return {"toolResponse": {"functionResponses": [{"id": call_id, "name": "get_weather",
                                                    "response": {"sky": "clear"}}]}}


def test_an_answered_lost_call_asked_again_alike_is_answered_here() -> None:
    t = ToolReuse()
    assert t.tool_call(call("a")).show == call("a")
    t.client_responded(response("a"))
    assert t.lost(["a"]) == []  # answered: nothing to cancel at the client
    split = t.tool_call(call("b"))
    assert split.show is None
    assert split.answer == response("b")
    assert t.reused == 1
    # only once: the same question a third time is the client's again
    assert t.tool_call(call("c")).show == call("c")


def test_an_unanswered_lost_call_is_cancelled_and_its_new_call_shown() -> None:
    t = ToolReuse()
    t.tool_call(call("a"))
    assert t.lost(["a"]) == ["a"]
    assert t.tool_call(call("b")).show == call("b")


def test_a_different_question_is_shown() -> None:
    t = ToolReuse()
    t.tool_call(call("a"))
    t.client_responded(response("a"))
    t.lost(["a"])
    split = t.tool_call(call("b", city="Lima"))
    assert split.show == call("b", city="Lima") and split.answer is None


def test_through_translate_the_client_sees_neither_the_second_call_nor_a_cancellation() -> None:
    v, t = ReplyView(), ToolReuse()

    def tr(method: str, params: dict[str, Any]) -> Any:
        return translate(method, params, v, t, continue_on_context_loss=False)

    assert [type(a) for a in tr("session.message", {"message": call("a")})] == [Forward]
    t.client_responded(response("a"))
    assert tr("session.tool_call_lost", {"ids": ["a"]}) == []
    assert tr("session.message", {"message": call("b")}) == [Answer(response("b"))]
    done = {"serverContent": {"turnComplete": True}}
    assert [type(a) for a in tr("session.message", {"message": done})] == [Forward]
    assert t.reusable == {} and t.shown == {}


def test_a_reused_answer_lost_again_is_reused_again_not_cancelled() -> None:
    # (found by the soak: the call geminid answered was lost in a second reconnect, and the
    # client was sent a cancellation of an id it had never seen)
    t = ToolReuse()
    t.tool_call(call("a"))
    t.client_responded(response("a"))
    t.lost(["a"])
    assert t.tool_call(call("b")).answer == response("b")
    assert t.lost(["b"]) == []
    split = t.tool_call(call("c"))
    assert split.show is None and split.answer == response("c")
