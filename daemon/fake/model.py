"""The fake's deterministic "model": conversation state and the replies it gives. No I/O.

The replies make the context observable, so that a test can tell a resumed conversation from a
fresh one, and a rolled-back one from both. The reply to the user's N-th completed turn is::

    turn N: heard "<what was heard>"[; previous "<the user text before it>"][; recall ["a", "b"]].

- ``<what was heard>``: the user texts since the last reply, joined by a space (texts sent with
  ``turnComplete: false`` included); for audio, ``(M ms of audio)``.
- ``; previous "..."``: the last user text before this turn, if any.
- ``; recall [...]``: only if the heard text contains "recall" (any case): every earlier user
  text, in order (``recall []`` if none).
- Strings are JSON-quoted (``json.dumps``, non-ASCII kept), so the format is unambiguous.

After a tool round trip the reply is ``turn N: <name> returned <compact JSON of response>.``

Token accounting (``usageMetadata``): a text costs ``ceil(len/4)`` tokens (at least 1), audio
32 tokens per second; ``promptTokenCount`` is the whole context before the reply (system
instruction and history), ``responseTokenCount`` the reply; so the counts grow with the context.
"""

from __future__ import annotations

import array
import json
import math
import sys
from typing import Any

import attrs

AUDIO_TOKENS_PER_SECOND = 32
OUTPUT_RATE = 24000


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def audio_tokens(ms: int) -> int:
    return max(1, ms * AUDIO_TOKENS_PER_SECOND // 1000)


def content_text(content: dict[str, Any]) -> str:
    """The text parts of a Content, concatenated."""
    parts = content.get("parts") or []
    return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def pcm_rate(mime_type: str | None, default: int = 16000) -> int:
    """``audio/pcm;rate=16000`` -> 16000."""
    for param in (mime_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "rate" and value.strip().isdigit():
            return int(value.strip())
    return default


def audio_ms(nbytes: int, rate: int) -> int:
    """Duration of 16-bit mono PCM."""
    return nbytes * 1000 // (2 * rate) if rate > 0 else 0


def q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def compose_reply(turn: int, heard: str, earlier: list[str]) -> str:
    """The reply text to the user's ``turn``-th turn (see the module docstring)."""
    text = f"turn {turn}: heard {q(heard)}"
    if earlier:
        text += f"; previous {q(earlier[-1])}"
    if "recall" in heard.lower():
        text += "; recall [" + ", ".join(q(t) for t in earlier) + "]"
    return text + "."


def compose_tool_reply(turn: int, name: str, response: Any) -> str:
    payload = json.dumps(response, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f"turn {turn}: {name} returned {payload}."


def split_chunks(text: str, n: int) -> list[str]:
    """``text`` in ``n`` (or fewer, never empty) consecutive pieces that join back to it."""
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def pcm_for_text(text: str, rate: int = OUTPUT_RATE) -> bytes:
    """Deterministic 16-bit PCM for a reply chunk: 2 ms per character, a quiet sawtooth."""
    samples = max(1, len(text)) * rate // 500
    pcm = array.array("h", [(i * 37) % 2000 - 1000 for i in range(samples)])
    if sys.byteorder != "little":
        pcm.byteswap()
    return pcm.tobytes()


def declared_functions(setup: dict[str, Any]) -> list[str]:
    """Function names declared in ``setup.tools[*].functionDeclarations``, in order."""
    names = []
    for tool in setup.get("tools") or []:
        for decl in (tool or {}).get("functionDeclarations") or []:
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                names.append(decl["name"])
    return names


def declarations(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: declaration}`` from a list of Tool objects, in order."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        for decl in (tool or {}).get("functionDeclarations") or []:
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                out[decl["name"]] = decl
    return out


def _schema_value(schema: dict[str, Any], name: str, heard: str, first_string: bool) -> Any:
    """A value of the JSON-schema / OpenAPI-subset type ``schema`` (the model "fills it in")."""
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = str(schema.get("type") or "string").lower()
    if isinstance(schema.get("type"), list):  # JSON schema ["string", "null"]
        kind = next((str(t).lower() for t in schema["type"] if t != "null"), "string")
    if kind == "string":
        return heard if first_string else name
    if kind == "integer":
        return len(heard.split())
    if kind == "number":
        return float(len(heard.split()))
    if kind == "boolean":
        return True
    if kind == "array":
        items: dict[str, Any] = schema["items"] if isinstance(schema.get("items"), dict) else {}
        return [_schema_value(items, name, heard, first_string)]
    if kind == "object":
        return call_args_for(schema, heard)
    return None


def call_args_for(schema: dict[str, Any] | None, heard: str) -> dict[str, Any]:
    """Arguments that follow a ``parameters`` schema: every property, the first string one
    carrying what the model heard; no schema means a function without arguments (``{}``)."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    args: dict[str, Any] = {}
    first = True
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        is_string = str(sub.get("type") or "string").lower() == "string" and not sub.get("enum")
        args[name] = _schema_value(sub, name, heard, first and is_string)
        if is_string:
            first = False
    return args


def call_args(decl: dict[str, Any], heard: str) -> dict[str, Any]:
    """The args of a call of ``decl``: its ``parameters`` or ``parametersJsonSchema``."""
    schema = decl.get("parameters")
    if schema is None:
        schema = decl.get("parametersJsonSchema")
    return call_args_for(schema, heard)


def filler_text(turn: int) -> str:
    """What extended thinking says before its answer (one IN_PROGRESS utterance)."""
    return f"turn {turn}: let me think."


def tool_filler_text(turn: int, name: str) -> str:
    """What the model says while a NON_BLOCKING call of ``name`` is pending."""
    return f"turn {turn}: calling {name}."


def tool_to_call(functions: list[str], heard: str, trigger_words: tuple[str, ...]) -> str | None:
    """The function the model calls for ``heard``, or None.

    A declared function is called when its name appears in the text (case-insensitive); else the
    first declared function when any of ``trigger_words`` appears.
    """
    low = heard.lower()
    for name in functions:
        if name.lower() in low:
            return name
    if functions and any(w.lower() in low for w in trigger_words):
        return functions[0]
    return None


@attrs.define
class ToolCallRecord:
    id: str
    name: str
    args: dict[str, Any]
    turn: int
    response: Any = None
    answered: bool = False
    cancelled: bool = False
    behavior: str = "BLOCKING"
    #: Every response received for this id, in order (``willContinue`` generators send several).
    responses: list[Any] = attrs.Factory(list)


@attrs.define
class ConversationState:
    """What a handle snapshots: everything the model knows."""

    history: list[dict[str, Any]] = attrs.Factory(list)
    user_turns: list[str] = attrs.Factory(list)
    turn_count: int = 0
    tool_calls: list[ToolCallRecord] = attrs.Factory(list)
    pending: list[str] = attrs.Factory(list)  # user texts not answered yet
    pending_audio_bytes: int = 0
    pending_audio_ms: int = 0
    audio_bytes: int = 0
    audio_chunks: int = 0
    audio_ms: int = 0
    video_frames: int = 0
    system_instruction: str = ""
    #: Client messages consumed over the conversation (a session-scoped transparent index).
    consumed: int = 0

    def copy(self) -> ConversationState:
        """A snapshot for a handle. History entries are never changed once appended, so the
        lists are copied shallowly (a deep copy per turn made a long conversation's replies,
        and every resume, slower and slower); tool call records are mutable, so they are copied."""
        return attrs.evolve(
            self,
            history=list(self.history),
            user_turns=list(self.user_turns),
            tool_calls=[attrs.evolve(c, responses=list(c.responses)) for c in self.tool_calls],
            pending=list(self.pending),
        )

    # ---- accounting
    def context_tokens(self) -> int:
        total = text_tokens(self.system_instruction) if self.system_instruction else 0
        for entry in self.history:
            if "audio_ms" in entry:
                total += audio_tokens(entry["audio_ms"])
            else:
                total += text_tokens(entry.get("text", ""))
        return total

    # ---- input
    def add_user_text(self, text: str) -> None:
        self.history.append({"role": "user", "text": text})
        self.user_turns.append(text)
        self.pending.append(text)

    def add_model_text(self, text: str, *, interrupted: bool = False) -> None:
        entry: dict[str, Any] = {"role": "model", "text": text}
        if interrupted:
            entry["interrupted"] = True
        self.history.append(entry)

    def add_audio(self, nbytes: int, rate: int) -> None:
        self.audio_bytes += nbytes
        self.audio_chunks += 1
        self.pending_audio_bytes += nbytes
        self.pending_audio_ms += audio_ms(nbytes, rate)

    def take_audio(self) -> str | None:
        """Close the pending audio into a user turn ``(M ms of audio)``; None if there was none."""
        if not self.pending_audio_bytes:
            return None
        ms = self.pending_audio_ms
        self.audio_ms += ms
        self.pending_audio_bytes = self.pending_audio_ms = 0
        label = f"({ms} ms of audio)"
        self.history.append({"role": "user", "text": label, "audio_ms": ms})
        self.user_turns.append(label)
        self.pending.append(label)
        return label

    def begin_turn(self) -> tuple[int, str, list[str]]:
        """Complete the user's turn: (turn number, heard text, earlier user texts)."""
        self.turn_count += 1
        heard = " ".join(self.pending)
        earlier = self.user_turns[: len(self.user_turns) - len(self.pending)]
        self.pending = []
        return self.turn_count, heard, earlier


@attrs.define(eq=False)
class Conversation:
    """One session as the fake sees it; ``state`` is what handles snapshot and resumes restore.

    ``user_turns``, ``turn_count``, ``history`` and ``tool_calls`` read the current (possibly
    rolled-back) state.
    """

    id: str
    model: str
    state: ConversationState = attrs.Factory(ConversationState)
    connection_ids: list[int] = attrs.Factory(list)
    live_connection: int | None = None
    last_closed_at: float | None = None
    handles: list[str] = attrs.Factory(list)
    rollbacks: int = 0

    @property
    def user_turns(self) -> list[str]:
        return self.state.user_turns

    @property
    def turn_count(self) -> int:
        return self.state.turn_count

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def tool_calls(self) -> list[ToolCallRecord]:
        return self.state.tool_calls

    def restore(self, snapshot: ConversationState) -> None:
        self.state = snapshot.copy()
