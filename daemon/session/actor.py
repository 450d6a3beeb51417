"""The session actor: the trio shell around one session's sans-IO core.

:class:`SessionActor` runs the I/O of one named Gemini Live conversation held across any number of
connections: the dial loop, one connection at a time (reader, writer, timers), the cancel scopes,
the ack waits. What to *do* is decided by :class:`~geminid.daemon.session.core.SessionCore` (the
handle, the backoff, goAway, stalls, what an ending means, client-message acceptance) and
:class:`~geminid.daemon.session.activity.Activity`; the actor carries out their effects: it
persists through :class:`~geminid.daemon.session.durability.Durability`, publishes catalogued
notifications on the hub, and keeps the explicit state machine (each transition logged once, with
its cause). Clients reach it through :meth:`SessionActor.submit` and the event hub.

One connection's life::

    dial (+ setup with sessionResumption) ─▶ setupComplete ─▶ live
        reader task:  server frames ─▶ core/activity ─▶ events to subscribers
        writer task:  replay buffer (cursor) ─▶ socket, in seq order, held while draining
        timer task:   goAway deadline, stall detection (core.timer), keepalive pings
    ─▶ an Ending ─▶ core.ended (classify, backoff) ─▶ resume (handle) | fresh (context lost) | failed

Why the buffer is the send queue: a message is written once per connection, in order, and
stays until a resumable handle covers it. A reconnect simply rewinds the cursor, so "replay" and
"send" are the same code path and cannot disagree about order.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog
import trio

from geminid.daemon import logsetup
from geminid.daemon.backoff import Backoff
from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.classify import Ending, EndingKind, Verdict
from geminid.daemon.config import Config
from geminid.daemon.events import EventHub
from geminid.daemon.metrics import Metrics
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.core import Conn, Failed, SessionCore, Stall
from geminid.daemon.session.durability import Deferred, Durability, Waiter
from geminid.daemon.session.effects import (
    Effect,
    EndConnection,
    HandleDropped,
    Notify,
    Persist,
    SecretAdded,
    SecretRemoved,
)
from geminid.daemon.session.record import PendingMessage, SessionRecord, fingerprint
from geminid.daemon.session.replay import Entry, ReplayBuffer, classify_message
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.states import LocalReason, State, transition
from geminid.daemon.upstream import Dial, Ended, UpstreamLink, ending_from_group, open_link
from geminid.protocol import live
from geminid.protocol.errors import (
    SessionFailed,
)
from geminid.protocol.notifications import (
    EndReason,
    SessionContext,
    SessionContextLost,
    SessionEnded,
    SessionMessage,
    SessionStatus,
    SessionToolCallLost,
)

#: Server message kinds the daemon owns and does not forward to clients (connection churn and
#: resumption handles are the daemon's business; clients see session.status instead).
_PRIVATE_KINDS = frozenset({"setupComplete", "sessionResumptionUpdate", "goAway"})
#: Handle-only checkpoint changes are written at most this often (see _lazy_checkpoints).
HANDLE_CHECKPOINT_DELAY = 1.0
#: Messages queued but not yet written to a live link, past which acks wait (backpressure).
UNSENT_HIGH = 256


def handle_tag(handle: str | None) -> str | None:
    """What logs may say about a handle: a short hash, never the handle."""
    if not handle:
        return None
    return hashlib.sha256(handle.encode()).hexdigest()[:8]


class SessionActor:
    def __init__(
        self,
        name: str,
        setup: dict[str, Any],
        *,
        config: Config,
        store: CheckpointStore,
        hub: EventHub,
        dial: Dial,
        metrics: Metrics,
        record: dict[str, Any] | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float],
    ) -> None:
        self.name = name
        self.setup = setup
        self.fingerprint = fingerprint(setup)
        self.cfg = config
        self.store = store
        self.hub = hub
        self.dial = dial
        self.metrics = metrics
        self.rng = rng or random.Random()
        #: Wall clock (seconds since the epoch), passed in: handle ages must survive restarts,
        #: and tests drive it like trio's MockClock.
        self.wall = wall
        self.log = structlog.get_logger("geminid.session").bind(session=name)

        self.state = State.CONNECTING
        self.status_reason: str | None = None
        self.created_at: float = wall()
        self.restored = record is not None
        self.buffer = ReplayBuffer(
            max_bytes=config.session.replay_buffer_bytes, staleness=config.session.audio_staleness
        )
        self.tools = ToolCalls()
        self.next_seq = 1
        self.durability = Durability(name, store, self.snapshot, self.log)
        self.reconnects = 0
        self.connected_since: float | None = None  # wall clock
        self.down_since: float | None = trio.current_time()
        self.activity = Activity(self.buffer, self.tools, last_activity=trio.current_time())
        self.core = SessionCore(
            session=config.session, backoff=config.backoff, activity=self.activity,
            transparent=config.upstream.transparent,
        )
        self.core.last_alive_at = wall()
        self._conn: Conn | None = None
        self._link: UpstreamLink | None = None
        self._conn_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._wake = trio.Event()
        self._timer_wake = trio.Event()
        self._drained = trio.Event()
        self._lazy_checkpoint = trio.Event()
        #: Set once the session is to end for good: why (the enum decides), and the words.
        self._closing: str | None = None
        self._closing_kind: LocalReason | None = None
        self._stopping = False
        self.last_snapshot: dict[str, Any] | None = None
        self._connected_once = False
        self._relay_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery
        self._ended = trio.Event()
        if record is not None:
            self._restore(record)

    # The core owns the handle and its times; these read (and, for tests' broken builds, write) it.
    @property
    def handle(self) -> str | None:
        return self.core.handle

    @handle.setter
    def handle(self, value: str | None) -> None:
        self.core.handle = value

    @property
    def handle_issued_at(self) -> float | None:
        return self.core.handle_issued_at

    @property
    def last_alive_at(self) -> float:
        return self.core.last_alive_at

    @property
    def backoff(self) -> Backoff:
        return self.core.backoff

    @property
    def transcript(self) -> deque[dict[str, Any]]:
        return self.core.transcript

    # ------------------------------------------------------------------ public (registry) --

    @property
    def last_seq(self) -> int:
        return self.hub.last_seq

    def summary(self) -> dict[str, Any]:
        now_wall = self.wall()
        return {
            "session": self.name,
            "status": self.state.value,
            "reason": self.status_reason,
            "model": self.setup.get("model"),
            "handle_age_s": round(now_wall - self.handle_issued_at, 1) if self.handle_issued_at else None,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
            "buffered": len(self.buffer),
            "buffered_bytes": self.buffer.bytes,
            "dropped_stale": self.buffer.stats.dropped_stale,
            "dropped_full": self.buffer.stats.dropped_full,
            "refused": self.buffer.stats.refused,
            "replayed": self.buffer.stats.replayed,
            "pending_tool_calls": self.tools.open_ids(),
            "subscribers": self.hub.subscriber_count,
            "last_seq": self.hub.last_seq,
            "restored": self.restored,
        }

    async def submit(self, message: dict[str, Any]) -> int:
        """Accept one client message. Returns its seq once acknowledged.

        Turns, tool responses and context updates are acknowledged once durable (group-committed
        with whatever else is being written); audio and other realtime input on enqueue. The
        seq is assigned before the first await, so concurrent submits keep their call order.
        """
        outcome = self.submit_now(message)
        return outcome if isinstance(outcome, int) else await outcome

    def submit_now(self, message: dict[str, Any]) -> int | Awaitable[int]:
        """Accept ``message`` synchronously: its seq when it is already acknowledged (audio and
        other realtime input, the relay's hot path: no task, no await), else an awaitable that
        yields the seq once it is durable. Errors are raised here, before anything is queued."""
        seq, waiter = self._accept(message)
        if waiter is None and seq <= self.durability.seq_durable and not self._backlogged():
            return seq
        return Deferred(self._acknowledge, seq, waiter)

    def _backlogged(self) -> bool:
        """A client sends faster than the live link drains: slow its acks down (backpressure)
        instead of letting the buffer grow until it evicts audio that was never sent. While
        disconnected there is nothing to wait for; the byte bound and staleness apply."""
        return self.state.connected and self.buffer.unsent > UNSENT_HIGH

    def _accept(self, message: dict[str, Any]) -> tuple[int, Waiter | None]:
        if self.state.terminal or self._closing:
            raise SessionFailed(
                f"session {self.name!r} is {self.state.value}"
                + (f": {self.status_reason}" if self.status_reason else ""),
                data={"status": self.state.value},
            )
        seq = self.next_seq
        entry = self.core.accept(message, seq, trio.current_time())
        self.next_seq += 1
        waiter = None
        if entry.kind.durable:
            waiter = self.durability.commit(seq, partial(self._durable, entry), partial(self._not_durable, entry))
        else:
            self._wake_writer()
        self._maybe_reserve()
        return seq, waiter

    async def _acknowledge(self, seq: int, waiter: Waiter | None) -> int:
        while self._backlogged():
            if self._drained.is_set():
                self._drained = trio.Event()  # one event shared by every waiting ack
            await self._drained.wait()
        await self.durability.acknowledged(seq, waiter)
        if seq > self.durability.seq_durable:
            await self._await_reservation()
        return seq

    def _durable(self, entry: Entry, gen: int) -> None:
        entry.gen = gen  # released to the writer
        self._wake_writer()

    def _not_durable(self, entry: Entry) -> None:
        if entry.gen < 0:
            self.buffer.discard_unsent(entry)
        self.metrics.not_durable += 1

    def touch(self) -> None:
        """A client opened or attached to the session: it is not idle (the inactivity timeout)."""
        self.activity.touch(trio.current_time())

    async def stop(self) -> None:
        """Daemon shutdown: close upstream with 1000 and flush, but keep the session's
        checkpoint and handle so that the restarted daemon resumes the same conversation."""
        if self.state.terminal:
            return
        self._stopping = True
        self._cancel_current(LocalReason.SHUTDOWN.value)
        await self._ended.wait()

    def force_reconnect(self, reason: str = LocalReason.FORCED.value) -> bool:
        """Close the current upstream connection from our side and reconnect at once (ops/tests).

        A live connection is closed with 1000 after the relay stops, exactly like a goAway
        rotation, and the next one resumes with the newest handle (the replay buffer is resent
        as on any reconnect). A dial or setup in progress is abandoned and retried; a backoff
        wait is cut short. Nothing is lost: unacknowledged and uncovered messages stay in the
        replay buffer. Returns False (and does nothing) if the session is closed, failed,
        closing or stopping.
        """
        if self.state.terminal or self._closing or self._stopping:
            return False
        self.log.info("session.force_reconnect", reason=reason)
        self._cancel_current(reason)
        return True

    async def close(self, reason: str = LocalReason.CLOSED.value) -> None:
        """End the session for good: close upstream with 1000, delete the checkpoint."""
        if self.state.terminal:
            return
        self._closing, self._closing_kind = reason, LocalReason.CLOSED
        self._cancel_current(reason)
        await self._ended.wait()

    # ------------------------------------------------------------------ the actor's life --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until the session is closed or failed; raises only on bugs (the supervisor's job)."""
        structlog.contextvars.bind_contextvars(session=self.name)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.durability.start(nursery)
                await self._persist()
                task_status.started()
                nursery.start_soon(self._inactivity_watch)
                nursery.start_soon(self._lazy_checkpoints)
                await self._life()
                nursery.cancel_scope.cancel()
        finally:
            self._drained.set()
            self.durability.fail_waiters()
            self._ended.set()

    async def _life(self) -> None:
        while True:
            if await self._finished_if_asked():
                return
            plan = self.core.dial(self.wall())
            self._apply(plan.effects)
            self._to(State.RESUMING if plan.resume else State.CONNECTING, cause=plan.cause, attempt=plan.attempt)
            ending = await self._connect_and_relay(plan.resume, plan.attempt)
            if await self._finished_if_asked():
                return
            decision = self.core.ended(ending, trio.current_time(), self.rng.random())
            verdict, live_for = decision.classified, decision.live_for
            self.metrics.reconnect(verdict.cause)
            self.log.info(
                "upstream.closed",
                code=ending.code,
                reason=logsetup.redact_text(ending.reason)[:200],
                kind=ending.kind.value,
                http_status=ending.http_status,
                action=verdict.action.value,
                cause=verdict.cause,
                live_s=round(live_for, 3) if live_for is not None else None,
            )
            if isinstance(decision, Failed):
                await self._finish_failed(decision.verdict, ending, note=decision.note)
                return
            self._apply(decision.effects)
            if decision.delay > 0:
                self._to(State.BACKOFF, cause=verdict.cause, attempt=self.backoff.attempt,
                         retry_in=round(decision.delay, 3), reason=_short(ending))
                with trio.CancelScope() as scope:
                    self._wait_scope = scope
                    await trio.sleep(decision.delay)
                self._wait_scope = None

    async def _finished_if_asked(self) -> bool:
        """Stop (daemon shutdown) or close (client, inactivity) if that was asked for."""
        if self._stopping:
            await self._finish_stopped()
            return True
        if self._closing:
            await self._finish_closed(self._closing)
            return True
        return False

    async def _connect_and_relay(self, resume: bool, attempt: int) -> Ending:
        assert self.core.conn is not None
        conn = self._conn = self.core.conn
        setup_wire = live.encode(self.core.setup_message(self.setup, resume=resume))
        self.log.info("upstream.connecting", resume=resume, attempt=attempt, handle=handle_tag(self.handle))
        ending: Ending
        try:
            with trio.CancelScope() as scope:
                self._conn_scope = scope
                if self._closing:
                    scope.cancel()
                async with trio.open_nursery() as conn_nursery:
                    link, setup_s = await open_link(conn_nursery, self.dial, setup_wire)
                    self._link = link
                    try:
                        ending = await self._relay(link, conn, setup_s)
                    finally:
                        self._link = None
                        self.metrics.bytes_up += link.bytes_up
                        self.metrics.bytes_down += link.bytes_down
                        if conn.local_reason is not None:
                            await link.close(1000, "")
                        else:
                            await link.abort()
                    conn_nursery.cancel_scope.cancel()
            if scope.cancelled_caught:
                ending = Ending(EndingKind.LOCAL, reason=conn.local_reason or "cancelled")
        except Ended as exc:
            ending = exc.ending
        except BaseExceptionGroup as group:
            found = ending_from_group(group, stage="relay" if conn.live_at else "connect")
            if found is None:
                raise
            ending = found
        finally:
            self._conn_scope = None
            self._conn = None
        if conn.live_at is not None:
            self.down_since = trio.current_time()
            self.connected_since = None
        return ending

    async def _relay(self, link: UpstreamLink, conn: Conn, setup_s: float) -> Ending:
        now = trio.current_time()
        self.connected_since = self.wall()
        self.core.opened(now, self.connected_since)
        self.log.info("upstream.connected", setup_ms=round(setup_s * 1000, 1), resume=conn.resumed)
        # "replayed" has one owner, the buffer's stats; the daemon-wide metric mirrors it.
        replaying = self._connected_once or self.restored
        before = self.buffer.stats.replayed
        dropped = self.buffer.new_connection(now, replaying=replaying)
        self.metrics.replayed += self.buffer.stats.replayed - before
        if dropped:
            self.metrics.dropped_stale += len(dropped)
        lost = self._reconcile_tool_calls(conn)
        seed = self.core.seed_message()
        self._announce_live(conn, lost)
        if seed is not None:
            await link.send(live.encode(seed))
            self.buffer.note_extra_sent()
        if replaying and len(self.buffer):
            self.log.info("replay.sent", messages=len(self.buffer), dropped_stale=len(dropped))
        ending: Ending | None = None

        async def reader() -> None:
            nonlocal ending
            while True:
                msg = await link.receive()
                self.activity.frame_received(trio.current_time())
                await self._on_server_message(msg, conn)
                if conn.local_reason is not None:
                    ending = Ending(EndingKind.LOCAL, reason=conn.local_reason)
                    nursery.cancel_scope.cancel()
                    return

        async def writer() -> None:
            while True:
                entry = self.buffer.peek()
                if entry is None or entry.gen < 0 or self.activity.holds(entry, draining=self.core.draining()):
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                self.buffer.mark_sent()
                if self.buffer.unsent <= UNSENT_HIGH // 2:
                    self._drained.set()
                await link.send(entry.wire)
                if self.activity.written(entry, trio.current_time()):
                    self._poke_timers()

        try:
            async with trio.open_nursery() as nursery:
                self._relay_scope = nursery.cancel_scope
                nursery.start_soon(reader)
                nursery.start_soon(writer)
                nursery.start_soon(self._timers, link, conn, nursery.cancel_scope)
        except Ended as exc:
            return exc.ending
        except BaseExceptionGroup as group:
            found = ending_from_group(group, stage="relay")
            if found is None:
                raise
            return found
        finally:
            self._relay_scope = None
            self.core.connection_closed(self.wall())
        if ending is None:
            ending = Ending(EndingKind.LOCAL, reason=conn.local_reason or "relay ended")
        return ending

    async def _timers(self, link: UpstreamLink, conn: Conn, scope: trio.CancelScope) -> None:
        """goAway deadline, stall detection and keepalive.

        Driven by the clock, not by arriving messages (after a goAway the server may go silent,
        and a check that runs only on arrival never fires). It sleeps until the earliest armed
        deadline and is poked (``_poke_timers``) when a new one may have been armed, so an idle
        session costs no wakeups besides its keepalive ping.
        """
        up = self.cfg.upstream
        next_ping = trio.current_time() + up.keepalive_interval if up.keepalive_interval > 0 else None
        while True:
            wake_at = self.core.wake_at(up.stall_timeout)
            if next_ping is not None:
                wake_at = min(wake_at, next_ping)
            self._timer_wake = trio.Event()
            with trio.move_on_at(wake_at):
                await self._timer_wake.wait()
            now = trio.current_time()
            fired = self.core.timer(now, up.stall_timeout)
            if isinstance(fired, EndConnection):
                self._end_connection(conn, fired.reason.value)
                self._wake_writer()
                raise Ended(Ending(EndingKind.LOCAL, reason=conn.local_reason or ""))
            if isinstance(fired, Stall):
                raise Ended(fired.ending)
            if next_ping is not None and now >= next_ping:
                with trio.move_on_after(up.keepalive_timeout) as ping_scope:
                    await link.ping()
                if ping_scope.cancelled_caught:
                    raise Ended(Ending(EndingKind.STALL, reason=f"no pong within {up.keepalive_timeout:g} s"))
                next_ping = trio.current_time() + up.keepalive_interval

    def _poke_timers(self) -> None:
        """A deadline may have been armed (goAway, a reply now expected): re-plan the timers."""
        self._timer_wake.set()

    # ------------------------------------------------------------------ server messages --

    async def _on_server_message(self, msg: live.ServerMessage, conn: Conn) -> None:
        kind = msg.kind
        if kind == "serverContent":
            self._on_server_content(msg, conn)
        elif kind == "toolCall":
            self.core.tool_call(msg)
            self._lazy_checkpoint.set()  # so that a restart can report the call as lost
        elif kind == "toolCallCancellation":
            self.tools.cancelled_by_server(msg.cancelled_ids)
        elif kind == "sessionResumptionUpdate":
            self._on_resumption_update(msg)
        elif kind == "goAway":
            self._on_goaway(msg, conn)
        if msg.usage:
            self._check_usage(msg.usage, conn)
        if kind not in _PRIVATE_KINDS:
            self.activity.touch(trio.current_time())
            if self.hub.next_seq > self.durability.event_durable:
                self._maybe_reserve(force=True)
                await self._await_reservation()
            self.hub.notify(SessionMessage(msg.raw))
            self._maybe_reserve()
        rotate = self.core.rotation()
        if rotate is not None:
            self._end_connection(conn, rotate.reason.value)

    def _on_server_content(self, msg: live.ServerMessage, conn: Conn) -> None:
        if self.core.server_content(msg).started:
            self._poke_timers()

    def _on_resumption_update(self, msg: live.ServerMessage) -> None:
        trimmed, effects = self.core.resumption_update(msg, self.wall())
        if effects:
            self.log.debug("session.handle", handle=handle_tag(self.handle), trimmed=trimmed)
        self._apply(effects)

    def _on_goaway(self, msg: live.ServerMessage, conn: Conn) -> None:
        time_left = self.core.goaway(msg.time_left, trio.current_time())
        self.log.info("upstream.goaway", time_left_s=time_left)
        if self.state is State.LIVE:
            self._to(State.DRAINING, cause="goaway", time_left=time_left)
        self._wake_writer()
        self._poke_timers()

    def _check_usage(self, usage: dict[str, Any], conn: Conn) -> None:
        """A resumed session whose prompt token count collapses has lost its context even
        though the server accepted the handle (reported with audio+video and ephemeral tokens)."""
        reason = self.core.usage(usage)
        if reason is not None:
            self.log.warning("session.context_lost", reason=reason, suspected=True)
            self.hub.notify(SessionContextLost(reason, suspected=True))

    # ------------------------------------------------------------------ decisions --

    def _end_connection(self, conn: Conn, reason: str) -> None:
        if conn.local_reason is None:
            conn.local_reason = reason
            self.log.info("session.rotating", reason=reason)
        if self._relay_scope is not None:
            self._relay_scope.cancel()

    def _cancel_current(self, reason: str) -> None:
        if self._conn is not None and self._conn.local_reason is None:
            self._conn.local_reason = reason
        if self._relay_scope is not None:
            # Live: end the relay only, so that the link's reader is still there to complete
            # the close handshake (1000) in _connect_and_relay.
            self._relay_scope.cancel()
        elif self._conn_scope is not None:
            self._conn_scope.cancel()
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _reconcile_tool_calls(self, conn: Conn) -> list[str]:
        lost, dropped = self.core.reconcile_tool_calls()
        if lost:
            self.log.warning("session.tool_call_lost", ids=lost, responses_dropped=dropped)
            self.durability.persist()
        return lost

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out what the core decided."""
        for effect in effects:
            if isinstance(effect, Persist):
                if effect.urgent:
                    self.durability.persist()
                else:
                    self._lazy_checkpoint.set()
            elif isinstance(effect, SecretAdded):
                logsetup.register_secret(effect.value)
            elif isinstance(effect, SecretRemoved):
                logsetup.forget_secret(effect.value)
            elif isinstance(effect, HandleDropped):
                self.metrics.fresh_fallbacks += 1
            elif isinstance(effect, Notify):
                self.hub.notify(effect.note)
            elif isinstance(effect, EndConnection):
                if self._conn is not None:
                    self._end_connection(self._conn, effect.reason.value)

    # ------------------------------------------------------------------ transitions & events --

    def _to(self, new: State, *, cause: str, **fields: Any) -> None:
        if new is self.state and new not in (State.CONNECTING, State.RESUMING):
            return
        old = self.state
        self.state = transition(old, new)
        if not new.connected:
            self._drained.set()  # nothing to drain into now: release acks held for backpressure
        note = SessionStatus(status=new.value, cause=cause, **fields)
        self.status_reason = note.reason or cause
        params = note.to_params()
        del params["status"]
        self.log.info("session.transition", **{"from": old.value, "to": new.value}, **params)
        self.hub.notify(note)

    def _announce_live(self, conn: Conn, lost_tools: list[str]) -> None:
        downtime_ms = None
        if self.down_since is not None:
            downtime_ms = round((trio.current_time() - self.down_since) * 1000, 1)
            self.metrics.downtime += trio.current_time() - self.down_since
        self.down_since = None
        if conn.resumed:
            context = SessionContext.RESTORED
            self.metrics.resumes += 1
            self.log.info(
                "session.resumed", attempt=conn.attempt, downtime_ms=downtime_ms,
                handle_age_s=round(self.wall() - self.handle_issued_at, 1) if self.handle_issued_at else None,
            )
        elif self.core.context_lost_pending is not None:
            context = SessionContext.LOST
        else:
            context = SessionContext.FRESH
        if self._connected_once or self.restored:
            self.reconnects += 1
        self._connected_once = True
        self._to(State.LIVE, cause="setup_complete", attempt=conn.attempt, context=context, downtime_ms=downtime_ms)
        if context is SessionContext.LOST and self.core.context_lost_pending is not None:
            reason = self.core.context_lost_pending
            self.log.warning("session.context_lost", reason=reason)
            self.hub.notify(SessionContextLost(reason))
            self.core.context_lost_pending = None
        if lost_tools:
            self.hub.notify(SessionToolCallLost(lost_tools))
            self.metrics.tool_calls_lost += len(lost_tools)

    async def _finish_failed(self, verdict: Verdict, ending: Ending, note: str | None = None) -> None:
        reason = note or f"{verdict.cause}: {_short(ending)}"
        self._to(State.FAILED, cause=verdict.cause, reason=reason)
        # Its own event at error level: the operator's alert (README: level == "error") fires
        # on a session that gave up, not on the info-level transition line.
        self.log.error("session.failed", cause=verdict.cause, reason=reason)
        self.hub.notify(SessionEnded(EndReason.FATAL, reason))
        # Keep the checkpoint: acknowledged turns are on disk until an operator (or a
        # session.close) decides; the sweeper removes it once the handle would have expired.
        gen = self.durability.persist()
        await self.durability.wait_quietly(gen)

    async def _finish_closed(self, reason: str) -> None:
        # Delete first, so that a client that sees "ended" can rely on the checkpoint being gone.
        if self.handle:
            logsetup.forget_secret(self.handle)
        self.handle = None
        gen = self.durability.delete()
        await self.durability.wait_quietly(gen)
        self._to(State.CLOSED, cause="closed", reason=reason)
        ended = EndReason.TIMEOUT if self._closing_kind is LocalReason.INACTIVITY else EndReason.CLOSED
        self.hub.notify(SessionEnded(ended, reason))

    async def _finish_stopped(self) -> None:
        self.log.info("session.stopped", handle=handle_tag(self.handle))
        gen = self.durability.persist()
        await self.durability.wait_quietly(gen)

    async def _lazy_checkpoints(self) -> None:
        """Write handle-only changes at most every HANDLE_CHECKPOINT_DELAY seconds.

        A newer handle only ever makes a checkpoint *shorter* (it trims the replay buffer), and
        an older checkpoint is always consistent on its own: its handle plus the messages that
        handle does not cover. Restoring it after a crash resumes a little earlier and replays a
        little more, losing nothing. So a handle, which the server sends after every turn, need
        not cost an fsync on the relay path; turns and tool responses still do, before their ack.
        """
        while True:
            await self._lazy_checkpoint.wait()
            await trio.sleep(HANDLE_CHECKPOINT_DELAY)
            self._lazy_checkpoint = trio.Event()
            self.durability.persist()

    async def _inactivity_watch(self) -> None:
        timeout = self.cfg.session.inactivity_timeout
        if timeout <= 0:
            return
        while not self.state.terminal:
            idle = self.activity.idle_for(trio.current_time())
            if idle >= timeout:
                self._closing = f"{LocalReason.INACTIVITY.value} ({timeout:g} s without activity)"
                self._closing_kind = LocalReason.INACTIVITY
                self.log.info("session.inactive", idle_s=round(idle, 1))
                self._cancel_current(self._closing)
                return
            await trio.sleep(timeout - idle)

    # ------------------------------------------------------------------ durability --

    def _maybe_reserve(self, force: bool = False) -> None:
        self.durability.maybe_reserve(self.next_seq, self.hub.next_seq, force=force)

    async def _await_reservation(self) -> None:
        await self.durability.await_reservation(lambda: self.next_seq, lambda: self.hub.next_seq)

    async def _persist(self) -> None:
        self._maybe_reserve(force=True)
        await self._await_reservation()

    def _wake_writer(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ checkpoint record --

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint record (see :mod:`geminid.daemon.session.record`), as the store writes it."""
        if self.state.connected:
            self.core.last_alive_at = self.wall()
        self.last_snapshot = record = self.record().to_dict()
        return record

    def record(self) -> SessionRecord:
        return SessionRecord(
            session=self.name,
            setup=self.setup,
            handle=self.handle,
            handle_issued_at=self.handle_issued_at,
            last_alive_at=self.last_alive_at,
            created_at=self.created_at,
            seq_reserved=self.durability.seq_reserved,
            event_reserved=self.durability.event_reserved,
            pending=tuple(PendingMessage(e.seq, e.message) for e in self.buffer.durable_entries()),
            pending_tools=tuple(self.tools.open_ids()),
            lost_tools=tuple(self.tools.lost),
            transcript=tuple(self.transcript),
            reconnects=self.reconnects,
            context_lost=self.core.context_lost_pending,
            failed=self.status_reason if self.state is State.FAILED else None,
        )

    def _restore(self, record: dict[str, Any]) -> None:
        """Rebuild from a checkpoint record (already checksum-verified by the store).

        :meth:`SessionRecord.from_dict` type-checks every field, exactly as the registry's
        pre-check (:func:`geminid.daemon.registry.unusable_record`) does before starting us.
        """
        r = SessionRecord.from_dict(record, name=self.name)
        self.created_at = r.created_at or self.wall()
        self.handle = r.handle
        self.core.handle_issued_at = r.handle_issued_at
        self.core.last_alive_at = r.last_alive_at
        if self.handle:
            logsetup.register_secret(self.handle)
        # Continue strictly after everything that may have been handed out before the crash.
        self.next_seq = r.seq_reserved + 1
        first_event = r.event_reserved + 1
        if self.hub.next_seq < first_event:
            self.hub.next_seq = first_event
        self.durability.restored(self.next_seq - 1, self.hub.next_seq - 1)
        now = trio.current_time()
        for item in r.pending:
            rkind, elicits = classify_message(next(iter(item.message)), item.message)
            self.buffer.append(Entry(item.seq, rkind, item.message, live.encode(item.message), now, elicits))
        # Tool calls open at the crash are lost on the resume (announced when live).
        self.tools.restore(r.pending_tools, r.lost_tools)
        self.transcript.extend(r.transcript)
        self.reconnects = r.reconnects
        self.core.context_lost_pending = r.context_lost
        if not self.handle and self.transcript:
            self.core.context_lost_pending = self.core.context_lost_pending or "no resumption handle was saved"


def _short(ending: Ending) -> str:
    if ending.http_status:
        return f"HTTP {ending.http_status}"
    if ending.code is not None:
        reason = logsetup.redact_text(ending.reason)[:120]
        return f"{ending.code} {reason}".strip()
    return f"{ending.kind.value}: {ending.reason}"[:160]
