"""One accepted WebSocket connection of the fake upstream: the Live protocol as the server plays it.

Tasks (all in the connection's nursery): a **reader** that drains ``get_message`` and handles each
client message synchronously; a single **writer** that sends the outbox in order (so ``latency``
is a delay line and faults keep their place among frames); a **lifetime** timer (goAway, then the
cut); one **generation** task per model reply; timers for ``after_seconds`` faults.

A generation is cancelled synchronously by an interruption: it checks after every await that it is
still the current one, so an already-woken task never emits a stale chunk.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from geminid.protocol import live
from geminid.protocol.errors import LiveMessageError

from . import catalogue as C
from . import model as M
from .faults import Fault, Planned
from .options import CANCELLED_REASON, GOAWAY_VIOLATION_REASON
from .records import ConnectionRecord

if TYPE_CHECKING:
    from .server import FakeUpstream

log = structlog.get_logger()

NOT_FOUND_REASON = "Requested entity was not found."
QUOTA_REASON = "RESOURCE_EXHAUSTED: Maximum concurrent sessions"
BUSY_REASON = "Internal error encountered. Session is still attached to another connection."
MODEL_MISMATCH_REASON = "Request contains an invalid argument. Model cannot be changed on resumption."
NOT_SETUP_REASON = "Request contains an invalid argument. The first message must be setup."
SETUP_TWICE_REASON = "Request contains an invalid argument. Setup may only be sent once."
BAD_TOOL_ID_REASON = "Request contains an invalid argument. Function response id {id!r} matches no pending call."
HISTORY_REASON = "Request contains an invalid argument. client_content is only accepted as initial history."
HISTORY_OPEN_REASON = "Request contains an invalid argument. Initial history has not ended (turn_complete)."
BAD_SCHEDULING_REASON = "Invalid value at 'tool_response.function_responses[{i}].scheduling'"
MAX_MESSAGE_BYTES = 16 * 2**20
IN_PROGRESS, IDLE = "IN_PROGRESS", "IDLE"


def _cut(reason: str) -> str:
    raw = reason.encode("utf-8")
    return reason if len(raw) <= 123 else raw[:123].decode("utf-8", errors="ignore")


@attrs.define(eq=False)
class _Item:
    due: float
    msg: dict[str, Any] | None = None
    data: bytes = b""
    fault: Fault | None = None


@attrs.define(eq=False)
class _Gen:
    """One model turn in progress: streaming a reply, or waiting for a tool response."""

    turn: int
    kind: str  # "reply" | "tool" (a BLOCKING call: the model waits for its response)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    text: str = ""
    sent: str = ""
    tool_ids: list[str] = attrs.Factory(list)
    #: Utterances still to speak after ``text`` (extended thinking: the answer after the filler).
    more: list[str] = attrs.Factory(list)
    #: Between an IN_PROGRESS turnComplete and the next utterance.
    in_progress: bool = False


class FakeConnection:
    def __init__(
        self,
        upstream: FakeUpstream,
        record: ConnectionRecord,
        ws: WebSocketConnection,
        transparent_allowed: bool,
        plans: list[Planned],
    ) -> None:
        self.up = upstream
        self.opts = upstream.options
        self.record = record
        self.ws = ws
        self.transparent_allowed = transparent_allowed
        self.plans = plans
        self.conversation: M.Conversation | None = None
        self.finished = trio.Event()
        self.ending: str | None = None  # why run() ends: close/drop/stall/client/abnormal
        self.stall_duration: float | None = None
        self.unstall = trio.Event()
        self.drop_rst = False
        self._closing = False  # a terminal fault is queued: emit nothing more
        self._nursery: trio.Nursery | None = None
        self._out_tx, self._out_rx = trio.open_memory_channel[_Item](math.inf)
        self._life_scope: trio.CancelScope | None = None
        self._setup_seen = False
        self._setup_complete = trio.Event()
        self._resumption = False
        self._transparent = False
        self._audio_out = False
        self._in_tx = False
        self._out_tx_enabled = False
        self._functions: list[str] = []
        self._decls: dict[str, dict[str, Any]] = {}
        self.spec: C.ModelSpec = C.LEGACY
        self._history_open = False  # 3.1: initial history in clientContent, until turnComplete
        self._when_idle: list[_Gen] = []  # WHEN_IDLE tool replies waiting for the model to be idle
        self._gen: _Gen | None = None
        self._pending_calls: dict[str, M.ToolCallRecord] = {}
        self._consumed = 0
        self._counts = {"chunks": 0, "tool_call": 0, "turns": 0}
        self._log = log.bind(conn=record.id)

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        """Accepted, not ended by either side, not stalled."""
        return self.ending is None and self.ws.closed is None

    async def run(self) -> None:
        """Serve until the connection ends; the caller then closes the TCP stream."""
        opened = self.record.opened_at
        deadline = opened + self.opts.lifetime
        goaway_at = None
        if self.opts.goaway:
            goaway_at = deadline - min(self.opts.goaway_before, self.opts.lifetime)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer)
            self._start_life(goaway_at, deadline)
            for plan in self.plans:
                if plan.trigger.kind == "seconds":
                    nursery.start_soon(self._timed_fault, plan.fault, opened + plan.trigger.seconds)
            self._fire("accept")
            nursery.start_soon(self._reader)

    def end(self, why: str) -> None:
        """Stop every task of this connection now (no more frames, no more reads)."""
        if self.ending is None:
            self.ending = why
            self._detach()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _detach(self) -> None:
        conv = self.conversation
        if conv is not None and conv.live_connection == self.record.id:
            conv.live_connection = None
            conv.last_closed_at = trio.current_time()

    def drop_now(self, *, rst: bool = False) -> None:
        """Live action: drop TCP at once (also ends a stall)."""
        if self.ending == "stall":
            self.unstall.set()
            return
        self.drop_rst = rst
        if self.ending is None:
            self.record.closed_by = "drop"
            self.record.close_code = 1006
        self.end("drop")

    def stall_now(self, duration: float | None = None) -> None:
        if self.ending is None:
            self.stall_duration = duration
            self.record.closed_by = "stall"
            self.record.close_code = 1006
            self.end("stall")

    def queue_fault(self, fault: Fault) -> None:
        """Apply ``fault`` after every frame already produced (latency included)."""
        if self.ending is not None:
            return
        if fault.kind in ("drop", "close", "stall"):
            if self._closing:
                return
            self._closing = True
        self._out_tx.send_nowait(_Item(due=trio.current_time(), fault=fault))

    async def wait_stall_end(self) -> None:
        with trio.move_on_after(math.inf if self.stall_duration is None else self.stall_duration):
            await self.unstall.wait()

    # ------------------------------------------------------------------ output

    def _emit(self, msg: dict[str, Any]) -> None:
        if self._closing or self.ending is not None:
            return
        data = live.encode(msg).encode("utf-8")
        self._out_tx.send_nowait(_Item(due=trio.current_time() + self.opts.latency, msg=msg, data=data))

    async def _writer(self) -> None:
        async for item in self._out_rx:
            if item.due > trio.current_time():
                await trio.sleep_until(item.due)
            if item.fault is not None:
                await self._apply(item.fault)
                continue
            try:
                await self.ws.send_message(item.data)  # binary frames of UTF-8 JSON
            except ConnectionClosed:
                self._peer_closed()
                return
            assert item.msg is not None
            self.record.sent.append(item.msg)

    async def _apply(self, fault: Fault) -> None:
        self._log.info("fake.fault", fault=fault.kind, code=fault.code)
        if fault.kind == "drop":
            self.drop_now(rst=fault.rst)
        elif fault.kind == "stall":
            self.stall_now(fault.duration)
        elif fault.kind == "close":
            await self._close(fault.code or 1000, fault.reason or "")
        elif fault.kind == "goaway":
            self._goaway_now(fault.time_left if fault.time_left is not None else 1.0)
        elif fault.kind == "expire_handles":
            self.up.expire_handles()

    async def _close(self, code: int, reason: str) -> None:
        reason = _cut(reason)
        if self.ws.closed is None:
            self.record.close_code, self.record.close_reason = code, reason
            self.record.closed_by = "server"
            self._log.info("fake.close", code=code, reason=reason)
            with trio.move_on_after(self.opts.close_timeout):
                await self.ws.aclose(code, reason)
        else:
            self._peer_closed()
        self.end("close")

    def _close_later(self, code: int, reason: str) -> None:
        self.queue_fault(Fault.close(code, reason))

    def _peer_closed(self) -> None:
        if self.ending is not None:
            return
        if self.record.closed_by is None:
            reason = self.ws.closed
            code = int(reason.code) if reason is not None else 1006
            self.record.close_code = code
            self.record.close_reason = reason.reason if reason is not None else None
            self.record.closed_by = "abnormal" if code == 1006 else "client"
        self.end("client")

    # ------------------------------------------------------------------ time

    def _start_life(self, goaway_at: float | None, deadline: float) -> None:
        if self._life_scope is not None:
            self._life_scope.cancel()
        scope = self._life_scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._life, scope, goaway_at, deadline)

    async def _life(self, scope: trio.CancelScope, goaway_at: float | None, deadline: float) -> None:
        with scope:
            if goaway_at is not None:
                await trio.sleep_until(goaway_at)
                # Never before setupComplete: clients expect that as the first message.
                with trio.move_on_at(deadline):
                    await self._setup_complete.wait()
                    self._emit(live.go_away(deadline - max(goaway_at, trio.current_time())))
            await trio.sleep_until(deadline)
            if self.opts.cut_mode == "cancelled":
                self._close_later(1000, CANCELLED_REASON)
            else:
                self._close_later(1008, GOAWAY_VIOLATION_REASON)

    def _goaway_now(self, time_left: float) -> None:
        self._emit(live.go_away(time_left))
        self._start_life(None, trio.current_time() + time_left)

    async def _timed_fault(self, fault: Fault, when: float) -> None:
        await trio.sleep_until(when)
        self.queue_fault(fault)

    def _fire(self, kind: str, n: int = 0) -> None:
        for plan in self.plans:
            t = plan.trigger
            if t.kind == kind and (t.n == n or kind in ("accept", "setup", "after_setup")):
                self.queue_fault(plan.fault)

    # ------------------------------------------------------------------ input

    async def _reader(self) -> None:
        while True:
            try:
                raw = await self.ws.get_message()
            except ConnectionClosed:
                self._peer_closed()
                return
            if self._closing or self.ending is not None:
                continue  # keep draining until the close completes
            self._handle_raw(raw)

    def _reject(self, raw: Any, reason: str) -> None:
        self.record.invalid = raw
        self._log.info("fake.invalid_message", reason=reason)
        self._close_later(1007, reason)

    def _handle_raw(self, raw: str | bytes) -> None:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            obj = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._reject(raw, f"Invalid JSON payload received. {str(exc)[:60]}")
            return
        try:
            kind, msg = live.validate_client_message(obj, transparent_allowed=self.transparent_allowed)
        except live.LiveValidationError as exc:
            self._reject(obj, exc.server_reason())
            return
        self.record.messages.append(msg)
        if kind == "setup":
            if self._setup_seen:
                self._reject(obj, SETUP_TWICE_REASON)
            else:
                self._setup_seen = True
                self._on_setup(msg["setup"])
            return
        if not self._setup_seen:
            self._reject(obj, NOT_SETUP_REASON)
            return
        body = msg[kind]
        self._consumed += 1  # this message's index is self._consumed - 1
        if kind == "clientContent":
            self._on_client_content(body)
        elif kind == "realtimeInput":
            self._on_realtime_input(body)
        elif kind == "toolResponse":
            self._on_tool_response(body)
        elif kind == "contextUpdate":
            self._on_context_update(body)
        if self._closing:
            return
        if kind != "realtimeInput" or not self._is_media(body):
            self._maybe_resumable_update()
        self._fire("messages", self._consumed)

    @staticmethod
    def _is_media(body: dict[str, Any]) -> bool:
        return any(body.get(k) is not None for k in ("audio", "video", "mediaChunks"))

    # ------------------------------------------------------------------ setup

    def _on_setup(self, body: dict[str, Any]) -> None:
        self.record.setup = {"setup": body}
        self._fire("setup")
        if self._closing:
            return
        up = self.up
        max_sessions = self.opts.max_sessions
        if max_sessions is not None:
            others = sum(1 for c in up.open_connections() if c is not self)
            if others >= max_sessions:
                self._close_later(1011, QUOTA_REASON)
                return
        model = body.get("model") or ""
        spec = self.opts.catalogue.lookup(model)
        if spec is None:
            self._refuse_setup(1008, C.not_found_reason(model), "unknown or retired model")
            return
        refusal = self._setup_refusal(spec, body)
        if refusal is not None:
            self._refuse_setup(*refusal)
            return
        self.spec = spec
        resumption = body.get("sessionResumption")
        self._resumption = resumption is not None
        self._transparent = self.opts.transparent or bool((resumption or {}).get("transparent"))
        handle = (resumption or {}).get("handle")
        now = trio.current_time()
        if handle:
            entry = up.handles.valid(handle, now)
            if entry is None:
                self._close_later(1008, NOT_FOUND_REASON)
                return
            conv = entry.conversation
            other = up.connection(conv.live_connection) if conv.live_connection is not None else None
            if other is not None and other.is_open:
                self._close_later(1011, BUSY_REASON)
                return
            if conv.model != model:
                self._close_later(1007, MODEL_MISMATCH_REASON)
                return
            if conv.handles and conv.handles[-1] != handle:
                conv.rollbacks += 1
            conv.restore(entry.snapshot)
            self.record.resumed_handle = handle
        else:
            conv = up.new_conversation(model)
        conv.live_connection = self.record.id
        conv.connection_ids.append(self.record.id)
        self.conversation = conv
        self.record.conversation_id = conv.id
        # A resumed setup may change anything but the model.
        self._audio_out = self._modality(spec, body) == "AUDIO"
        self._in_tx = body.get("inputAudioTranscription") is not None
        self._out_tx_enabled = body.get("outputAudioTranscription") is not None
        self._set_tools(body.get("tools") or [])
        history_cfg = body.get("historyConfig") or {}
        self._history_open = (
            spec.history is C.History.INITIAL_ONLY
            and handle is None
            and history_cfg.get("initialHistoryInClientContent") is True
        )
        sysi = body.get("systemInstruction")
        conv.state.system_instruction = M.content_text(sysi) if isinstance(sysi, dict) else ""
        self._log.info(
            "fake.setup", conversation=conv.id, resumed=handle is not None, model=model,
            spec=spec.name, audio=self._audio_out, transparent=self._transparent,
        )
        self._emit(live.setup_complete())
        self._setup_complete.set()
        if self._resumption:
            self._resumable_update()
        if self.opts.empty_frames:
            self._emit({})
            self._emit({})
        self._fire("after_setup")

    def _refuse_setup(self, code: int, reason: str, why: str) -> None:
        self._log.info("fake.setup_refused", code=code, why=why)
        self._close_later(code, reason)

    @staticmethod
    def _modalities(body: dict[str, Any]) -> list[str]:
        gen_cfg = body.get("generationConfig") or {}
        return [str(m).upper() for m in gen_cfg.get("responseModalities") or []]

    def _modality(self, spec: C.ModelSpec, body: dict[str, Any]) -> str:
        modalities = self._modalities(body)
        if "AUDIO" in modalities:
            return "AUDIO"
        return modalities[0] if modalities else spec.default_modality

    def _setup_refusal(self, spec: C.ModelSpec, body: dict[str, Any]) -> tuple[int, str, str] | None:
        """(code, reason, why) if the service would refuse this setup on ``spec``'s model.

        The codes of the thinking, proactive-audio and BLOCKING refusals are UNCONFIRMED
        (GEMINI_LIVE_2026.md §6); 1007 is the likely one.
        """
        bad = (1007, C.INVALID_ARGUMENT)
        modalities = self._modalities(body)
        if len(modalities) > 1 and spec is not C.LEGACY:
            return (*bad, "more than one response modality")
        modality = self._modality(spec, body)
        if modality not in spec.modalities:
            return (*spec.modality_refusal, f"response modality {modality} not supported")
        thinking = (body.get("generationConfig") or {}).get("thinkingConfig")
        if spec.thinking is C.Thinking.REFUSED and thinking is not None:
            return (*bad, "thinkingConfig not supported by this model")
        if spec.thinking is C.Thinking.EXACTLY_ONE:
            given = [k for k in ("thinkingLevel", "thinkingBudget") if (thinking or {}).get(k) is not None]
            if len(given) != 1:
                return (*bad, "exactly one of thinkingLevel / thinkingBudget is required")
        proactivity = body.get("proactivity") or {}
        if spec.proactive_audio_always and proactivity.get("proactiveAudio") is False:
            return (*bad, "proactive audio cannot be turned off on this model")
        if spec.tool_mode is C.ToolMode.NON_BLOCKING:
            for decl in M.declarations(body.get("tools") or []).values():
                if decl.get("behavior") == "BLOCKING":
                    return (*bad, "BLOCKING functions are not supported by this model")
        return None

    def _set_tools(self, tools: list[dict[str, Any]]) -> None:
        self._decls = M.declarations(tools)
        self._functions = list(self._decls)

    def _behavior(self, name: str) -> str:
        """How a call of ``name`` runs: its declared ``behavior`` if the model honours it."""
        if self.spec.tool_mode is C.ToolMode.BLOCKING:
            return "BLOCKING"
        declared = (self._decls.get(name) or {}).get("behavior")
        if declared in ("BLOCKING", "NON_BLOCKING"):
            return str(declared)
        return self.spec.default_behavior

    def _status(self, *, more: bool) -> str | None:
        """The ``interactionStatus`` for a turnComplete now; None if this model sends none."""
        spec = self.spec
        extended = spec.style is C.Style.EXTENDED
        if not spec.interaction_status or not (extended or self.opts.plain_interaction_status):
            return None
        if more or (extended and self._pending_calls):
            return IN_PROGRESS
        return IDLE

    # ------------------------------------------------------------------ resumption

    def _update(self, handle: str, resumable: bool) -> None:
        index = self._consumed - 1 if self._transparent and self._consumed > 0 else None
        self._emit(live.session_resumption_update(handle, resumable, index))

    def _resumable_update(self) -> None:
        if not self._resumption or self._closing or self.conversation is None:
            return
        handle = self.up.handles.issue(self.conversation, self.record.id, trio.current_time())
        self.record.handles.append(handle)
        self._update(handle, True)

    def _maybe_resumable_update(self) -> None:
        if self._handles_allowed():
            self._resumable_update()

    def _handles_allowed(self) -> bool:
        """resumable:false while generating or while a call is pending (SDK docstring); the
        IN_PROGRESS gap and pending NON_BLOCKING calls only as the options say (UNCONFIRMED)."""
        gen = self._gen
        if gen is not None and not (gen.in_progress and self.opts.resumable_in_progress):
            return False
        for call in self._pending_calls.values():
            if call.behavior == "BLOCKING" or not self.opts.resumable_pending_calls:
                return False
        return True

    def _busy_update(self) -> None:
        if self._resumption:
            self._update("", False)

    # ------------------------------------------------------------------ client content

    @property
    def _state(self) -> M.ConversationState:
        assert self.conversation is not None
        return self.conversation.state

    def _on_client_content(self, body: dict[str, Any]) -> None:
        history = self.spec.history is C.History.INITIAL_ONLY
        if history and not self._history_open:
            self._reject(body, HISTORY_REASON)
            return
        if not history:
            self._interrupt()
        st = self._state
        for turn in body.get("turns") or []:
            text = M.content_text(turn)
            if turn.get("role") == "user":
                st.add_user_text(text)
            else:
                st.history.append({"role": str(turn.get("role")), "text": text})
        if history:
            # Initial history: taken without calling the model, until turnComplete:true.
            if body.get("turnComplete"):
                self._history_open = False
            st.pending = []
            return
        if body.get("turnComplete"):
            self._user_turn()
        elif self.spec.interaction_status:
            self._emit(live.waiting_for_input())

    def _on_realtime_input(self, body: dict[str, Any]) -> None:
        if self._history_open:
            self._reject(body, HISTORY_OPEN_REASON)
            return
        st = self._state
        if (audio := body.get("audio")) is not None:
            self._take_blob(audio)
        for blob in body.get("mediaChunks") or []:
            self._take_blob(blob)
        if body.get("video") is not None:
            st.video_frames += 1
        if body.get("activityStart") is not None:
            self._interrupt()
        if (text := body.get("text")) is not None:
            self._interrupt()
            st.add_user_text(text)
            self._user_turn()
        if body.get("activityEnd") is not None or body.get("audioStreamEnd"):
            label = st.take_audio()
            if label is not None:
                if self._in_tx:
                    self._emit(live.input_transcription(label))
                self._interrupt()
                self._user_turn()

    def _take_blob(self, blob: dict[str, Any]) -> None:
        mime = str(blob.get("mimeType") or "")
        if mime.startswith("audio/"):
            try:
                data = live.b64decode_any(blob.get("data") or "")
            except LiveMessageError:
                self._reject(blob, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES)")
                return
            st = self._state
            st.add_audio(len(data), M.pcm_rate(mime))
            if self._in_tx and self.spec.interim_transcription:
                self._emit(live.interim_input_transcription(f"({st.pending_audio_ms} ms of audio)"))
        else:
            self._state.video_frames += 1

    def _on_context_update(self, body: dict[str, Any]) -> None:
        sysi = body.get("systemInstruction")
        if isinstance(sysi, dict):
            self._state.system_instruction = M.content_text(sysi)
        tools = body.get("tools")
        if isinstance(tools, dict):
            self._set_tools(tools.get("tools") or [])

    # ------------------------------------------------------------------ the model

    def _user_turn(self) -> None:
        turn, heard, earlier = self._state.begin_turn()
        name = M.tool_to_call(self._functions, heard, self.opts.tool_trigger_words)
        if name is not None and self._behavior(name) == "BLOCKING":
            gen = self._start(_Gen(turn, "tool"))
            assert self._nursery is not None
            self._nursery.start_soon(self._call_tool, gen, name, heard)
        elif name is not None:
            # NON_BLOCKING: the call goes out, and the model speaks a filler meanwhile.
            gen = self._start(_Gen(turn, "reply", text=M.tool_filler_text(turn, name)))
            assert self._nursery is not None
            self._nursery.start_soon(self._call_tool, gen, name, heard)
        else:
            answer = M.compose_reply(turn, heard, earlier)
            if self.spec.style is C.Style.EXTENDED:
                gen = _Gen(turn, "reply", text=M.filler_text(turn), more=[answer])
            else:
                gen = _Gen(turn, "reply", text=answer)
            self._stream(self._start(gen))

    def _start(self, gen: _Gen) -> _Gen:
        self._gen = gen
        self._busy_update()
        return gen

    def _stream(self, gen: _Gen) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._stream_reply, gen)

    async def _stream_reply(self, gen: _Gen) -> None:
        """Speak ``gen.text``, then each of ``gen.more``: one turnComplete per utterance, the
        ones before the last with IN_PROGRESS (extended thinking), the last one IDLE."""
        with gen.scope:
            await self._speak(gen)

    async def _speak(self, gen: _Gen) -> None:
        while True:
            if not await self._utter(gen, gen.text):
                return
            more = bool(gen.more)
            self._end_utterance(gen, last=not more)
            if not more:
                return
            gen.in_progress = True
            self._turn_done()  # a handle here only with resumable_in_progress
            await trio.sleep(self.opts.reply_pace)  # background reasoning
            if self._gen is not gen:
                return
            gen.in_progress = False
            gen.text = gen.more.pop(0)

    async def _utter(self, gen: _Gen, text: str) -> bool:
        """Stream ``text`` in chunks; False if ``gen`` was superseded (interrupted) meanwhile."""
        pace = self.opts.reply_pace
        for i, chunk in enumerate(M.split_chunks(text, self.opts.reply_chunks)):
            await trio.sleep(pace)
            if self._gen is not gen:
                return False
            if self._audio_out:
                self._emit(live.server_audio(M.pcm_for_text(chunk)))
                if self._out_tx_enabled:
                    self._emit(live.output_transcription(chunk))
            else:
                self._emit(live.server_text(chunk))
            gen.sent += chunk
            if i == 0 and self.opts.empty_frames:
                self._emit({})
            self._counts["chunks"] += 1
            self._fire("chunks", self._counts["chunks"])
        await trio.sleep(pace)
        return self._gen is gen

    def _end_utterance(self, gen: _Gen, *, last: bool) -> None:
        st = self._state
        prompt = st.context_tokens()
        st.add_model_text(gen.text)
        gen.sent = ""
        if last:
            self._gen = None
        self._emit(live.generation_complete())
        usage = live.usage_metadata(prompt, M.text_tokens(gen.text))
        self._emit(live.turn_complete(usage, self._status(more=not last)))
        if last:
            self._turn_done()
            self._next_when_idle()

    def _turn_done(self) -> None:
        self._counts["turns"] += 1
        self._maybe_resumable_update()
        self._fire("turns", self._counts["turns"])

    def _next_when_idle(self) -> None:
        """The model went idle: speak the oldest WHEN_IDLE tool result waiting, if any."""
        if self._gen is None and self._when_idle and not self._closing:
            self._stream(self._start(self._when_idle.pop(0)))

    async def _call_tool(self, gen: _Gen, name: str, heard: str) -> None:
        behavior = self._behavior(name)
        with gen.scope:
            await trio.sleep(self.opts.reply_pace)
            if self._gen is not gen:
                return
            args = M.call_args(self._decls.get(name) or {}, heard)
            call = M.ToolCallRecord(self.up.new_call_id(), name, args, gen.turn, behavior=behavior)
            st = self._state
            st.tool_calls.append(call)
            st.history.append({"role": "model", "text": f"call {name}", "call_id": call.id})
            gen.tool_ids.append(call.id)
            self._pending_calls[call.id] = call
            self._emit(live.tool_call([{"id": call.id, "name": name, "args": call.args}]))
            self._counts["tool_call"] += 1
            self._fire("tool_call", self._counts["tool_call"])
            if behavior == "NON_BLOCKING":
                await self._speak(gen)  # the filler, while the call runs

    def _on_tool_response(self, body: dict[str, Any]) -> None:
        responses = body.get("functionResponses") or []
        for i, fr in enumerate(responses):
            scheduling = fr.get("scheduling")
            if scheduling is not None and scheduling not in ("SILENT", "WHEN_IDLE", "INTERRUPT"):
                self._reject(body, BAD_SCHEDULING_REASON.format(i=i) + f" ({live.encode(scheduling)})")
                return
            if fr["id"] not in self._pending_calls:
                self._reject(body, BAD_TOOL_ID_REASON.format(id=fr["id"]))
                return
        last: M.ToolCallRecord | None = None
        for fr in responses:
            call = self._pending_calls[fr["id"]]
            if fr.get("willContinue") is not True:
                del self._pending_calls[call.id]  # a generator ends with willContinue false
                call.answered = True
            call.response = fr.get("response")
            call.responses.append(call.response)
            self._state.history.append(
                {"role": "tool", "text": json.dumps(call.response, sort_keys=True), "call_id": call.id}
            )
            if call.behavior == "NON_BLOCKING":
                self._async_result(call, fr.get("scheduling") or "WHEN_IDLE")
            elif call.answered:
                last = call
        gen = self._gen
        if (
            last is not None
            and gen is not None
            and gen.kind == "tool"
            and not any(i in self._pending_calls for i in gen.tool_ids)
        ):
            text = M.compose_tool_reply(gen.turn, last.name, last.response)
            self._stream(self._start(_Gen(gen.turn, "reply", text=text)))

    def _async_result(self, call: M.ToolCallRecord, scheduling: str) -> None:
        """A NON_BLOCKING result: SILENT goes into context only; WHEN_IDLE is spoken when the
        model is idle; INTERRUPT stops what the model is saying and is spoken now."""
        if scheduling == "SILENT":
            return
        gen = _Gen(call.turn, "reply", text=M.compose_tool_reply(call.turn, call.name, call.response))
        if scheduling == "INTERRUPT":
            self._interrupt()
        if self._gen is None:
            self._stream(self._start(gen))
        else:
            self._when_idle.append(gen)

    def _interrupt(self) -> None:
        """New input while the model is busy: stop it, as the real service does. BLOCKING calls
        of the stopped turn are cancelled (``toolCallCancellation``); NON_BLOCKING ones go on."""
        gen = self._gen
        if gen is None:
            return
        self._gen = None
        gen.scope.cancel()
        st = self._state
        if gen.sent:
            st.add_model_text(gen.sent, interrupted=True)
        ids = [
            i for i in gen.tool_ids
            if i in self._pending_calls and self._pending_calls[i].behavior == "BLOCKING"
        ]
        for call_id in ids:
            self._pending_calls.pop(call_id).cancelled = True
        if ids:
            self._emit(live.tool_call_cancellation(ids))
        self._emit(live.interrupted())
        prompt = st.context_tokens()
        usage = live.usage_metadata(prompt, M.text_tokens(gen.sent) if gen.sent else 0)
        self._emit(live.turn_complete(usage, self._status(more=False)))
        self._counts["turns"] += 1
        self._fire("turns", self._counts["turns"])
