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
MAX_MESSAGE_BYTES = 16 * 2**20


def _cut(reason: str) -> str:
    raw = reason.encode("utf-8")
    return reason if len(raw) <= 123 else raw[:123].decode("utf-8", errors="ignore")


@attrs.define(eq=False)
class _Item:
    due: float
    msg: dict | None = None
    data: bytes = b""
    fault: Fault | None = None


@attrs.define(eq=False)
class _Gen:
    """One model turn in progress: streaming a reply, or waiting for a tool response."""

    turn: int
    kind: str  # "reply" | "tool"
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    text: str = ""
    sent: str = ""
    tool_ids: list[str] = attrs.Factory(list)


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

    def _emit(self, msg: dict) -> None:
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
    def _is_media(body: dict) -> bool:
        return any(body.get(k) is not None for k in ("audio", "video", "mediaChunks"))

    # ------------------------------------------------------------------ setup

    def _on_setup(self, body: dict) -> None:
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
        gen_cfg = body.get("generationConfig") or {}
        modalities = [str(m).upper() for m in gen_cfg.get("responseModalities") or []]
        self._audio_out = "AUDIO" in modalities
        self._in_tx = body.get("inputAudioTranscription") is not None
        self._out_tx_enabled = body.get("outputAudioTranscription") is not None
        self._functions = M.declared_functions(body)
        sysi = body.get("systemInstruction")
        conv.state.system_instruction = M.content_text(sysi) if isinstance(sysi, dict) else ""
        self._log.info(
            "fake.setup", conversation=conv.id, resumed=handle is not None, model=model,
            audio=self._audio_out, transparent=self._transparent,
        )
        self._emit(live.setup_complete())
        self._setup_complete.set()
        if self._resumption:
            self._resumable_update()
        if self.opts.empty_frames:
            self._emit({})
            self._emit({})
        self._fire("after_setup")

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
        if self._gen is None and not self._pending_calls:
            self._resumable_update()

    def _busy_update(self) -> None:
        if self._resumption:
            self._update("", False)

    # ------------------------------------------------------------------ client content

    @property
    def _state(self) -> M.ConversationState:
        assert self.conversation is not None
        return self.conversation.state

    def _on_client_content(self, body: dict) -> None:
        self._interrupt()
        st = self._state
        for turn in body.get("turns") or []:
            text = M.content_text(turn)
            if turn.get("role") == "user":
                st.add_user_text(text)
            else:
                st.history.append({"role": str(turn.get("role")), "text": text})
        if body.get("turnComplete"):
            self._user_turn()

    def _on_realtime_input(self, body: dict) -> None:
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

    def _take_blob(self, blob: dict) -> None:
        mime = str(blob.get("mimeType") or "")
        if mime.startswith("audio/"):
            try:
                data = live.b64decode_any(blob.get("data") or "")
            except live.LiveMessageError:
                self._reject(blob, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES)")
                return
            self._state.add_audio(len(data), M.pcm_rate(mime))
        else:
            self._state.video_frames += 1

    def _on_context_update(self, body: dict) -> None:
        sysi = body.get("systemInstruction")
        if isinstance(sysi, dict):
            self._state.system_instruction = M.content_text(sysi)
        tools = body.get("tools")
        if isinstance(tools, dict):
            self._functions = M.declared_functions(tools)

    # ------------------------------------------------------------------ the model

    def _user_turn(self) -> None:
        turn, heard, earlier = self._state.begin_turn()
        name = M.tool_to_call(self._functions, heard, self.opts.tool_trigger_words)
        if name is not None:
            gen = self._start(_Gen(turn, "tool"))
            assert self._nursery is not None
            self._nursery.start_soon(self._call_tool, gen, name, heard)
        else:
            gen = self._start(_Gen(turn, "reply", text=M.compose_reply(turn, heard, earlier)))
            self._stream(gen)

    def _start(self, gen: _Gen) -> _Gen:
        self._gen = gen
        self._busy_update()
        return gen

    def _stream(self, gen: _Gen) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._stream_reply, gen)

    async def _stream_reply(self, gen: _Gen) -> None:
        pace = self.opts.reply_pace
        with gen.scope:
            for i, chunk in enumerate(M.split_chunks(gen.text, self.opts.reply_chunks)):
                await trio.sleep(pace)
                if self._gen is not gen:
                    return
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
            if self._gen is not gen:
                return
            st = self._state
            prompt = st.context_tokens()
            st.add_model_text(gen.text)
            self._gen = None
            self._emit(live.generation_complete())
            self._emit(live.turn_complete(live.usage_metadata(prompt, M.text_tokens(gen.text))))
            self._turn_done()

    def _turn_done(self) -> None:
        self._counts["turns"] += 1
        self._maybe_resumable_update()
        self._fire("turns", self._counts["turns"])

    async def _call_tool(self, gen: _Gen, name: str, heard: str) -> None:
        with gen.scope:
            await trio.sleep(self.opts.reply_pace)
            if self._gen is not gen:
                return
            call = M.ToolCallRecord(self.up.new_call_id(), name, {"query": heard}, gen.turn)
            st = self._state
            st.tool_calls.append(call)
            st.history.append({"role": "model", "text": f"call {name}", "call_id": call.id})
            gen.tool_ids.append(call.id)
            self._pending_calls[call.id] = call
            self._emit(live.tool_call([{"id": call.id, "name": name, "args": call.args}]))
            self._counts["tool_call"] += 1
            self._fire("tool_call", self._counts["tool_call"])

    def _on_tool_response(self, body: dict) -> None:
        last: M.ToolCallRecord | None = None
        for fr in body.get("functionResponses") or []:
            call = self._pending_calls.pop(fr["id"], None)
            if call is None:
                self._reject(body, BAD_TOOL_ID_REASON.format(id=fr["id"]))
                return
            call.response = fr.get("response")
            call.answered = True
            self._state.history.append(
                {"role": "tool", "text": json.dumps(call.response, sort_keys=True), "call_id": call.id}
            )
            last = call
        gen = self._gen
        if last is not None and not self._pending_calls and gen is not None and gen.kind == "tool":
            text = M.compose_tool_reply(gen.turn, last.name, last.response)
            self._stream(self._start(_Gen(gen.turn, "reply", text=text)))

    def _interrupt(self) -> None:
        """New input while the model is busy: stop it, as the real service does."""
        gen = self._gen
        if gen is None:
            return
        self._gen = None
        gen.scope.cancel()
        st = self._state
        if gen.sent:
            st.add_model_text(gen.sent, interrupted=True)
        ids = [i for i in gen.tool_ids if i in self._pending_calls]
        for call_id in ids:
            self._pending_calls.pop(call_id).cancelled = True
        if ids:
            self._emit(live.tool_call_cancellation(ids))
        self._emit(live.interrupted())
        prompt = st.context_tokens()
        self._emit(live.turn_complete(live.usage_metadata(prompt, M.text_tokens(gen.sent) if gen.sent else 0)))
        self._counts["turns"] += 1
        self._fire("turns", self._counts["turns"])
