"""The session registry: names to supervised session actors; the socket server's only peer.

Each session runs under its own supervisor in the registry's nursery, so a crash restarts that
session alone (from its last checkpoint snapshot) and never touches its neighbours. Past the
supervisor's intensity limit the error escalates out of the registry and the daemon exits
non-zero: systemd restarts it, and every session resumes from disk.

The registry also owns what must outlive an actor restart: the event hub (subscribers and
their place in the seq stream) and the last snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

from geminid.daemon import __version__
from geminid.daemon.checkpoint import CheckpointStore, encode_record
from geminid.daemon.config import Config
from geminid.daemon.events import EventHub, EventSink
from geminid.daemon.metrics import Metrics
from geminid.daemon.service import OpenResult, Subscription
from geminid.daemon.session import SessionActor
from geminid.daemon.session.record import SessionRecord, fingerprint
from geminid.daemon.states import LocalReason, State
from geminid.daemon.supervisor import RestartPolicy, supervise
from geminid.daemon.upstream import Dial
from geminid.protocol import live
from geminid.protocol.acks import SendAck
from geminid.protocol.constants import valid_session_name
from geminid.protocol.errors import (
    BufferFull,
    LiveMessageError,
    SetupMismatch,
    ShuttingDown,
    UnknownSession,
)
from geminid.protocol.models import setup_warnings
from geminid.protocol.notifications import EndReason, SessionEnded

log = structlog.get_logger("geminid.registry")
#: Sessions restored at once at start-up: enough to fill the store's group commits, few enough
#: that a state directory of thousands does not open thousands of tasks (and dials) in one go.
RESTORE_CONCURRENCY = 32


@attrs.define
class _Slot:
    name: str
    setup: dict[str, Any]
    fingerprint: str
    hub: EventHub
    record: dict[str, Any] | None
    restored: bool
    actor: SessionActor | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


class SessionRegistry:
    """Implements :class:`geminid.daemon.service.SessionService`."""

    def __init__(
        self,
        config: Config,
        store: CheckpointStore,
        dial: Dial,
        metrics: Metrics,
        *,
        upstream_kind: str,
        restart_policy: RestartPolicy | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = config
        self.store = store
        self.dial = dial
        self.metrics = metrics
        self.upstream_kind = upstream_kind
        self.restart_policy = restart_policy or RestartPolicy()
        #: Wall clock for the sessions (handle ages, expiry); a test may pass its own.
        self.wall = wall
        self.started_at = wall()
        self._started_mono = trio.current_time()
        self._slots: dict[str, _Slot] = {}
        self._nursery: trio.Nursery | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle --

    def reconfigure(self, cfg: Config) -> None:
        """A reloaded configuration (SIGHUP): sessions started from now on use it; running
        actors keep the one they were built with."""
        self.cfg = cfg

    async def run(
        self, records: dict[str, dict[str, Any]], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Restore checkpointed sessions, report ready, then serve until cancelled.

        Readiness does not wait for any session to reach Gemini: a dead upstream must not hold
        the daemon's readiness hostage. It waits only until every restored session has its
        actor running (its seq reservation durable), so that clients can attach at once.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Concurrently (bounded): each restore waits for its own durable seq reservation, and
            # the store group-commits the reservations that arrive together, so 50 sessions cost
            # a few fsync batches instead of 50 in a row (743 -> ~390 ms to READY=1 measured).
            limiter = trio.CapacityLimiter(RESTORE_CONCURRENCY)
            async with trio.open_nursery() as restoring:
                for name, record in sorted(records.items()):
                    restoring.start_soon(self._restore_bounded, limiter, name, record)
            task_status.started()
            nursery.start_soon(self._sweeper)
            await trio.sleep_forever()

    async def _restore_bounded(self, limiter: trio.CapacityLimiter, name: str, record: dict[str, Any]) -> None:
        async with limiter:
            await self._restore(name, record)

    async def _restore(self, name: str, record: dict[str, Any]) -> None:
        problem = unusable_record(record, self.cfg, name=name)
        if problem is not None:
            # Checksum-valid but not restorable (a bug, a version skew, a hand edit): drop this
            # session alone. Starting it would crash its actor on every restart, escalate, and
            # take the daemon and every other session down again at each start: a crash loop.
            log.error("checkpoint.unusable", session=name, error=problem)
            await self._delete_record(name)
            return
        setup = record["setup"]
        ttl = self.cfg.session.handle_ttl
        last_alive = float(record.get("last_alive_at") or 0.0)
        if self.wall() - last_alive > ttl:
            log.info("session.expired", session=name, idle_s=round(self.wall() - last_alive))
            await self._delete_record(name)
            return
        slot = self._new_slot(name, setup, record, restored=True)
        await self._start(slot)
        log.info("session.restored", session=name, pending=len(record.get("pending", [])))

    async def _delete_record(self, name: str) -> None:
        gen = self.store.mark_deleted(name)
        await self.store.wait_durable(name, gen)

    def _new_slot(self, name: str, setup: dict[str, Any], record: dict[str, Any] | None, *, restored: bool) -> _Slot:
        hub = EventHub(name, ring_size=self.cfg.session.event_ring)
        slot = _Slot(name, setup, fingerprint(setup), hub, record, restored)
        self._slots[name] = slot
        return slot

    async def _start(self, slot: _Slot) -> None:
        assert self._nursery is not None
        slot.done = trio.Event()
        await self._nursery.start(self._supervised, slot)

    async def _supervised(self, slot: _Slot, *, task_status: trio.TaskStatus[None]) -> None:
        async def run_actor(*, task_status: trio.TaskStatus[None]) -> None:
            actor = SessionActor(
                slot.name,
                slot.setup,
                config=self.cfg,
                store=self.store,
                hub=slot.hub,
                dial=self.dial,
                metrics=self.metrics,
                record=slot.record,
                wall=self.wall,
            )
            slot.actor = actor
            try:
                await actor.run(task_status=task_status)
            except Exception:
                self.metrics.crashes += 1
                slot.record = actor.last_snapshot or slot.record
                raise

        try:
            await supervise(f"session:{slot.name}", run_actor, self.restart_policy, task_status=task_status)
        finally:
            slot.done.set()
            if slot.actor is not None and slot.actor.state is State.CLOSED and self._slots.get(slot.name) is slot:
                del self._slots[slot.name]

    async def shutdown(self, grace: float) -> None:
        """Graceful drain: every session closes upstream with 1000 and flushes its checkpoint
        (handles stay valid for the restarted daemon). Bounded by ``grace`` seconds."""
        self._stopping = True
        with trio.move_on_after(grace) as scope:
            async with trio.open_nursery() as nursery:
                for slot in list(self._slots.values()):
                    if slot.actor is not None and not slot.actor.state.terminal:
                        nursery.start_soon(slot.actor.stop)
        if scope.cancelled_caught:
            log.warning("daemon.drain_timeout", grace_s=grace)

    async def _sweeper(self) -> None:
        """Remove failed sessions whose handle would have expired anyway, and their records."""
        interval = max(1.0, min(60.0, self.cfg.session.handle_ttl / 4))
        while True:
            await trio.sleep(interval)
            now = self.wall()
            for slot in list(self._slots.values()):
                actor = slot.actor
                if actor is None or actor.state is not State.FAILED:
                    continue
                if now - actor.last_alive_at > self.cfg.session.handle_ttl:
                    log.info("session.swept", session=slot.name)
                    del self._slots[slot.name]
                    await self._delete_record(slot.name)

    # ------------------------------------------------------------------ SessionService --

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None or slot.actor is None:
            raise UnknownSession(f"no session named {name!r}", data={"session": name})
        return slot

    def actor(self, name: str) -> SessionActor:
        """The running actor of session ``name`` (raises UnknownSession). For ops and tests:
        clients go through the SessionService methods."""
        actor = self._slot(name).actor
        assert actor is not None
        return actor

    def hub(self, name: str) -> EventHub:
        """The event hub of session ``name`` (raises UnknownSession)."""
        return self._slot(name).hub

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def names(self) -> list[str]:
        """The sessions the registry holds (running, failed, or being restarted)."""
        return sorted(self._slots)

    async def open(self, name: str, setup: dict[str, Any]) -> OpenResult:
        if self._stopping:
            raise ShuttingDown("the daemon is shutting down")
        if not valid_session_name(name):
            raise LiveMessageError(
                "session names are 1-64 characters of A-Z a-z 0-9 . _ - and do not start with '.'",
                path="session",
            )
        if "sessionResumption" in setup or "session_resumption" in setup:
            raise LiveMessageError(
                "sessionResumption is owned by the daemon; leave it out of the setup",
                path="setup.sessionResumption",
            )
        _, canonical = live.validate_client_message({"setup": setup})
        body = canonical["setup"]
        fp = fingerprint(body)
        slot = self._slots.get(name)
        if slot is not None:
            if slot.fingerprint != fp:
                raise SetupMismatch(
                    f"session {name!r} is open with a different setup; close it first or use another name",
                    data={"session": name, "fingerprint": slot.fingerprint},
                )
            actor = slot.actor
            if actor is not None and actor.state is State.FAILED and slot.done.is_set():
                slot.record = actor.snapshot()
                slot.restored = False
                await self._start(slot)
            if actor is not None and actor.state is not State.CLOSED:
                actor.touch()
                return OpenResult(
                    name, self.actor(name).state.value, False, slot.restored, slot.hub.last_seq, setup_warnings(body)
                )
        slot = self._new_slot(name, body, None, restored=False)
        await self._start(slot)
        log.info("session.opened", session=name, model=body.get("model"), fingerprint=fp)
        warnings = setup_warnings(body)
        for warning in warnings:
            log.warning("session.setup_warning", session=name, warning=warning)
        return OpenResult(name, self.actor(name).state.value, True, False, slot.hub.last_seq, warnings)

    async def send(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> SendAck:
        outcome = self.send_now(name, message, msg_id)
        return outcome if isinstance(outcome, SendAck) else await outcome

    def send_now(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> SendAck | Awaitable[SendAck]:
        if self._stopping:
            raise ShuttingDown("the daemon is shutting down")
        return self.actor(name).submit_now(message, msg_id)


    def attach(self, name: str, sink: EventSink, since: int | None) -> Subscription:
        slot = self._slot(name)
        gap, backlog = slot.hub.subscribe(sink, since)
        self.actor(name).touch()
        return Subscription(name, gap, backlog, slot.hub.last_seq)

    def detach(self, name: str, sink: EventSink) -> None:
        slot = self._slots.get(name)
        if slot is not None:
            slot.hub.unsubscribe(sink)

    async def close(self, name: str) -> dict[str, Any]:
        slot = self._slot(name)
        actor = slot.actor
        assert actor is not None
        if actor.state.terminal and slot.done.is_set():
            # A failed session: nothing upstream to close; forget it and its checkpoint.
            self._slots.pop(name, None)
            await self._delete_record(name)
            slot.hub.notify(SessionEnded(EndReason.CLOSED, LocalReason.CLOSED.value))
        else:
            await actor.close()
        return {"session": name, "status": "closed", "last_seq": slot.hub.last_seq}

    def list(self) -> list[dict[str, Any]]:
        return [s.actor.summary() for s in sorted(self._slots.values(), key=lambda s: s.name) if s.actor]

    def status(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        for slot in self._slots.values():
            if slot.actor is not None:
                by_state[slot.actor.state.value] = by_state.get(slot.actor.state.value, 0) + 1
        return {
            "version": __version__,
            "protocol": 1,
            "uptime_s": round(trio.current_time() - self._started_mono, 3),
            "started_at": self.started_at,
            "upstream": self.upstream_kind,
            "endpoint": self.dial.endpoint.host,
            "sessions": len(self._slots),
            "sessions_by_state": by_state,
            "metrics": self.metrics.as_dict(),
            "checkpoint": _stats(self.store),
        }

    def status_line(self) -> str:
        """One line for sd_notify STATUS=, e.g. '3 sessions: 2 live, 1 backoff (1011 ..., retry in 4 s)'."""
        parts: dict[str, int] = {}
        worst = None
        for slot in self._slots.values():
            actor = slot.actor
            if actor is None:
                continue
            parts[actor.state.value] = parts.get(actor.state.value, 0) + 1
            if actor.state in (State.BACKOFF, State.FAILED) and worst is None:
                worst = actor.status_reason
        n = sum(parts.values())
        body = ", ".join(f"{v} {k}" for k, v in sorted(parts.items()))
        line = f"{n} session{'s' if n != 1 else ''}" + (f": {body}" if body else "")
        if worst:
            line += f" ({worst})"
        return line[:200]


async def start_core(
    nursery: trio.Nursery,
    cfg: Config,
    dial: Dial,
    metrics: Metrics,
    *,
    upstream_kind: str,
    store: CheckpointStore | None = None,
    store_nursery: trio.Nursery | None = None,
    records: dict[str, dict[str, Any]] | None = None,
    wall: Callable[[], float] = time.time,
    restart_policy: RestartPolicy | None = None,
) -> SessionRegistry:
    """The ONE place that wires the session core, for the daemon and every test harness.

    Starts the checkpoint store in ``store_nursery`` (default ``nursery``; the daemon keeps it
    running past the sessions, to flush), restores ``records`` (default: what the store loads
    from ``cfg.state_dir``), and starts the registry in ``nursery``. Returns once every restored
    session's actor runs. The seams are parameters: a test passes its own store (e.g. one whose
    writes run inline), dialer, wall clock or restart policy.
    """
    store = store or CheckpointStore(cfg.state_dir)
    if records is None:
        records = (await trio.to_thread.run_sync(store.load_all)).records
    await (store_nursery or nursery).start(store.run)
    registry = SessionRegistry(
        cfg, store, dial, metrics, upstream_kind=upstream_kind, restart_policy=restart_policy, wall=wall
    )
    await nursery.start(registry.run, records)
    return registry


def unusable_record(record: dict[str, Any], cfg: Config | None = None, *, name: str = "check") -> str | None:
    """Why a checkpoint record cannot be restored, or None if it can.

    :meth:`SessionRecord.from_dict` is exactly what the actor restores from, so anything that
    would raise there (a wrong type, a pending message that no longer validates) is found here,
    before the session is started; the pending messages must also fit the replay buffer, and the
    record must encode again as a checkpoint.
    """
    try:
        parsed = SessionRecord.from_dict(record, name=name)
        limit = (cfg or Config()).session.replay_buffer_bytes
        held = parsed.pending_bytes()
        if held > limit:
            raise BufferFull(f"the pending messages take {held} bytes, more than the replay buffer's {limit}")
        encode_record(name, parsed.to_dict())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def _stats(store: CheckpointStore) -> dict[str, Any]:
    stats = getattr(store, "stats", None)
    if stats is None:
        return {}
    if isinstance(stats, dict):
        return dict(stats)
    if attrs.has(type(stats)):
        return attrs.asdict(stats)
    return dict(vars(stats)) if hasattr(stats, "__dict__") else {}
