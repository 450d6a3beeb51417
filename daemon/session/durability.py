"""Durability of one session: ack waiters, the commit, and the seq/event reservations.

The only session code that calls :class:`~geminid.daemon.checkpoint.CheckpointStore`. The
promises resting on it:

- **A turn is sent at once and acknowledged once durable.** A turn, tool response or context
  update goes to the writer (the upstream) as soon as it is accepted; its checkpoint is written
  in parallel (group-committed with whatever else is being written), and the client's ack waits
  for that write. So a turn costs max(disk, network), not their sum.
- **An acknowledged message survives kill -9 and is never duplicated**, even though it may reach
  the server before it is on disk. Why a crash in that window is safe: a checkpoint is one
  snapshot of the session taken on the loop when it is written, so it holds a message (pending, or
  covered by the handle it holds) together with the message's client id (``params.id``, see
  :mod:`geminid.daemon.session.sendids`) or neither. Take the last checkpoint written before the
  kill, C. Every message accepted after C was sent after C was taken, so C's resumption handle,
  received before C, cannot cover it: the restarted daemon resumes a conversation that never got
  it. The message is in neither C's pending list nor C's id table, so a retry with the same id is
  accepted and delivered once into that conversation. A message accepted before C is in C's id
  table: a retry is answered with its original seq and not sent; the message itself is replayed
  from C's pending list unless C's handle covers it (then the conversation already has it). Its
  ack was never sent unless C (or a later write) held it, so no acknowledged message is missing
  from a checkpoint.
- **A message whose checkpoint write failed is still delivered, exactly once**, and acknowledged
  with ``durable: false`` (:class:`~geminid.protocol.acks.SendAck`): it is in the send queue
  already (perhaps sent), so refusing it would invite a resend, a duplicate. It would not survive
  a kill -9 until a later write succeeds.
- Seqs and event seqs are reserved in blocks, durably, *before* they are handed out, so that a
  restart after kill -9 never reuses a seq a client has seen (it continues after the block).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import attrs
import trio

from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.errors import CheckpointWriteError
from geminid.protocol.errors import NotDurable, SessionFailed

#: Seqs are reserved in blocks of this many (see the module docstring).
SEQ_BLOCK = 4096


class Deferred:
    """An awaitable that creates its coroutine only when awaited.

    ``send_now`` hands one back for durable sends; if the client vanishes before the reply task
    starts, nothing was created, so nothing is left "never awaited".
    """

    __slots__ = ("_fn", "_args")

    def __init__(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._fn = fn
        self._args = args

    def __await__(self) -> Generator[Any, None, Any]:
        return self._fn(*self._args).__await__()


@attrs.define
class Waiter:
    """The ack of one durable submit: set once the entry is on disk (or failed)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    error: Exception | None = None


class _Log(Protocol):
    def error(self, event: str, **kw: Any) -> Any: ...


class Durability:
    """Checkpoint writes of one session, and what waits on them."""

    def __init__(self, name: str, store: CheckpointStore, snapshot: Callable[[], dict[str, Any]], log: _Log) -> None:
        self.name = name
        self.store = store
        self.snapshot = snapshot
        self.log = log
        self.waiters: dict[int, Waiter] = {}
        #: Reserved (asked for) and durable (on disk) upper bounds of seqs and event seqs.
        self.seq_reserved = 0
        self.seq_durable = 0
        self.event_reserved = 0
        self.event_durable = 0
        self._reserving = False
        self._reserved_event = trio.Event()
        #: Why the last reservation attempt failed (None: it succeeded, or none failed yet).
        self._reservation_error: CheckpointWriteError | None = None
        self._nursery: trio.Nursery | None = None
        self._lazy = trio.Event()

    def start(self, nursery: trio.Nursery) -> None:
        """Commits and reservations run as tasks of ``nursery`` (the actor's, while it runs)."""
        self._nursery = nursery

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("Durability.start() was not called: the session is not running")
        self._nursery.start_soon(fn, *args)

    def restored(self, seq_reserved: int, event_reserved: int) -> None:
        """After a restore, everything up to the saved reservations counts as handed out."""
        self.seq_reserved = self.seq_durable = seq_reserved
        self.event_reserved = self.event_durable = event_reserved

    # -- checkpoint writes -----------------------------------------------------------------

    def persist(self) -> int:
        """Schedule a checkpoint of the current snapshot; returns its generation."""
        return self.store.mark_dirty(self.name, self.snapshot)

    def persist_lazily(self) -> None:
        """Checkpoint soon, not now (see :meth:`lazy_checkpoints`)."""
        self._lazy.set()

    async def lazy_checkpoints(self, delay: float) -> None:
        """Write handle-only changes at most every ``delay`` seconds (a task of the actor).

        A newer handle only ever makes a checkpoint *shorter* (it trims the replay buffer), and
        an older checkpoint is always consistent on its own: its handle plus the messages that
        handle does not cover. Restoring it after a crash resumes a little earlier and replays a
        little more, losing nothing. So a handle, which the server sends after every turn, need
        not cost an fsync on the relay path; turns and tool responses still do, before their ack.
        """
        while True:
            await self._lazy.wait()
            await trio.sleep(delay)
            self._lazy = trio.Event()
            self.persist()

    def delete(self) -> int:
        return self.store.mark_deleted(self.name)

    async def wait_quietly(self, gen: int) -> None:
        """Wait for ``gen``; a write failure is logged, not raised (used on the way out)."""
        try:
            await self.store.wait_durable(self.name, gen)
        except CheckpointWriteError as exc:
            self.log.error("checkpoint.failed", error=str(exc))

    # -- acks ------------------------------------------------------------------------------

    def commit(self, seq: int) -> Waiter:
        """Checkpoint the message ``seq`` just accepted (and already queued for the writer); its
        waiter is set once that is on disk, or with :class:`NotDurable` if the write failed."""
        waiter = self.waiters[seq] = Waiter()
        gen = self.persist()
        self._spawn(self._commit, seq, gen, waiter)
        return waiter

    async def _commit(self, seq: int, gen: int, waiter: Waiter) -> None:
        try:
            await self.store.wait_durable(self.name, gen)
        except CheckpointWriteError as exc:
            # Not durable, but queued (perhaps sent) all the same: acknowledged ``durable: false``.
            waiter.error = NotDurable(
                f"message not durable: the checkpoint could not be written ({exc.message})",
                data={"seq": seq},
            )
        waiter.done.set()

    async def acknowledged(self, seq: int, waiter: Waiter | None) -> bool:
        """Wait for ``seq``'s commit (if it has one). True if durable; False if the write failed;
        raises if the session stopped first."""
        if waiter is None:
            return True
        await waiter.done.wait()
        self.waiters.pop(seq, None)
        if isinstance(waiter.error, NotDurable):
            return False
        if waiter.error is not None:
            raise waiter.error
        return True

    def fail_waiters(self) -> None:
        """The actor stopped: release every ack still waiting, with an error."""
        for waiter in self.waiters.values():
            if not waiter.done.is_set():
                waiter.error = SessionFailed(f"session {self.name!r} stopped before the message was acknowledged")
                waiter.done.set()

    # -- reservations ----------------------------------------------------------------------

    def maybe_reserve(self, next_seq: int, next_event: int, *, force: bool = False) -> None:
        """Keep durable reservations at least half a block ahead of what is handed out."""
        low_seq = self.seq_reserved - next_seq < SEQ_BLOCK // 2
        low_event = self.event_reserved - next_event < SEQ_BLOCK // 2
        if not (low_seq or low_event or force) or self._reserving:
            return
        self.seq_reserved = next_seq + SEQ_BLOCK
        self.event_reserved = next_event + SEQ_BLOCK
        self._reserving = True
        gen = self.persist()
        self._spawn(self._reservation_done, gen, self.seq_reserved, self.event_reserved)

    async def _reservation_done(self, gen: int, seq: int, event: int) -> None:
        try:
            await self.store.wait_durable(self.name, gen)
        except CheckpointWriteError as exc:
            self._reservation_error = exc
            self.log.error("checkpoint.failed", error=str(exc), what="seq reservation")
        else:
            self._reservation_error = None
            self.seq_durable = max(self.seq_durable, seq)
            self.event_durable = max(self.event_durable, event)
        finally:
            self._reserving = False
            self._reserved_event.set()
            self._reserved_event = trio.Event()

    @property
    def reservation_round(self) -> trio.Event:
        """Set when the seq reservation in progress (or the next one) has finished, either way."""
        return self._reserved_event

    def covers(self, last_seq: int, next_event: int) -> bool:
        """Every seq up to ``last_seq`` and every event before ``next_event`` is reserved on disk."""
        return last_seq <= self.seq_durable and next_event <= self.event_durable

    async def await_reservation(
        self, next_seq: Callable[[], int], next_event: Callable[[], int], *, refuse_seq: int | None = None
    ) -> None:
        """Wait until what was handed out so far is covered by a durable reservation.

        Inside the daemon (server events, start-up) it waits for as long as the disk takes:
        there is nobody to refuse. For a client's ack (``refuse_seq``: the seq being
        acknowledged) a failing disk is answered :class:`NotDurable` at once instead, while the
        store is unhealthy or as soon as the reservation's write fails: every retry would fail
        too, and the client would wait forever on an ack (with ``checkpoint.failed`` every second).
        """
        while not self.covers(next_seq() - 1, next_event()):
            if refuse_seq is not None and not self.store.healthy:
                raise self._refused(refuse_seq, self._reservation_error)
            self.maybe_reserve(next_seq(), next_event(), force=not self._reserving)
            await self._reserved_event.wait()
            if refuse_seq is not None and self._reservation_error is not None:
                raise self._refused(refuse_seq, self._reservation_error)

    @staticmethod
    def _refused(seq: int, exc: CheckpointWriteError | None) -> NotDurable:
        why = f" ({exc.message})" if exc is not None else ""
        return NotDurable(
            f"message not acknowledged: its seq reservation could not be written{why}",
            data={"seq": seq, "reason": "state directory not writable"},
        )
