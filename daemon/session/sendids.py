"""Client message ids of one session: the de-duplication table of idempotent sends.

A ``session.send`` may carry ``params.id``, a string the client chooses (the bundled clients use a
random UUID per ``send()`` call and reuse it when they retry across a reconnect). The daemon keeps
the last :data:`WINDOW` ids of each session with the seq each was accepted as; a send whose id is
in the table is not accepted again (not queued, not sent upstream) and is answered with the
original seq (``duplicate: true``), once the original is acknowledged.

Durably: the table is part of the checkpoint record (``ids``), written in the same snapshot as the
messages and the handle. Because a snapshot is taken whole, on the loop, an id is in a checkpoint
exactly when its message is too (pending, or covered by that checkpoint's handle): a restarted
daemon that finds the id answers the repeat, and one that does not find it resumes a conversation
that never got the message (the handle it restores predates the send), so accepting the repeat
delivers it once. See :mod:`geminid.daemon.session.durability` for the whole argument.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from geminid.protocol.acks import MAX_ID_LENGTH as MAX_ID_LENGTH

#: How many ids per session are remembered (the window a retry must fall in: the last 256 sends,
#: whatever their kind). A client retries within seconds of a drop; 256 sends is far more.
WINDOW = 256


class SentIds:
    """Bounded map id -> seq, oldest first (see the module docstring)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._seqs: collections.OrderedDict[str, int] = collections.OrderedDict()
        #: seqs whose checkpoint write failed (acknowledged ``durable: false``), among the window.
        self.not_durable: set[int] = set()

    def __len__(self) -> int:
        return len(self._seqs)

    def seq_of(self, msg_id: str) -> int | None:
        return self._seqs.get(msg_id)

    def add(self, msg_id: str, seq: int) -> None:
        self._seqs[msg_id] = seq
        while len(self._seqs) > self.window:
            _, old = self._seqs.popitem(last=False)
            self.not_durable.discard(old)

    def forget(self, msg_id: str) -> None:
        """The message was refused after all (nothing was queued): a retry may be accepted."""
        self._seqs.pop(msg_id, None)

    def items(self) -> list[tuple[str, int]]:
        return list(self._seqs.items())

    def restore(self, items: Iterable[tuple[str, int]]) -> None:
        for msg_id, seq in items:
            self.add(msg_id, seq)
