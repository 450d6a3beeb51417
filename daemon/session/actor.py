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

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import structlog
import trio

from geminid.daemon import logsetup
from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.config import Config
from geminid.daemon.events import EventHub
from geminid.daemon.metrics import Metrics
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.core import Conn, Failed, SessionCore
from geminid.daemon.session.durability import Durability
from geminid.daemon.session.effects import (
    DropPreDial,
    Effect,
    EndConnection,
    HandleDropped,
    InvalidateCredential,
    Misconfigured,
    Notify,
    Persist,
    PreDial,
    SecretAdded,
    SecretRemoved,
    Transition,
)
from geminid.daemon.session.record import SessionRecord, fingerprint
from geminid.daemon.session.relay import HANDLE_CHECKPOINT_DELAY as HANDLE_CHECKPOINT_DELAY
from geminid.daemon.session.relay import Relay, handle_tag
from geminid.daemon.session.replay import ReplayBuffer
from geminid.daemon.session.sendids import SentIds
from geminid.daemon.session.sending import Sender
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.session.writer import UNSENT_HIGH as UNSENT_HIGH
from geminid.daemon.states import LocalReason, State
from geminid.daemon.upstream import Backoff, Dial, PreDialSlot, UpstreamLink
from geminid.protocol import live
from geminid.protocol.notifications import (
    EndReason,
    SessionEnded,
)


class SessionActor(Sender, Relay):
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
        self.hub = hub
        self.dial = dial
        self.metrics = metrics
        self.rng = rng or random.Random()
        #: Wall clock (seconds since the epoch), passed in: handle ages must survive restarts,
        #: and tests drive it like trio's MockClock.
        self.wall = wall
        self.log = structlog.get_logger("geminid.session").bind(session=name)

        self.created_at: float = wall()
        self.restored = record is not None
        self.buffer = ReplayBuffer(
            max_bytes=config.session.replay_buffer_bytes, staleness=config.session.audio_staleness,
            consumed_index=config.upstream.consumed_index,
        )
        self.tools = ToolCalls()
        #: Ids of idempotent sends (checkpointed with the messages, see sendids).
        self.ids = SentIds()
        self.next_seq = 1
        self.durability = Durability(name, store, self.snapshot, self.log)
        self.reconnects = 0
        self.connected_since: float | None = None  # wall clock
        self.down_since: float | None = trio.current_time()
        self.activity = Activity(self.buffer, self.tools, last_activity=trio.current_time())
        self.core = SessionCore(
            session=config.session, backoff=config.backoff, activity=self.activity,
            transparent=config.upstream.transparent, predial=config.upstream.predial,
        )
        self.core.last_alive_at = wall()
        self._conn: Conn | None = None
        self._link: UpstreamLink | None = None
        self._conn_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._wake = trio.Event()
        self._timer_wake = trio.Event()
        self._probe = trio.Event()
        self._drained = trio.Event()
        #: Set once the session is to end for good: why (the enum decides), and the words.
        self._closing: str | None = None
        self._closing_kind: LocalReason | None = None
        self._stopping = False
        self.last_snapshot: dict[str, Any] | None = None
        self._connected_once = False
        self._relay_scope: trio.CancelScope | None = None
        self._writer = None
        #: The connection dialled during a goAway drain (in the actor's nursery, from run()).
        self.predials = PreDialSlot(dial, self.log)
        self._ended = trio.Event()
        self._stopped_cleanly = False
        #: Restored: the highest seq the previous daemon may have sent; and the eliciting
        #: messages whose replies start again on this connection (ReplayBuffer.restarting).
        self._restored_through = 0
        self._replayed: set[int] = set()
        self._in_replayed_reply = False
        #: The eliciting message the reply now streaming answers, up to its turnComplete.
        self._reply_of: int | None = None
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
    def state(self) -> State:
        """The session state: decided by the core (:meth:`SessionCore._to`), read here."""
        return self.core.state

    @property
    def status_reason(self) -> str | None:
        return self.core.status_reason

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
                self.durability.start(nursery)
                await self._persist()
                task_status.started()
                nursery.start_soon(self._inactivity_watch)
                nursery.start_soon(self.durability.lazy_checkpoints, HANDLE_CHECKPOINT_DELAY)
                self.predials.nursery = nursery
                try:
                    await self._life()
                finally:  # (ended, failed, stopped, closed: a pre-dial left over is closed)
                    await self.predials.aclose("session ended")
                nursery.cancel_scope.cancel()
        finally:
            self._drained.set()
            self.durability.fail_waiters()
            self._ended.set()

    async def _finished_if_asked(self) -> bool:
        """Stop (daemon shutdown) or close (client, inactivity) if that was asked for."""
        if self._stopping:
            await self._finish_stopped()
            return True
        if self._closing:
            await self._finish_closed(self._closing)
            return True
        return False

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

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out what the core decided."""
        for effect in effects:
            if isinstance(effect, Persist):
                if effect.urgent:
                    self.durability.persist()
                else:
                    self.durability.persist_lazily()
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
            elif isinstance(effect, Transition):
                self._transitioned(effect)
            elif isinstance(effect, Misconfigured):
                # Once per session: the operator's hint. Retries go on (an outage recovers).
                self.log.warning("session.misconfigured", cause=effect.cause, reason=effect.reason,
                                 attempts=effect.attempts)
            elif isinstance(effect, InvalidateCredential):
                self.dial.credentials.invalidate()
            elif isinstance(effect, PreDial):
                self.predials.start()
            elif isinstance(effect, DropPreDial):
                self.predials.drop(effect.reason)

    # ------------------------------------------------------------------ transitions & events --

    def _transitioned(self, move: Transition) -> None:
        """The core moved the session: log it once, publish the status."""
        if not move.new.connected:
            self._drained.set()  # nothing to drain into now: release acks held for backpressure
        self.log.info("session.transition", **move.log_fields())
        self.hub.notify(move.status)

    async def _finish_failed(self, failed: Failed) -> None:
        reason, verdict = failed.reason, failed.verdict
        self._apply(failed.effects)
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
        self._apply(self.core.closed(reason))
        ended = EndReason.TIMEOUT if self._closing_kind is LocalReason.INACTIVITY else EndReason.CLOSED
        self.hub.notify(SessionEnded(ended, reason))

    async def _finish_stopped(self) -> None:
        self.log.info("session.stopped", handle=handle_tag(self.handle))
        self._stopped_cleanly = True  # the last record: its event_last is the last event seq
        gen = self.durability.persist()
        await self.durability.wait_quietly(gen)

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

    def _mark_replays(self) -> None:
        """A new connection: the eliciting messages an earlier connection (or, restored, the
        previous daemon) may have sent, whose replies now start again from their beginning."""
        self._replayed = self.buffer.restarting(self._replayed, self._restored_through)
        self._in_replayed_reply = False
        self._reply_of = None

    def _replaying_reply(self, msg: live.ServerMessage) -> bool:
        """The server frame ``msg`` belongs to a reply to a replayed message (up to and with its
        ``turnComplete``, which may come after the reply's end was counted)."""
        if msg.kind != "serverContent" or not self._replayed:
            return False
        answering = self.buffer.replies.answering()
        if answering is not None and answering in self._replayed:
            self._in_replayed_reply = True
        marked = self._in_replayed_reply
        if msg.raw.get("serverContent", {}).get("turnComplete"):
            self._in_replayed_reply = False
        return marked

    def _reply_answers(self, msg: live.ServerMessage) -> int | None:
        """The seq of the eliciting message whose reply the server frame ``msg`` belongs to (from
        the reply's first frame up to and with its ``turnComplete``), or None (not a reply frame,
        or nothing owed). Call before the frame may end the reply. A Live client records the seq
        of the replies it was given whole, so that a restarted daemon spares it those replies
        when it replays their messages (:mod:`geminid.daemon.live.connection`)."""
        if msg.kind != "serverContent":
            return None
        if self._reply_of is None:
            self._reply_of = self.buffer.replies.answering()
        answers = self._reply_of
        if msg.raw.get("serverContent", {}).get("turnComplete"):
            self._reply_of = None
        return answers

    # ------------------------------------------------------------------ checkpoint record --

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint record (see :mod:`geminid.daemon.session.record`), as the store writes it."""
        if self.state.connected:
            self.core.last_alive_at = self.wall()
        self.last_snapshot = record = self.record().to_dict()
        return record

    def record(self) -> SessionRecord:
        core = self.core.record(
            self.name, self.setup, created_at=self.created_at, seq_reserved=self.durability.seq_reserved,
            event_reserved=self.durability.event_reserved, reconnects=self.reconnects,
            failed=self.status_reason if self.state is State.FAILED else None,
        )
        return attrs.evolve(core, ids=tuple(self.ids.items()), event_last=self.hub.last_seq,
                            clean=self._stopped_cleanly)

    def _restore(self, record: dict[str, Any]) -> None:
        """Rebuild from a checkpoint record (already checksum-verified by the store).

        :meth:`SessionRecord.from_dict` type-checks every field, exactly as the registry's
        pre-check (:func:`geminid.daemon.registry.unusable_record`) does before starting us.
        """
        r = SessionRecord.from_dict(record, name=self.name)
        self.created_at = r.created_at or self.wall()
        self.reconnects = r.reconnects
        # Continue strictly after everything that may have been handed out before the crash.
        self.next_seq = r.seq_reserved + 1
        if self.hub.next_seq <= r.event_reserved:  # (a hub that lived on through a crash knows better)
            self.hub.restored(r.event_last, r.event_reserved, clean=r.clean)
        self.hub.next_seq = max(self.hub.next_seq, r.event_reserved + 1)
        self.ids.restore(r.ids)
        # The previous daemon may have sent any of them before it died.
        self._restored_through = max((p.seq for p in r.pending), default=0)
        # The session has had no connection since its last one ended (before the restart).
        if r.last_alive_at:
            self.down_since = trio.current_time() - max(0.0, self.wall() - r.last_alive_at)
        self.durability.restored(self.next_seq - 1, self.hub.next_seq - 1)
        self._apply(self.core.restore(r, trio.current_time()))
