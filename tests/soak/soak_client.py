"""Client-side bookkeeping shared by the chaos soak and the crash loop.

Everything here talks to geminid only through the real Unix socket and the trio client library
(``geminid.protocol.client``). A :class:`SessionView` is what ONE client saw of ONE session: the
model text it received, the event seqs (to prove that every gap was announced with
``session.lagged``), the context-loss and lost-tool-call notices, and the tool calls it answered.
A :class:`SentLog` is what a driver sent, with the acks it got.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs
import trio

from geminid.protocol import live
from geminid.protocol.client import Client, ConnectionLost, RemoteError
from geminid.protocol.errors import TOOL_CALL_LOST

#: Every user text the soak sends starts with ``[<session>#<n>]`` so that the fake's record of a
#: conversation can be mapped back to the exact turn the client sent.
TOKEN_RE = re.compile(r"\[([A-Za-z0-9_-]+)#(\d+)\]")


def token(session: str, n: int) -> str:
    return f"[{session}#{n}]"


def parse_token(text: str) -> tuple[str, int] | None:
    m = TOKEN_RE.search(text)
    return (m.group(1), int(m.group(2))) if m else None


def session_instruction(session: str) -> str:
    return f"soak session {session}"


def session_of_setup(setup: dict | None) -> str | None:
    """The session a fake ConnectionRecord's setup belongs to (via its systemInstruction)."""
    if not setup:
        return None
    body = setup.get("setup", setup)
    sysi = body.get("systemInstruction") or {}
    for part in sysi.get("parts") or []:
        text = part.get("text") or ""
        if text.startswith("soak session "):
            return text[len("soak session "):]
    return None


def make_setup(session: str, *, tools: bool) -> dict:
    kwargs: dict[str, Any] = {}
    if tools:
        kwargs["tools"] = [
            # The parameter schema matters: the fake fills in declared parameters only (a real
            # model calls a function without parameters with ``args: {}``), and the reply to a
            # tool turn carries the turn's token only if ``_answer`` finds it in the args.
            {"functionDeclarations": [{
                "name": "get_weather", "description": "weather for a city", "behavior": "BLOCKING",
                "parameters": {"type": "OBJECT", "properties": {"query": {"type": "STRING"}},
                               "required": ["query"]},
            }]}
        ]
    return live.setup(
        "gemini-3.8-live",  # TEXT: the soak's fakes use text_catalogue() (see soak_lib)
        response_modalities=["TEXT"],
        system_instruction=session_instruction(session),
        **kwargs,
    )["setup"]


@attrs.define
class Sent:
    """One message a driver sent (a turn, an audio chunk, an audioStreamEnd)."""

    session: str
    n: int
    kind: str  # text | tool | audio | audio_end | final
    text: str = ""
    chunk: int | None = None
    seq: int | None = None
    t_send: float = 0.0
    t_ack: float | None = None
    #: context_lost notices the driver's client had received when the send started
    losses_before: int = 0
    error: str | None = None


@attrs.define
class SentLog:
    session: str
    sent: list[Sent] = attrs.Factory(list)
    reply_timeouts: int = 0
    #: (n, kind, seconds) of every turn whose reply took longer than a second, or never came
    slow: list[tuple[int, str, float]] = attrs.Factory(list)

    def turns(self) -> list[Sent]:
        return [s for s in self.sent if s.kind in ("text", "tool", "final")]

    def audio(self) -> list[Sent]:
        return [s for s in self.sent if s.kind == "audio"]


@attrs.define
class SessionView:
    """What one client saw of one session."""

    name: str
    answer_tools: bool = False
    text: str = ""
    last_seq: int | None = None
    events: int = 0
    lagged: list[tuple[int, int]] = attrs.Factory(list)
    gaps_unannounced: list[str] = attrs.Factory(list)
    context_lost: list[dict] = attrs.Factory(list)
    suspected_lost: list[dict] = attrs.Factory(list)
    tool_call_lost_ids: set[str] = attrs.Factory(set)
    tool_calls: dict[str, dict] = attrs.Factory(dict)  # id -> call
    tool_outcome: dict[str, str] = attrs.Factory(dict)  # id -> acked | lost | cancelled | error:..
    cancelled_ids: set[str] = attrs.Factory(set)
    statuses: list[str] = attrs.Factory(list)
    ended: list[dict] = attrs.Factory(list)
    turn_completes: int = 0
    first_chunk_seen: int = 0
    _lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    #: a gap announcement not yet matched by the events that follow it
    _announced: list[tuple[int, int]] = attrs.Factory(list)

    def attached(self, last_seq: int | None) -> None:
        if self.last_seq is None and last_seq is not None:
            self.last_seq = last_seq

    def on_event(self, method: str, params: dict) -> dict | None:
        """Record one notification; returns a toolCall message to answer, if any."""
        if method == "session.lagged":
            first, last = int(params["first"]), int(params["last"])
            self.lagged.append((first, last))
            self._announced.append((first, last))
            self._wake()
            return None
        seq = params.get("seq")
        if isinstance(seq, int) and seq > 0:
            self._check_seq(seq)
        self.events += 1
        out = None
        if method == "session.message":
            msg = params.get("message") or {}
            sc = msg.get("serverContent")
            if sc:
                for part in (sc.get("modelTurn") or {}).get("parts") or []:
                    if isinstance(part.get("text"), str):
                        self.text += part["text"]
                        self.first_chunk_seen += 1
                if sc.get("turnComplete"):
                    self.turn_completes += 1
            if "toolCall" in msg:
                out = msg["toolCall"]
                for call in out.get("functionCalls") or []:
                    self.tool_calls[call["id"]] = call
            if "toolCallCancellation" in msg:
                self.cancelled_ids.update(msg["toolCallCancellation"].get("ids") or [])
        elif method == "session.context_lost":
            (self.suspected_lost if params.get("suspected") else self.context_lost).append(params)
        elif method == "session.tool_call_lost":
            self.tool_call_lost_ids.update(params.get("ids") or [])
        elif method == "session.status":
            self.statuses.append(params.get("status", ""))
        elif method == "session.ended":
            self.ended.append(params)
        self._wake()
        return out

    def _check_seq(self, seq: int) -> None:
        prev = self.last_seq
        self.last_seq = seq
        if prev is None or seq == prev + 1:
            return
        if seq <= prev:
            self.gaps_unannounced.append(f"seq went back from {prev} to {seq}")
            return
        missing = (prev + 1, seq - 1)
        for first, last in self._announced:
            if first <= missing[0] and last >= missing[1]:
                self._announced.clear()
                return
        self.gaps_unannounced.append(f"events {missing[0]}..{missing[1]} missing, no session.lagged")

    def _wake(self) -> None:
        self._lot.unpark_all()

    async def wait_for(self, pred, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not pred():
                await self._lot.park()
            return True
        return False


class SoakClient:
    """One trio client connection and the views of the sessions it is attached to."""

    def __init__(self, client: Client, name: str, rng_seed: int) -> None:
        import random

        self.client = client
        self.name = name
        self.views: dict[str, SessionView] = {}
        self.rng = random.Random(rng_seed)
        self.disconnects = 0
        self.reattach_failed: list[dict] = []

    async def attach(self, session: str, *, answer_tools: bool = False) -> SessionView:
        view = self.views.setdefault(session, SessionView(session, answer_tools=answer_tools))
        result = await self.client.attach(session)
        view.attached(int(result["last_seq"]))
        return view

    async def consume(self, nursery: trio.Nursery) -> None:
        """Read events until the client closes; answer tool calls of driven sessions."""
        async for method, params in self.client.events():
            if method == "client.disconnected":
                self.disconnects += 1
                continue
            if method == "client.reattach_failed":
                self.reattach_failed.append(params)
                continue
            session = params.get("session") if isinstance(params, dict) else None
            view = self.views.get(session) if isinstance(session, str) else None
            if view is None:
                continue
            call = view.on_event(method, params)
            if call is not None and view.answer_tools:
                for fc in call.get("functionCalls") or []:
                    nursery.start_soon(self._answer, view, fc)

    async def _answer(self, view: SessionView, call: dict) -> None:
        await trio.sleep(self.rng.uniform(0.0, 0.03))
        args = call.get("args") or {}
        tok = parse_token(json.dumps(args))
        response = {"forecast": "sunny", "token": token(*tok) if tok else None}
        msg = live.tool_response([live.function_response(call["id"], call["name"], response)])
        try:
            await self.client.send(view.name, msg)
        except RemoteError as exc:
            view.tool_outcome[call["id"]] = "lost" if exc.code == TOOL_CALL_LOST else f"error:{exc.code}:{exc.message}"
        except ConnectionLost:
            view.tool_outcome[call["id"]] = "connection_lost"
        else:
            view.tool_outcome[call["id"]] = "acked"
        view._wake()


def pcm_chunk(session_index: int, chunk: int, ms: int) -> bytes:
    """``ms`` of 16 kHz 16-bit PCM whose first bytes name the session and the chunk number."""
    head = b"SOAK" + session_index.to_bytes(4, "big") + chunk.to_bytes(4, "big")
    n = 32 * ms
    return head + bytes(n - len(head))


def parse_pcm_chunk(message: dict) -> tuple[int, int] | None:
    audio = (message.get("realtimeInput") or {}).get("audio")
    if not audio:
        return None
    data = live.b64decode_any(audio.get("data") or "")
    if data[:4] != b"SOAK":
        return None
    return int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")


def fmt_table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    out = []
    for k, v in rows:
        if isinstance(v, float):
            v = f"{v:.2f}" if math.isfinite(v) else str(v)
        out.append(f"  {k.ljust(width)}  {v}")
    return "\n".join(out)


def format_report(title: str, report: dict[str, Any], violations: list[str]) -> str:
    """The text both long forms print: the scalar figures as a table, the counters, the
    violations (the first 40)."""
    rows = [(k, v) for k, v in report.items() if not isinstance(v, dict)]
    out = [title, fmt_table(rows)]
    for k, v in report.items():
        if isinstance(v, dict):
            out.append(f"  {k}: " + ", ".join(f"{a}={b}" for a, b in sorted(v.items())))
    out.append(f"  violations: {len(violations)}")
    out += [f"    - {v}" for v in violations[:40]]
    if len(violations) > 40:
        out.append(f"    ... and {len(violations) - 40} more")
    return "\n".join(out)
