"""A tool call lost to a reconnect, answered again without the Live client (pure).

The server forgets a call it issued when the connection ends before a handle covers it; geminid
replays the turn and the model asks again, with a new id (README, "Tool calls across
reconnects"). A JSON-RPC client is told (``session.tool_call_lost``) and answers again. A Live
client speaks the plain protocol: it already answered, and asking it again is the upstream's
churn showing. So, per Live client, :class:`ToolReuse` remembers each call it was shown and the
response it gave; when such a call is lost and the model asks **the same** (same name, same
arguments) again, geminid answers the new id with the client's own response and the client
never sees the second call. What cannot be hidden is said in the protocol's terms:

- a lost call the client had not answered yet is cancelled (``toolCallCancellation``, as the
  service cancels a call), so it does not answer a dead id;
- a new call that differs from every lost one is shown as it is.

Events in (calls shown, responses given, ids lost, turn ends), decisions out; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import attrs


def _key(call: dict[str, Any]) -> str:
    return json.dumps([call.get("name"), call.get("args") or {}], sort_keys=True, separators=(",", ":"))


@attrs.frozen
class CallSplit:
    """What to do with one ``toolCall`` message."""

    #: The message for the client (its calls not answered here), or None if none is left.
    show: dict[str, Any] | None
    #: A ``toolResponse`` message geminid sends upstream itself, or None.
    answer: dict[str, Any] | None


@attrs.define
class ToolReuse:
    """See the module docstring. One per Live client."""

    #: id -> the call as shown to the client (while its turn lasts).
    shown: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: id -> the functionResponse the client gave.
    given: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: key of (name, args) -> the response of a lost call the client had answered.
    reusable: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: How many calls were answered here (for the connection's log line).
    reused: int = 0

    def client_responded(self, message: dict[str, Any]) -> None:
        body = message.get("toolResponse")
        if not isinstance(body, dict):
            return
        for fr in body.get("functionResponses") or []:
            if isinstance(fr, dict) and isinstance(fr.get("id"), str) and fr["id"] in self.shown:
                self.given[fr["id"]] = fr

    def lost(self, ids: list[str]) -> list[str]:
        """Calls lost to a reconnect; returns the ids to cancel at the client (not answered)."""
        cancel = []
        for call_id in ids:
            call = self.shown.pop(call_id, None)
            response = self.given.pop(call_id, None)
            if call is not None and response is not None:
                self.reusable[_key(call)] = response
            else:
                cancel.append(call_id)
        return cancel

    def tool_call(self, message: dict[str, Any]) -> CallSplit:
        body = message.get("toolCall")
        if not isinstance(body, dict):
            return CallSplit(message, None)
        show, answers = [], []
        for call in body.get("functionCalls") or []:
            if not isinstance(call, dict):
                show.append(call)
                continue
            earlier = self.reusable.pop(_key(call), None)
            if earlier is not None and isinstance(call.get("id"), str):
                reply = {**earlier, "id": call["id"]}
                answers.append(reply)
                self.reused += 1
                # as if the client had been shown it and answered: lost again, it is reused again
                self.shown[call["id"]] = call
                self.given[call["id"]] = reply
            else:
                show.append(call)
                if isinstance(call.get("id"), str):
                    self.shown[call["id"]] = call
        if not answers:
            return CallSplit(message, None)
        shown = {**message, "toolCall": {**body, "functionCalls": show}} if show else None
        return CallSplit(shown, {"toolResponse": {"functionResponses": answers}})

    def turn_complete(self) -> None:
        """The turn ended: its calls are settled, and one asked again later is a new question."""
        self.shown.clear()
        self.given.clear()
        self.reusable.clear()
