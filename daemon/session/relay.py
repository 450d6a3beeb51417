"""One connection at a time: the dial loop, the relay (reader, writer, timers) and the server
messages, over the session's sans-IO core.

:class:`Relay` is the I/O half of :class:`~geminid.daemon.session.actor.SessionActor` (the actor
is a ``Relay``): the actor owns the session's life (commands, acceptance and acks, transitions,
durability, the record); this class runs each connection and hands every decision to the core
(:meth:`SessionCore.dial`, :meth:`~SessionCore.ended`, :meth:`~SessionCore.timer`,
:meth:`~SessionCore.rotation`, ...), carrying out the effects it returns.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from geminid.daemon import logsetup
from geminid.daemon.config import Config
from geminid.daemon.events import EventHub
from geminid.daemon.metrics import Metrics
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.core import Conn, Failed, Probe, SessionCore, Stall
from geminid.daemon.session.durability import Durability
from geminid.daemon.session.effects import Effect, EndConnection
from geminid.daemon.session.predial import predial_refusal
from geminid.daemon.session.replay import ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.session.writer import UNSENT_HIGH as UNSENT_HIGH
from geminid.daemon.session.writer import UpstreamWriter
from geminid.daemon.states import State
from geminid.daemon.upstream import (
    Dial,
    Ended,
    Ending,
    EndingKind,
    PreDialled,
    PreDialSlot,
    UpstreamLink,
    beside_transport_errors,
    ending_from_group,
    open_link,
    setup_link,
)
from geminid.protocol import live
from geminid.protocol.notifications import (
    SessionContext,
    SessionContextLost,
    SessionMessage,
    SessionToolCallLost,
)

#: Server message kinds the daemon owns and does not forward to clients (connection churn and
#: resumption handles are the daemon's business; clients see session.status instead).
_PRIVATE_KINDS = frozenset({"setupComplete", "sessionResumptionUpdate", "goAway"})
#: Handle-only checkpoint changes are written at most this often (see Durability.lazy_checkpoints).
HANDLE_CHECKPOINT_DELAY = 1.0


def handle_tag(handle: str | None) -> str | None:
    """What logs may say about a handle: a short hash, never the handle."""
    if not handle:
        return None
    return hashlib.sha256(handle.encode()).hexdigest()[:8]




class Relay:
    """The connection half of the session actor (see the module docstring)."""

    # Owned by SessionActor; declared here for the type checker.
    name: str
    setup: dict[str, Any]
    cfg: Config
    dial: Dial
    hub: EventHub
    metrics: Metrics
    rng: random.Random
    wall: Callable[[], float]
    log: Any
    restored: bool
    reconnects: int
    core: SessionCore
    activity: Activity
    buffer: ReplayBuffer
    tools: ToolCalls
    durability: Durability
    connected_since: float | None
    down_since: float | None
    _conn: Conn | None
    _link: UpstreamLink | None
    _conn_scope: trio.CancelScope | None
    _wait_scope: trio.CancelScope | None
    _relay_scope: trio.CancelScope | None
    _writer: UpstreamWriter | None
    predials: PreDialSlot
    _closing: str | None
    _connected_once: bool
    _wake: trio.Event
    _timer_wake: trio.Event
    #: Set by the timers to have the keepalive ping at once (a :class:`Probe`).
    _probe: trio.Event
    _drained: trio.Event

    if TYPE_CHECKING:
        @property
        def handle(self) -> str | None: ...
        @property
        def backoff(self) -> Any: ...
        @property
        def handle_issued_at(self) -> float | None: ...
        @property
        def state(self) -> State: ...
        def _apply(self, effects: list[Effect]) -> None: ...
        async def _finished_if_asked(self) -> bool: ...
        async def _finish_failed(self, failed: Failed) -> None: ...
        def _maybe_reserve(self, force: bool = False) -> None: ...
        async def _await_reservation(self) -> None: ...
        def _wake_writer(self) -> None: ...
        def _mark_replays(self) -> None: ...
        def _replaying_reply(self, msg: live.ServerMessage) -> bool: ...
        def _reply_answers(self, msg: live.ServerMessage) -> int | None: ...

    async def _life(self) -> None:
        while True:
            if await self._finished_if_asked():
                return
            plan = self.core.dial(self.wall())
            self._apply(plan.effects)  # (ending with the move to connecting/resuming)
            predial = self.predials.take() if plan.predialled else None
            ending = await self._connect_and_relay(plan.resume, plan.attempt, predial)
            if await self._finished_if_asked():
                return
            decision = self.core.ended(
                ending, trio.current_time(), self.rng.random(), summary=short_ending(ending),
                credential_refreshable=self.dial.credentials.refreshable,
            )
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
                await self._finish_failed(decision)
                return
            self._apply(decision.effects)  # (ending with the move to backoff if there is a wait)
            if decision.delay > 0:
                with trio.CancelScope() as scope:
                    self._wait_scope = scope
                    await trio.sleep(decision.delay)
                self._wait_scope = None

    async def _connect_and_relay(self, resume: bool, attempt: int, predial: PreDialled | None = None) -> Ending:
        assert self.core.conn is not None
        conn = self._conn = self.core.conn
        setup_wire = live.encode(self.dial.upstream_setup(self.core.setup_message(self.setup, resume=resume)))
        self.log.info("upstream.connecting", resume=resume, attempt=attempt, handle=handle_tag(self.handle),
                      predialled=predial is not None)
        ending: Ending
        try:
            with trio.CancelScope() as scope:
                self._conn_scope = scope
                if self._closing:
                    scope.cancel()
                async with trio.open_nursery() as conn_nursery:
                    link, setup_s = await _open_link(conn_nursery, self.dial, setup_wire, predial, self.log)
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
            stage = "relay" if conn.live_at else "connect"
            found = ending_from_group(group, stage=stage)
            if found is None:
                raise beside_transport_errors(group, stage=stage)  # noqa: B904 - the group is its context
            ending = found
        finally:
            self._conn_scope = None
            self._conn = None
            if predial is not None:
                predial.release()  # (the link, if it used it, is closed by now)
        if conn.live_at is not None:
            if self.down_since is None:  # (set when the relay ended: the drop, not after the close)
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
        self._mark_replays()
        before, answered_before = self.buffer.stats.replayed, self.buffer.stats.dropped_answered
        dropped = self.buffer.new_connection(now, replaying=replaying, fresh=not conn.resumed)
        dropped_answered = self.buffer.stats.dropped_answered - answered_before
        self.metrics.replayed += self.buffer.stats.replayed - before
        if dropped:
            self.metrics.dropped_stale += len(dropped)
        lost = self._reconcile_tool_calls(conn)
        seed = self.core.seed_message()
        self._announce_live(conn, lost)
        if seed is not None:
            await link.send(live.encode(seed))
            self.buffer.note_extra_sent()
        if replaying and (len(self.buffer) or dropped_answered):
            self.log.info(
                "replay.sent", messages=len(self.buffer), dropped_stale=len(dropped), dropped_answered=dropped_answered
            )
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

        try:
            async with trio.open_nursery() as nursery:
                self._relay_scope = nursery.cancel_scope
                nursery.start_soon(reader)
                self._writer = UpstreamWriter(self, link)
                nursery.start_soon(self._writer.run)
                nursery.start_soon(self._timers, link, conn, nursery.cancel_scope)
                nursery.start_soon(self._keepalive, link)
        except Ended as exc:
            return exc.ending
        except BaseExceptionGroup as group:
            found = ending_from_group(group, stage="relay")
            if found is None:
                raise beside_transport_errors(group, stage="relay")  # noqa: B904 - the group is its context
            return found
        finally:
            self._relay_scope = None
            self._writer = None
            self.down_since = trio.current_time()  # downtime counts from the drop
            self.core.connection_closed(self.wall())
        if ending is None:
            ending = Ending(EndingKind.LOCAL, reason=conn.local_reason or "relay ended")
        return ending

    async def _timers(self, link: UpstreamLink, conn: Conn, scope: trio.CancelScope) -> None:
        """goAway deadline and stall detection; the keepalive runs beside them.

        Driven by the clock, not by arriving messages (after a goAway the server may go silent,
        and a check that runs only on arrival never fires). It sleeps until the earliest armed
        deadline and is poked (``_poke_timers``) when a new one may have been armed. Nothing here
        awaits the peer: the keepalive ping waits for its pong in its own task, so each timer
        fires on its own deadline (a stall at ``stall_timeout``, not at the pong timeout).
        """
        up = self.cfg.upstream
        while True:
            self._timer_wake = trio.Event()
            with trio.move_on_at(self.core.wake_at(up.stall_timeout)):
                await self._timer_wake.wait()
            fired = self.core.timer(trio.current_time(), up.stall_timeout)
            if isinstance(fired, Probe):
                self._probe.set()  # the keepalive pings now
                continue
            if isinstance(fired, EndConnection):
                self._end_connection(conn, fired.reason.value)
                self._wake_writer()
                raise Ended(Ending(EndingKind.LOCAL, reason=conn.local_reason or ""))
            if isinstance(fired, Stall):
                raise Ended(fired.ending)

    async def _keepalive(self, link: UpstreamLink) -> None:
        """A WebSocket ping every ``keepalive_interval`` (0: none), and at once when the timers
        ask (a :class:`Probe`: was an overdue input declined?); no pong within
        ``keepalive_timeout`` ends the connection as a stall (a probe's pong is awaited by the
        stall check too). Its own task, so a silent peer cannot hold up the goAway deadline or
        the stall check while the ping waits."""
        up = self.cfg.upstream
        every = up.keepalive_interval if up.keepalive_interval > 0 else math.inf
        while True:
            with trio.move_on_after(every):
                await self._probe.wait()
            self._probe = trio.Event()
            sent_at = trio.current_time()
            with trio.move_on_after(up.keepalive_timeout) as ping_scope:
                await link.ping()
            if ping_scope.cancelled_caught:
                raise Ended(Ending(EndingKind.STALL, reason=f"no pong within {up.keepalive_timeout:g} s"))
            if self.activity.pong(sent_at):
                self.log.info("session.reply_declined", why="the server read the input and said nothing")
            self._poke_timers()

    def _poke_timers(self) -> None:
        """A deadline may have been armed (goAway, a reply now expected): re-plan the timers."""
        self._timer_wake.set()

    # ------------------------------------------------------------------ server messages --

    async def _on_server_message(self, msg: live.ServerMessage, conn: Conn) -> None:
        kind = msg.kind
        replayed = self._replaying_reply(msg)  # (before the frame may end the reply)
        answers = self._reply_answers(msg)
        if kind == "serverContent":
            self._on_server_content(msg, conn)
        elif kind == "toolCall":
            self.core.tool_call(msg)
            self._wake_writer()  # the server now waits for the client: a held replay goes on
            self.durability.persist_lazily()  # so that a restart can report the call as lost
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
            self.hub.notify(SessionMessage(msg.raw, replayed=replayed), answers=answers)
            self._maybe_reserve()
        rotate = self.core.rotation()
        if rotate is not None:
            self._end_connection(conn, rotate.reason.value)

    def _on_server_content(self, msg: live.ServerMessage, conn: Conn) -> None:
        facts = self.core.server_content(msg)
        if facts.started:
            self._poke_timers()
        if facts.boundary:
            self._wake_writer()  # a reply ended: the writer may be holding the backlog for it

    def _on_resumption_update(self, msg: live.ServerMessage) -> None:
        trimmed, effects = self.core.resumption_update(msg, self.wall())
        if effects and logsetup.enabled("debug"):  # (no hash per handle when nobody reads it)
            self.log.debug("session.handle", handle=handle_tag(self.handle), trimmed=trimmed)
        self._apply(effects)

    def _on_goaway(self, msg: live.ServerMessage, conn: Conn) -> None:
        time_left, effects = self.core.goaway(msg.time_left, trio.current_time())
        self.log.info("upstream.goaway", time_left_s=time_left)
        self._apply(effects)
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

    def _reconcile_tool_calls(self, conn: Conn) -> list[str]:
        lost, dropped = self.core.reconcile_tool_calls()
        if lost:
            self.log.warning("session.tool_call_lost", ids=lost, responses_dropped=dropped)
            self.durability.persist()
        return lost

    def _announce_live(self, conn: Conn, lost_tools: list[str]) -> None:
        downtime_ms = None
        if self.down_since is not None:
            downtime_ms = round((trio.current_time() - self.down_since) * 1000, 1)
            self.metrics.downtime += trio.current_time() - self.down_since
        self.down_since = None
        context, effects = self.core.went_live(downtime_ms)
        if context is SessionContext.RESTORED:
            self.metrics.resumes += 1
            self.log.info(
                "session.resumed", attempt=conn.attempt, downtime_ms=downtime_ms,
                handle_age_s=round(self.wall() - self.handle_issued_at, 1) if self.handle_issued_at else None,
            )
        if self._connected_once or self.restored:
            self.reconnects += 1
        self._connected_once = True
        self._apply(effects)
        if context is SessionContext.LOST and self.core.context_lost_pending is not None:
            reason = self.core.context_lost_pending
            self.log.warning("session.context_lost", reason=reason)
            self.hub.notify(SessionContextLost(reason))
            self.core.context_lost_pending = None
        if lost_tools:
            self.hub.notify(SessionToolCallLost(lost_tools))
            self.metrics.tool_calls_lost += len(lost_tools)


def short_ending(ending: Ending) -> str:
    """An ending in a few words, for a status reason (never a secret: the text is redacted)."""
    if ending.http_status:
        return f"HTTP {ending.http_status}"
    if ending.code is not None:
        reason = logsetup.redact_text(ending.reason)[:120]
        return f"{ending.code} {reason}".strip()
    return f"{ending.kind.value}: {ending.reason}"[:160]


async def _open_link(
    nursery: trio.Nursery, dial: Dial, setup_wire: str, predial: PreDialled | None, log: Any
) -> tuple[UpstreamLink, float]:
    """The setup on the pre-dialled connection if it is still good, else a dial as usual."""
    if predial is not None:
        sock = await predial.wait()  # (a dial still under way: bounded by its connect timeout)
        failed = short_ending(predial.failure) if predial.failure is not None else None
        now = trio.current_time()
        refusal = predial_refusal(
            failed=failed, closed=sock is None or sock.closed, idle_for=now - sock.ready_at if sock else 0.0
        )
        if refusal is None and sock is not None:
            predial.used = True
            log.debug("upstream.predial_used", dial_ms=round(sock.dial_s * 1000, 1),
                      idle_ms=round((now - sock.ready_at) * 1000, 1))
            return await setup_link(sock, dial, setup_wire)
        log.info("upstream.predial_failed", reason=refusal)
        predial.release()
    return await open_link(nursery, dial, setup_wire)
