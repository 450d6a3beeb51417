"""The one writer of a live link: what the replay buffer has ready goes upstream, in order, in
batches, from the writer task or, when that task is parked, from the task that accepted it.

Why a caller may write: a message accepted while the writer task waits for work would otherwise
go out only after one more pass of trio's scheduler (the accepting task sets the wake event, the
writer runs in the next batch). On a loopback relay that hop is a measurable share of the added
latency (README, "Performance"). The accepting task writes instead when it is the last message
of its read (:meth:`UpstreamWriter.write_now`): a burst of lines from one socket read still goes
out as one batch, and the writer task, woken anyway, finds nothing left and parks again.

Ordering holds either way: entries are taken from the buffer in order, and each batch is written
under the WebSocket's stream lock (FIFO), so a batch taken later is written later.
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
        #: The writer task waits for work (woken or not, it has not run since): another task may
        #: take what is ready and write it (:meth:`write_now`).
        self.parked = False

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

    async def write_now(self) -> None:
        """From the accepting task: write what is ready if the writer task is parked (else it
        is running and writes it next). A transport failure here is the writer's to report: it
        ends the connection on its next write or the reader on its next receive, so this one
        only leaves the entries sent-marked, as a failed batch of the writer task would."""
        if not self.parked:
            return
        batch, _ = self._take()
        if not batch:
            return
        try:
            # Shielded: the caller is a client's task, which its client's disconnect may cancel,
            # and a write cut mid-frame would break the WebSocket stream for the session. A
            # write that blocks is bounded by the connection: its end aborts the stream.
            with trio.CancelScope(shield=True):
                await self._write(batch)
        except Exception:  # noqa: BLE001 - the connection's tasks see the same failure
            self._r._wake_writer()

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
                self.parked = True
                try:
                    await r._wake.wait()
                finally:
                    self.parked = False
                continue
            await self._write(batch)
