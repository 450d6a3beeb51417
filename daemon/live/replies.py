"""A reply that started again, shown once (pure).

When the upstream connection ends in the middle of a reply, geminid resumes and replays the
message the reply answered, and the server answers it again **from its beginning** (the session
marks those frames ``replayed``; a lost tool call makes the model ask again, and its answer then
starts again too). A JSON-RPC client is told so and decides; a Live client speaks the plain
protocol and would show the first part twice. So, per Live client, :class:`ReplyView` keeps what
that client was already given of the current turn (per channel: model text, model audio, input
and output transcription) and, when the turn starts again, hands over only what goes beyond it:

- a frame wholly inside what was given is left out; one that goes past it is cut to the new part;
- when the new answer differs from what was given (a real model does not answer twice alike),
  nothing can be hidden: the client gets ``serverContent.interrupted`` (how the service says "that
  answer stopped") and then the new answer whole, as it would after a barge-in;
- ``turnComplete`` ends the turn: what was given is forgotten.

Events in (``message``, ``restart_next_reply``), frames out; no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import attrs

#: serverContent keys whose content is compared: (key, channel).
_TRANSCRIPTS = (("inputTranscription", "in"), ("outputTranscription", "out"))
INTERRUPTED: dict[str, Any] = {"serverContent": {"interrupted": True}}


def _empty() -> dict[str, Any]:
    return {"text": "", "audio": b"", "in": "", "out": ""}


@attrs.define
class ReplyView:
    """See the module docstring. One per Live client."""

    #: channel -> what the client was given of the current turn (str, or bytes for audio).
    given: dict[str, Any] = attrs.field(factory=_empty)
    #: channel -> how much of ``given`` the restarted reply has repeated so far; None: no restart.
    cursor: dict[str, int] | None = None
    #: The next replayed frame starts the reply again (a reconnect happened since).
    churn: bool = False
    #: Counters (for the connection's log line).
    hidden: int = 0
    diverged: int = 0

    def connection_changed(self) -> None:
        """A status transition: the upstream connection may have changed."""
        self.churn = True

    def restart_next_reply(self) -> None:
        """The current turn starts again now (a tool call of it was lost: the model asks again)."""
        self.cursor = {ch: 0 for ch in self.given}
        self.churn = False

    def message(self, message: dict[str, Any], *, replayed: bool) -> list[dict[str, Any]]:
        """The frames the client gets for the server message ``message`` (maybe none)."""
        content = message.get("serverContent")
        if not isinstance(content, dict):
            return [message]
        if replayed and self.churn:
            self.restart_next_reply()
        out: list[dict[str, Any]]
        if self.cursor is None:
            self._take_all(content)
            out = [message]
        else:
            trimmed = self._trim(message, content)
            if trimmed is None:  # diverged
                self.diverged += 1
                self.given, self.cursor = _empty(), None
                self._take_all(content)
                out = [INTERRUPTED, message]
            elif trimmed is not message and _is_empty(trimmed):
                self.hidden += 1
                out = []
            else:
                out = [trimmed]
        if content.get("turnComplete"):
            self.given, self.cursor, self.churn = _empty(), None, False
        return out

    # -- inside -------------------------------------------------------------------------------

    def _take_all(self, content: dict[str, Any]) -> None:
        for ch, piece in _pieces(content):
            self.given[ch] += piece

    def _trim(self, message: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """``message`` without what the client already has; None when it differs from that."""
        assert self.cursor is not None
        kept: list[tuple[str, Any]] = []
        changed = False
        for ch, piece in _pieces(content):
            rest = self.given[ch][self.cursor[ch]:]
            if not rest or not piece:
                kept.append((ch, piece))
            elif rest[: len(piece)] == piece:
                self.cursor[ch] += len(piece)
                kept.append((ch, piece[:0]))
                changed = True
            elif piece[: len(rest)] == rest:
                kept.append((ch, piece[len(rest):]))
                self.cursor[ch] += len(rest)
                changed = True
            else:
                return None
        for ch, piece in kept:
            if self.cursor[ch] >= len(self.given[ch]) and piece:
                self.given[ch] += piece
                self.cursor[ch] = len(self.given[ch])
        if not changed:
            return message
        return _rebuild(message, content, [p for _, p in kept])


def _pieces(content: dict[str, Any]) -> list[tuple[str, Any]]:
    """The compared content of a serverContent, in order: (channel, text or audio bytes)."""
    out: list[tuple[str, Any]] = []
    turn = content.get("modelTurn")
    if isinstance(turn, dict):
        for part in turn.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str) and not part.get("thought"):
                out.append(("text", part["text"]))
            blob = part.get("inlineData")
            if isinstance(blob, dict) and str(blob.get("mimeType", "")).startswith("audio/"):
                try:
                    out.append(("audio", base64.b64decode(blob.get("data") or "")))
                except (binascii.Error, ValueError):
                    continue
    for key, ch in _TRANSCRIPTS:
        t = content.get(key)
        if isinstance(t, dict) and isinstance(t.get("text"), str):
            out.append((ch, t["text"]))
    return out


def _rebuild(message: dict[str, Any], content: dict[str, Any], pieces: list[Any]) -> dict[str, Any]:
    """``message`` with its compared pieces replaced by ``pieces`` (same order as _pieces);
    parts and transcriptions left empty are removed."""
    it = iter(pieces)
    new = dict(content)
    turn = content.get("modelTurn")
    if isinstance(turn, dict):
        parts = []
        for part in turn.get("parts") or []:
            if not isinstance(part, dict):
                parts.append(part)
                continue
            p = dict(part)
            if isinstance(part.get("text"), str) and not part.get("thought"):
                p["text"] = next(it)
                if not p["text"]:
                    del p["text"]
            blob = part.get("inlineData")
            if isinstance(blob, dict) and str(blob.get("mimeType", "")).startswith("audio/"):
                try:
                    base64.b64decode(blob.get("data") or "")
                except (binascii.Error, ValueError):
                    pass
                else:
                    data = next(it)
                    if data:
                        p["inlineData"] = {**blob, "data": base64.b64encode(data).decode("ascii")}
                    else:
                        del p["inlineData"]
            if p:
                parts.append(p)
        if parts:
            new["modelTurn"] = {**turn, "parts": parts}
        else:
            del new["modelTurn"]
    for key, _ch in _TRANSCRIPTS:
        t = content.get(key)
        if isinstance(t, dict) and isinstance(t.get("text"), str):
            text = next(it)
            if text:
                new[key] = {**t, "text": text}
            else:
                del new[key]
    return {**message, "serverContent": new}


def _is_empty(message: dict[str, Any]) -> bool:
    """Nothing left for the client: no content, no turn or generation end, no other field but
    ``usageMetadata`` (a wholly repeated frame's usage is that of what the client was given,
    with its own usage: forwarded, it would be counted twice)."""
    if any(k not in ("serverContent", "usageMetadata") for k in message):
        return False
    return not message.get("serverContent")
