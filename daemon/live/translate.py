"""Session events -> what a Live client sees (pure).

The session already hides the upstream's churn: its event stream holds each server message once,
in order, and leaves out the connection's own messages (setupComplete, goAway, the server's
resumption updates). What is left to decide here is how the few things that cannot be hidden are
said in the Live protocol's own terms:

- ``session.message``: the server message as a text frame, verbatim, except when its reply
  started again after a reconnect: then only what the client was not given yet
  (:class:`~.replies.ReplyView`);
- ``session.tool_call_lost``: the model asks again, and its reply starts again. A call the client
  answered and the model asks again alike is answered by geminid with the client's response
  (:class:`~.toolreuse.ToolReuse`: an :class:`Answer`); one it had not answered is cancelled
  (``toolCallCancellation {ids}``, the service's own way to say "do not answer these");
- ``session.context_lost``: the conversation restarted without its history. The client is
  closed (1011, with the reason) unless it opted in with ``?context_loss=continue``;
- ``session.ended``: a fatal upstream error closes with the code and reason the service sent
  (the session's reason starts with it); a session closed by someone else closes 1000;
- everything else (status transitions, lost tool calls, lag notices) is geminid's business.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from geminid.daemon.live.replies import ReplyView
from geminid.daemon.live.toolreuse import ToolReuse

#: A WebSocket close reason is at most 123 bytes of UTF-8.
MAX_REASON = 123
#: A failed session's reason is ``<cause>: <code> <server's reason>`` (SessionCore._failed).
_CODE = re.compile(r"^(?:[\w.-]+: )?(\d{4})\b\s*(.*)$", re.S)


@attrs.frozen
class Forward:
    text: str
    #: A turn ended here: a fresh resumption update follows it (like the real service).
    turn_complete: bool


@attrs.frozen
class Answer:
    """A client message geminid sends into the session itself (a reused tool response)."""

    message: dict[str, Any]


@attrs.frozen
class Close:
    code: int
    reason: str


Action = Forward | Close | None


def _frame(message: dict[str, Any]) -> Forward:
    content = message.get("serverContent")
    done = isinstance(content, dict) and bool(content.get("turnComplete"))
    return Forward(json.dumps(message, separators=(",", ":"), ensure_ascii=False), done)


def reason_text(text: str) -> str:
    raw = text.encode()
    if len(raw) <= MAX_REASON:
        return text
    return raw[: MAX_REASON - 3].decode(errors="ignore") + "..."


def translate(method: str, params: dict[str, Any], view: ReplyView, tools: ToolReuse, *,
              continue_on_context_loss: bool) -> list[Forward | Answer] | Close:
    """What the client gets for one session event (maybe nothing: an empty list)."""
    if method == "session.message":
        message = params.get("message")
        if not isinstance(message, dict):
            return []
        out: list[Forward | Answer] = []
        if "toolCall" in message:
            split = tools.tool_call(message)
            if split.answer is not None:
                out.append(Answer(split.answer))
            if split.show is None:
                return out
            message = split.show
        for m in view.message(message, replayed=bool(params.get("replayed"))):
            forward = _frame(m)
            if forward.turn_complete:
                tools.turn_complete()
            out.append(forward)
        return out
    if method == "session.status":
        view.connection_changed()
        return []
    if method == "session.tool_call_lost":
        ids = tools.lost([i for i in params.get("ids") or [] if isinstance(i, str)])
        view.restart_next_reply()
        return [_frame({"toolCallCancellation": {"ids": ids}})] if ids else []
    if method == "session.context_lost":
        if continue_on_context_loss:
            return []
        why = str(params.get("reason") or "unknown")
        suspected = " (suspected)" if params.get("suspected") else ""
        return Close(1011, reason_text(f"geminid: conversation context lost{suspected}: {why}"))
    if method == "session.ended":
        reason = str(params.get("reason") or "")
        detail = str(params.get("detail") or "")
        if reason == "fatal":
            found = _CODE.match(detail)
            if found is not None and 1000 <= int(found.group(1)) < 5000:
                return Close(int(found.group(1)), reason_text(found.group(2) or detail))
            return Close(1011, reason_text(f"geminid: session failed: {detail}"))
        return Close(1000, reason_text(f"geminid: session {reason}: {detail}".rstrip(": ")))
    return []


def setup_complete() -> str:
    return '{"setupComplete":{}}'


def resumption_update(handle: str) -> str:
    return json.dumps({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})


def go_away(time_left_s: float) -> str:
    return json.dumps({"goAway": {"timeLeft": f"{max(0.0, time_left_s):g}s"}})
