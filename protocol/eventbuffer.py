"""A client's bounded buffer of daemon notifications (pure: no I/O, no event loop).

Why a bound, and why drop *events* rather than stop reading: a client's socket reader also
carries the replies to its calls, so blocking it on a slow consumer of ``events()`` would hang
every call; an unbounded queue would let a stalled consumer eat the process's memory. So past
``max_events`` buffered events the buffer drops the new ones, remembers per session the range
it dropped, and once the consumer has drained it to half, appends one
``session.lagged {session, first, last, missed}`` per session (``missed``: how many events it
dropped), exactly like the daemon does for a slow client. The consumer can fetch the range again with ``session.attach {since}``.

It also keeps, per session, the last event seq received: the ``since`` of a re-attach after a
reconnect, and the filter that drops a duplicate the daemon replays (at-least-once delivery).
This is the logic of :mod:`geminid.protocol.client` (trio), without trio, so the asyncio client
(:mod:`geminid.protocol.aio_client`) has the same behaviour.
"""

from __future__ import annotations

import collections
from typing import Any

Item = tuple[str, dict[str, Any]]


class EventBuffer:
    def __init__(self, max_events: int = 10_000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self._items: collections.deque[Item] = collections.deque()
        #: session -> [first, last, count] dropped while the buffer was full.
        self._lag: dict[str, list[int]] = {}
        #: session -> the last event seq received.
        self.last_seq: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def push(self, method: str, params: Any) -> bool:
        """Take one notification; True if it was queued (False: a duplicate, or dropped)."""
        if not isinstance(params, dict):
            params = {"params": params}
        session = params.get("session")
        seq = params.get("seq")
        if isinstance(session, str):
            if method == "session.lagged":
                last = params.get("last")
                if isinstance(last, int) and not isinstance(last, bool):
                    self.last_seq[session] = max(self.last_seq.get(session, 0), last)
            elif isinstance(seq, int) and not isinstance(seq, bool):
                known = self.last_seq.get(session)
                if known is not None and seq <= known:
                    return False
                self.last_seq[session] = seq
                lag = self._lag.get(session)
                if lag is not None:
                    lag[1] = seq
                    lag[2] += 1
                    return False
                if len(self._items) >= self.max_events:
                    self._lag[session] = [seq, seq, 1]
                    return False
        self._items.append((method, params))
        return True

    def pop(self) -> Item | None:
        """The oldest notification, or None when empty. Appends the lag notices once drained
        to half."""
        if not self._items:
            return None
        item = self._items.popleft()
        if self._lag and len(self._items) <= self.max_events // 2:
            for session, (first, last, missed) in self._lag.items():
                self._items.append(("session.lagged", {"session": session, "first": first, "last": last,
                                                       "missed": missed}))
            self._lag.clear()
        return item
