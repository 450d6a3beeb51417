"""One accepted WebSocket connection of the fake upstream: the Live protocol as the server plays it.

Tasks (all in the connection's nursery): a **reader** that drains ``get_message`` and handles each
client message synchronously; a single **writer** that sends the outbox in order (so ``latency``
is a delay line and faults keep their place among frames); a **lifetime** timer (goAway, then the
cut); one **generation** task per model reply; timers for ``after_seconds`` faults.

The connection owns the wire, the clock and the resumption handles; what the model does is
composed in: setup admission (:mod:`.admission`, pure), the voice (:mod:`.speaker`), the tool
calls (:mod:`.tooldesk`) and what the client's input does to the conversation (:mod:`.hearing`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from geminid.protocol import live

from . import catalogue as C
from . import model as M
from .admission import NOT_ADMITTED, admit, setup_refusal
from .faults import Fault, Planned
from .hearing import Hearing
from .options import CANCELLED_REASON, GOAWAY_VIOLATION_REASON
from .records import ConnectionRecord
from .speaker import Speaker
from .tooldesk import ToolDesk

if TYPE_CHECKING:
    from .server import FakeUpstream

log = structlog.get_logger()

NOT_FOUND_REASON = "Requested entity was not found."
QUOTA_REASON = "RESOURCE_EXHAUSTED: Maximum concurrent sessions"
BUSY_REASON = "Internal error encountered. Session is still attached to another connection."
MODEL_MISMATCH_REASON = "Request contains an invalid argument. Model cannot be changed on resumption."
NOT_SETUP_REASON = "Request contains an invalid argument. The first message must be setup."
SETUP_TWICE_REASON = "Request contains an invalid argument. Setup may only be sent once."
MAX_MESSAGE_BYTES = 16 * 2**20


def _cut(reason: str) -> str:
    raw = reason.encode("utf-8")
    return reason if len(raw) <= 123 else raw[:123].decode("utf-8", errors="ignore")


@attrs.define(eq=False)
class _Item:
    due: float
    msg: dict[str, Any] | None = None
    data: bytes = b""
    fault: Fault | None = None


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
        self.closing = False  # a terminal fault is queued: emit nothing more
        self._nursery: trio.Nursery | None = None
        self._out_tx, self._out_rx = trio.open_memory_channel[_Item](math.inf)
        self._life_scope: trio.CancelScope | None = None
        self._setup_seen = False
        self._setup_complete = trio.Event()
        self.spec: C.ModelSpec = C.LEGACY
        self.admitted = NOT_ADMITTED
        self.speaker = Speaker(self)
        self.tools = ToolDesk(self)
        self.hearing = Hearing(self)
        self._consumed = 0
        # Fault-trigger counters, bumped by the speaker and the tool desk. This and
        # _maybe_resumable_update keep their names: tests/soak patches them.
        self._counts = {"chunks": 0, "tool_call": 0, "turns": 0}
        self._log = log.bind(conn=record.id)

    # ------------------------------------------------------------------ lifecycle

    @property
    def setup_seen(self) -> bool:
        return self._setup_seen

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
            self.fire("accept")
            nursery.start_soon(self._reader)

    def end(self, why: str) -> None:
        """Stop every task of this connection now (no more frames, no more reads)."""
        if self.ending is None:
            self.ending = why
            self.up.timeline.append((self.record.id, "ended"))
            self._detach()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``fn`` in this connection's nursery (it ends with the connection)."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

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
            if self.closing:
                return
            self.closing = True
        self._out_tx.send_nowait(_Item(due=trio.current_time(), fault=fault))

    async def wait_stall_end(self) -> None:
        with trio.move_on_after(math.inf if self.stall_duration is None else self.stall_duration):
            await self.unstall.wait()

    # ------------------------------------------------------------------ output

    def emit(self, msg: dict[str, Any]) -> None:
        if self.closing or self.ending is not None:
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
                    self.emit(live.go_away(deadline - max(goaway_at, trio.current_time())))
            await trio.sleep_until(deadline)
            if self.opts.cut_mode == "cancelled":
                self._close_later(1000, CANCELLED_REASON)
            else:
                self._close_later(1008, GOAWAY_VIOLATION_REASON)

    def _goaway_now(self, time_left: float) -> None:
        self.emit(live.go_away(time_left))
        self._start_life(None, trio.current_time() + time_left)

    async def _timed_fault(self, fault: Fault, when: float) -> None:
        await trio.sleep_until(when)
        self.queue_fault(fault)

    def fire(self, kind: str, n: int = 0) -> None:
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
            if self.closing or self.ending is not None:
                continue  # keep draining until the close completes
            self._handle_raw(raw)

    def reject(self, raw: Any, reason: str) -> None:
        self.record.invalid = raw
        self._log.info("fake.invalid_message", reason=reason)
        self._close_later(1007, reason)

    def _handle_raw(self, raw: str | bytes) -> None:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            obj = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.reject(raw, f"Invalid JSON payload received. {str(exc)[:60]}")
            return
        try:
            kind, msg = live.validate_client_message(obj, transparent_allowed=self.transparent_allowed)
        except live.LiveValidationError as exc:
            self.reject(obj, exc.server_reason())
            return
        self.record.messages.append(msg)
        if kind == "setup":
            if self._setup_seen:
                self.reject(obj, SETUP_TWICE_REASON)
            else:
                self._setup_seen = True
                self.up.timeline.append((self.record.id, "setup"))
                self._on_setup(msg["setup"])
            return
        if not self._setup_seen:
            self.reject(obj, NOT_SETUP_REASON)
            return
        body = msg[kind]
        self._consumed += 1  # this message's index is self._consumed - 1
        if self.conversation is not None:
            self.conversation.state.consumed += 1
        if kind == "clientContent":
            self.hearing.client_content(body)
        elif kind == "realtimeInput":
            self.hearing.realtime_input(body)
        elif kind == "toolResponse":
            self.tools.on_response(body)
        elif kind == "contextUpdate":
            self.hearing.context_update(body)
        if self.closing:
            return
        if kind != "realtimeInput" or not self._is_media(body):
            self._maybe_resumable_update()
        self.fire("messages", self._consumed)

    @staticmethod
    def _is_media(body: dict[str, Any]) -> bool:
        return any(body.get(k) is not None for k in ("audio", "video", "mediaChunks"))

    # ------------------------------------------------------------------ setup

    def _on_setup(self, body: dict[str, Any]) -> None:
        self.record.setup = {"setup": body}
        self.fire("setup")
        if self.closing:
            return
        up = self.up
        max_sessions = self.opts.max_sessions
        if max_sessions is not None:
            others = sum(1 for c in up.open_sessions() if c is not self)
            if others >= max_sessions:
                self._close_later(1011, QUOTA_REASON)
                return
        model = body.get("model") or ""
        spec = self.opts.catalogue.lookup(model)
        if spec is None:
            self._refuse_setup(1008, C.not_found_reason(model), "unknown or retired model")
            return
        refusal = setup_refusal(spec, body)
        if refusal is not None:
            self._refuse_setup(*refusal)
            return
        self.spec = spec
        # A resumed setup may change anything but the model.
        self.admitted = admitted = admit(spec, body, transparent=self.opts.transparent)
        handle = (body.get("sessionResumption") or {}).get("handle")
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
        self.tools.set_tools(body.get("tools") or [])
        self.hearing.history_open = admitted.history_open
        sysi = body.get("systemInstruction")
        conv.state.system_instruction = M.content_text(sysi) if isinstance(sysi, dict) else ""
        self._log.info(
            "fake.setup", conversation=conv.id, resumed=handle is not None, model=model,
            spec=spec.name, audio=admitted.audio_out, transparent=admitted.transparent,
        )
        self.emit(live.setup_complete())
        self._setup_complete.set()
        if admitted.resumption:
            self._resumable_update()
        if self.opts.empty_frames:
            self.emit({})
            self.emit({})
        self.fire("after_setup")

    def _refuse_setup(self, code: int, reason: str, why: str) -> None:
        self._log.info("fake.setup_refused", code=code, why=why)
        self._close_later(code, reason)

    # ------------------------------------------------------------------ resumption

    def _update(self, handle: str, resumable: bool) -> None:
        base, _, scope = self.opts.consumed_index.partition("-")
        count = self._consumed
        if scope == "session" and self.conversation is not None:
            count = self.conversation.state.consumed
        index = count - 1 + int(base) if self.admitted.transparent and count > 0 else None
        self.emit(live.session_resumption_update(handle, resumable, index))

    def _resumable_update(self) -> None:
        if not self.admitted.resumption or self.closing or self.conversation is None:
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
        gen = self.speaker.gen
        if gen is not None and not (gen.in_progress and self.opts.resumable_in_progress):
            return False
        return not self.tools.holds_handles(self.opts.resumable_pending_calls)

    def busy_update(self) -> None:
        if self.admitted.resumption:
            self._update("", False)

    # ------------------------------------------------------------------ client content

    @property
    def state(self) -> M.ConversationState:
        assert self.conversation is not None
        return self.conversation.state
