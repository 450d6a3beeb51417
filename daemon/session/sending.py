"""The send path of a session: accept a client message, queue it at once, acknowledge it.

:class:`Sender` is the acceptance half of :class:`~geminid.daemon.session.actor.SessionActor`
(the actor is a ``Sender``). A message is validated and queued by the core, released to the
writer at once (so a turn reaches the upstream without waiting for the disk), checkpointed in
parallel by :class:`~geminid.daemon.session.durability.Durability`, and acknowledged with a
:class:`~geminid.protocol.acks.SendAck` once durable (see durability.py for why sending before
durability still delivers every acknowledged message exactly once). A send with a client id
(``params.id``) is looked up in the session's id table first
(:mod:`~geminid.daemon.session.sendids`): a repeat is answered with the original seq.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from geminid.daemon.events import EventHub
from geminid.daemon.metrics import Metrics
from geminid.daemon.session.core import SessionCore
from geminid.daemon.session.durability import Deferred, Durability, Waiter
from geminid.daemon.session.replay import Entry, ReplayBuffer
from geminid.daemon.session.sendids import SentIds
from geminid.daemon.session.writer import UNSENT_HIGH
from geminid.daemon.states import State
from geminid.protocol.acks import SendAck
from geminid.protocol.errors import NotDurable, SessionFailed


class Sender:
    """The send path of the session actor (see the module docstring)."""

    # Owned by SessionActor; declared here for the type checker.
    name: str
    core: SessionCore
    buffer: ReplayBuffer
    durability: Durability
    hub: EventHub
    metrics: Metrics
    ids: SentIds
    next_seq: int
    log: Any
    _closing: str | None
    _drained: trio.Event

    if TYPE_CHECKING:
        @property
        def state(self) -> State: ...
        @property
        def status_reason(self) -> str | None: ...
        def _wake_writer(self) -> None: ...
        def _maybe_reserve(self, force: bool = False) -> None: ...

    async def submit(self, message: dict[str, Any], msg_id: str | None = None) -> SendAck:
        """Accept one client message. Returns its seq (a :class:`SendAck`) once acknowledged.

        Every message is queued for the upstream at once. Turns, tool responses and context
        updates are acknowledged once durable (group-committed with whatever else is being
        written; ``durable: false`` if the write failed, see :mod:`~geminid.daemon.session.
        durability`); audio and other realtime input on enqueue. The seq is assigned before the
        first await, so concurrent submits keep their call order. ``msg_id``: the client's id of
        an idempotent send (:mod:`~geminid.daemon.session.sendids`): a repeat gets the original's
        seq and is not sent again.
        """
        outcome = self.submit_now(message, msg_id)
        return outcome if isinstance(outcome, SendAck) else await outcome

    def submit_now(self, message: dict[str, Any], msg_id: str | None = None) -> SendAck | Awaitable[SendAck]:
        """Accept ``message`` synchronously: its ack when it is already acknowledged (audio and
        other realtime input, the relay's hot path: no task, no await), else an awaitable that
        yields the ack once it is durable. Errors are raised here, before anything is queued."""
        if msg_id is not None:
            original = self.ids.seq_of(msg_id)
            if original is not None:
                self.metrics.duplicate_sends += 1
                return Deferred(self._repeat, original)
        entry, waiter = self._accept(message)
        if msg_id is not None:
            self.ids.add(msg_id, entry.seq)  # before any await: in every snapshot with the entry
        seq = entry.seq
        if waiter is None and seq <= self.durability.seq_durable and not self._backlogged():
            return SendAck(seq)
        return Deferred(self._acknowledge, entry, waiter, msg_id)

    async def _repeat(self, seq: int) -> SendAck:
        """A send whose id was accepted before: answer the original's ack, once it has one."""
        durable = seq not in self.ids.not_durable
        waiter = self.durability.waiters.get(seq)
        if waiter is not None:
            await waiter.done.wait()
            if isinstance(waiter.error, NotDurable):
                durable = False
            elif waiter.error is not None:
                raise waiter.error
        return SendAck(seq, durable=durable, duplicate=True)

    def _backlogged(self) -> bool:
        """A client sends faster than the live link drains: slow its acks down (backpressure)
        instead of letting the buffer grow until it evicts audio that was never sent. While
        disconnected there is nothing to wait for; the byte bound and staleness apply."""
        return self.state.connected and self.buffer.unsent > UNSENT_HIGH

    def _accept(self, message: dict[str, Any]) -> tuple[Entry, Waiter | None]:
        if self.state.terminal or self._closing:
            raise SessionFailed(
                f"session {self.name!r} is {self.state.value}"
                + (f": {self.status_reason}" if self.status_reason else ""),
                data={"status": self.state.value},
            )
        seq = self.next_seq
        entry = self.core.accept(message, seq, trio.current_time())
        self.next_seq += 1
        entry.gen = 0  # sent at once: durability runs in parallel, the ack waits for it
        waiter = self.durability.commit(seq) if entry.kind.durable else None
        self._wake_writer()
        self._maybe_reserve()
        return entry, waiter

    async def _acknowledge(self, entry: Entry, waiter: Waiter | None, msg_id: str | None = None) -> SendAck:
        seq = entry.seq
        while self._backlogged():
            if self._drained.is_set():
                self._drained = trio.Event()  # one event shared by every waiting ack
            await self._drained.wait()
        durable = await self.durability.acknowledged(seq, waiter)
        if seq > self.durability.seq_durable:
            try:
                await self.durability.await_reservation(
                    lambda: self.next_seq, lambda: self.hub.next_seq, refuse_seq=seq
                )
            except NotDurable:
                if entry.kind.durable:
                    durable = False  # queued (perhaps sent) already: never invite a resend
                else:
                    self.buffer.discard_unsent(entry)  # not acknowledged: not sent either, if unsent
                    if msg_id is not None:
                        self.ids.forget(msg_id)
                    self.metrics.not_durable += 1
                    raise
        if not durable:
            self.ids.not_durable.add(seq)
            self.metrics.not_durable += 1
            self.log.warning("session.send_not_durable", seq=seq)
        return SendAck(seq, durable=durable)

