"""The one writer of a live link: what the replay buffer has ready goes upstream, in order, in
batches (one ``send_all`` per batch: PERF_PROFILE.md), each entry only once its seq reservation
is durable.

(Tried on 2026-12-06 and taken out: writing from the task that accepted the message when this
one is parked. It saved a scheduler pass but no measurable latency, and a shielded write from a
client's task into a link being closed for a rotation is a hazard; README, "Performance".)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from geminid.daemon.session.core import interrupts
from geminid.daemon.session.replay import Entry
from geminid.daemon.upstream import UpstreamLink

if TYPE_CHECKING:
    from geminid.daemon.session.relay import Relay

#: Messages queued but not yet written to a live link, past which acks wait (backpressure).
UNSENT_HIGH = 256
#: At most this many frames per upstream write (~40 KB of audio chunks): a long backlog still
#: yields to the reader between writes.
WRITE_BATCH_FRAMES = 32
#: How often a writer held by a seq reservation in progress looks again (only on a slow disk:
#: reservations are renewed half a block ahead of need).
RESERVATION_POLL = 0.05


class UpstreamWriter:
    """The writer of one connection (the relay starts :meth:`run` in its nursery)."""

    def __init__(self, relay: Relay, link: UpstreamLink) -> None:
        self._r = relay
        self._link = link

    def _take(self) -> tuple[list[Entry], bool]:
        """Every entry ready now, in order, up to a batch; and whether one is held only by a seq
        reservation in progress (its ack may yet be refused, and a refused message must not
        have been sent)."""
        r = self._r
        batch: list[Entry] = []
        while len(batch) < WRITE_BATCH_FRAMES:
            # (held while a backlog reply is due: ReplayBuffer.next_to_write)
            entry = r.buffer.next_to_write(client_turn=r.tools.blocking_pending)
            if (
                entry is None
                or entry.gen < 0
                or r.activity.holds(entry, draining=r.core.draining())
            ):
                return batch, False
            if entry.seq > r.durability.seq_durable:
                return batch, True
            r.buffer.mark_sent()
            batch.append(entry)
            if r.tools.pending and (entry.elicits or interrupts(entry.message)):
                # Accepted before the call came (held, or queued): the server cancels the call on
                # reading it, so a response to it is now refused locally.
                r.tools.interrupted()
        return batch, False

    async def _write(self, batch: list[Entry]) -> None:
        r = self._r
        if r.buffer.unsent <= UNSENT_HIGH // 2:
            r._drained.set()
        await self._link.send_many([entry.wire for entry in batch])
        now = trio.current_time()
        asked = [r.activity.written(entry, now) for entry in batch]
        if any(asked):
            r._poke_timers()

    async def run(self) -> None:
        r = self._r
        while True:
            # Every entry ready now goes out in one write (one syscall per batch, not per
            # frame: PERF_PROFILE.md); the first one not ready ends the batch.
            batch, unreserved = self._take()
            if not batch:
                if unreserved:
                    r._maybe_reserve()
                    # (polled too: a refused entry is discarded without a round ending)
                    with trio.move_on_after(RESERVATION_POLL):
                        await r.durability.reservation_round.wait()
                    continue
                r._wake = trio.Event()
                await r._wake.wait()
                continue
            await self._write(batch)
