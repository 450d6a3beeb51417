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


#: The function a soak tool turn calls when it must block (declared BLOCKING) and the one it calls
#: when it must not (declared NON_BLOCKING): the fake calls a declared function whose name the
#: user's text mentions (``weather`` also triggers the first one).
BLOCKING_TOOL = "get_weather"
NON_BLOCKING_TOOL = "get_time"
#: How a NON_BLOCKING call's response is scheduled; ``CONTINUE``: a ``willContinue`` generator
#: (partial responses, then the final one, WHEN_IDLE).
SCHEDULINGS = ("WHEN_IDLE", "SILENT", "INTERRUPT", "CONTINUE")


@attrs.frozen
class Form:
    """One catalogue entry the chaos soak runs against, and the fake options it runs with.

    - ``audio``: AUDIO replies with ``outputAudioTranscription`` (the soak reads the reply text
      from the transcription; the audio itself is only counted);
    - ``thinking``: the ``thinkingConfig`` the model requires (extended thinking: exactly one of
      level/budget), None for none;
    - ``blocking_tool``: a BLOCKING function is declared too (extended thinking refuses them);
    - ``resumable_in_progress`` / ``resumable_pending_calls``: the fake's UNCONFIRMED handle rules
      (:class:`~geminid.daemon.fake.FakeOptions`), set to the aggressive value on some forms so
      that the daemon is shown safe with both values.
    """

    name: str
    model: str
    audio: bool
    thinking: dict[str, Any] | None = None
    blocking_tool: bool = True
    resumable_in_progress: bool = False
    resumable_pending_calls: bool = False

    @property
    def text_catalogue(self) -> bool:
        """TEXT replies need :func:`~geminid.daemon.fake.text_catalogue` (UNCONFIRMED on 3.8)."""
        return not self.audio


FORMS: dict[str, Form] = {f.name: f for f in (
    # Today's form: TEXT on gemini-3.8-live (Vertex lists text output for 3.8), fake defaults.
    Form("3.8-text", "gemini-3.8-live", audio=False),
    # 3.8 as the Developer API serves it: audio only, text from the transcription; handles stay
    # resumable while a NON_BLOCKING call is pending.
    Form("3.8-audio", "gemini-3.8-live", audio=True, resumable_pending_calls=True),
    # Extended thinking: a filler ending IN_PROGRESS, then the answer ending IDLE; NON_BLOCKING
    # tools only; resumable handles between IN_PROGRESS and IDLE (the worst case).
    Form("3.8-extended", "gemini-3.8-live-extended-thinking", audio=True,
         thinking={"thinkingLevel": "LOW"}, blocking_tool=False, resumable_in_progress=True),
)}
DEFAULT_FORM = FORMS["3.8-text"]


def tool_declarations(form: Form) -> list[dict[str, Any]]:
    # The parameter schema matters: the fake fills in declared parameters only (a real model
    # calls a function without parameters with ``args: {}``), and the reply to a tool turn
    # carries the turn's token only if ``_answer`` finds it in the args.
    params = {"type": "OBJECT", "properties": {"query": {"type": "STRING"}}, "required": ["query"]}
    decls = [{"name": NON_BLOCKING_TOOL, "description": "time in a city", "behavior": "NON_BLOCKING",
              "parameters": params}]
    if form.blocking_tool:
        decls.insert(0, {"name": BLOCKING_TOOL, "description": "weather for a city",
                         "behavior": "BLOCKING", "parameters": params})
    return [{"functionDeclarations": decls}]


def make_setup(session: str, *, tools: bool, form: Form = DEFAULT_FORM) -> dict:
    kwargs: dict[str, Any] = {}
    if tools:
        kwargs["tools"] = tool_declarations(form)
    if form.thinking is not None:
        kwargs["generation_config"] = {"thinkingConfig": dict(form.thinking)}
    return live.setup(
        form.model,
        response_modalities=["AUDIO" if form.audio else "TEXT"],
        output_audio_transcription=form.audio,
        system_instruction=session_instruction(session),
        **kwargs,
    )["setup"]


@attrs.define
class Sent:
    """One message a driver sent (a turn, an audio chunk, an audioStreamEnd)."""

    session: str
    n: int
    kind: str  # text | tool | nbtool | audio | audio_end | final
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
        return [s for s in self.sent if s.kind in ("text", "tool", "nbtool", "final")]

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
    #: Ends of the model's interactions: a ``turnComplete`` whose ``interactionStatus`` is not
    #: IN_PROGRESS (IDLE, or none on models that send none; an interruption ends with one too).
    interaction_ends: int = 0
    #: ``turnComplete`` + IN_PROGRESS: an extended-thinking filler, or a call still running.
    in_progress_ends: int = 0
    interruptions: int = 0
    #: Audio reply chunks (AUDIO forms: the text comes from ``outputTranscription``).
    audio_chunks: int = 0
    first_chunk_seen: int = 0
    #: call id -> the soak turn it belongs to (the token in its args)
    call_turn: dict[str, int] = attrs.Factory(dict)
    #: turn n -> how its NON_BLOCKING call is to be answered (see :data:`SCHEDULINGS`)
    plans: dict[int, str] = attrs.Factory(dict)
    #: the NON_BLOCKING turn whose driver waits for its reply now (an INTERRUPT response is sent
    #: only then: it cuts whatever the model is saying, which must be that turn's filler, not
    #: the reply to a turn the driver waits for)
    waiting_turn: int | None = None
    #: call id -> trio time it arrived, and the time its (final) response was acknowledged
    call_at: dict[str, float] = attrs.Factory(dict)
    answered_at: dict[str, float] = attrs.Factory(dict)
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
                    elif isinstance(part.get("inlineData"), dict):
                        self.audio_chunks += 1
                said = (sc.get("outputTranscription") or {}).get("text")
                if isinstance(said, str):
                    self.text += said
                if sc.get("interrupted"):
                    self.interruptions += 1
                if sc.get("turnComplete"):
                    self.turn_completes += 1
                    if sc.get("interactionStatus") == "IN_PROGRESS":
                        self.in_progress_ends += 1
                    else:
                        self.interaction_ends += 1
            if "toolCall" in msg:
                out = msg["toolCall"]
                for call in out.get("functionCalls") or []:
                    self.tool_calls[call["id"]] = call
                    self.call_at[call["id"]] = trio.current_time()
                    tok = parse_token(json.dumps(call.get("args") or {}))
                    if tok is not None:
                        self.call_turn[call["id"]] = tok[1]
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

    def calls_of(self, n: int) -> list[str]:
        """The ids of the tool calls made for turn ``n`` (a replayed turn is called again)."""
        return [i for i, t in self.call_turn.items() if t == n]

    def call_given_up(self, n: int) -> bool:
        """Every call of turn ``n`` so far was reported lost or cancelled (and at least one came):
        its reply will not come unless the turn is replayed."""
        ids = self.calls_of(n)
        return bool(ids) and all(
            i in self.tool_call_lost_ids or i in self.cancelled_ids
            or self.tool_outcome.get(i) in ("lost", "cancelled", "connection_lost")
            for i in ids
        )

    @staticmethod
    def non_blocking(call: dict) -> bool:
        return call.get("name") == NON_BLOCKING_TOOL

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
        """Answer one call. A BLOCKING one at once (the model waits, silent); a NON_BLOCKING one
        after up to 0.2 s (the user may speak meanwhile: the call must survive that), scheduled
        as the driver planned for its turn, a ``willContinue`` generator sending one or two
        partial responses first."""
        args = call.get("args") or {}
        tok = parse_token(json.dumps(args))
        response = {"forecast": "sunny", "token": token(*tok) if tok else None}
        fr = live.function_response(call["id"], call["name"], response)
        steps: list[dict] = [fr]
        if view.non_blocking(call):
            await trio.sleep(self.rng.uniform(0.0, 0.2))
            plan = view.plans.get(tok[1], "WHEN_IDLE") if tok else "WHEN_IDLE"
            if plan == "INTERRUPT" and (tok is None or view.waiting_turn != tok[1]):
                plan = "WHEN_IDLE"
            if plan in ("SILENT", "INTERRUPT"):
                steps = [{**fr, "scheduling": plan}]
            elif plan == "CONTINUE":
                partial = [
                    {**live.function_response(call["id"], call["name"], {"progress": f"{k}/2"}),
                     "willContinue": True, "scheduling": self.rng.choice(("SILENT", "WHEN_IDLE"))}
                    for k in range(self.rng.randint(1, 2))
                ]
                steps = [*partial, fr]
        else:
            await trio.sleep(self.rng.uniform(0.0, 0.03))
        for step in steps:
            outcome = await self._respond(view, live.tool_response([step]))
            view.tool_outcome[call["id"]] = outcome
            if outcome != "acked":
                break
            if step is fr:
                view.answered_at[call["id"]] = trio.current_time()
            if step is not fr:
                await trio.sleep(self.rng.uniform(0.0, 0.05))
        view._wake()

    async def _respond(self, view: SessionView, msg: dict) -> str:
        try:
            await self.client.send(view.name, msg)
        except RemoteError as exc:
            if exc.code != TOOL_CALL_LOST:
                return f"error:{exc.code}:{exc.message}"
            # Lost to a reconnect (the server that issued it is gone), or cancelled by new input
            # (which a NON_BLOCKING call must never be).
            return "lost" if exc.data.get("lost") == "reconnect" else "cancelled"
        except ConnectionLost:
            return "connection_lost"
        return "acked"


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
