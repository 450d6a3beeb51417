"""Session events and the per-session hub that fans them out.

Every event a session emits (a Gemini server message, a status transition, a lost tool call...)
gets the next per-session event ``seq`` and is encoded **once** into its JSON-RPC notification
line; every subscriber gets the same bytes. That keeps fan-out cheap (no per-client encoding)
and makes "each client gets every event, in order" a property of one ordered ring.

The hub outlives restarts of the session actor (a crash restarts the actor from its checkpoint,
but attached clients keep their subscription and their place in the seq stream).
"""

from __future__ import annotations

import collections
import json
from typing import Any, Protocol

import attrs

from geminid.protocol.notifications import Notification


@attrs.frozen(slots=True)
class Event:
    """One notification, already encoded. ``method`` is e.g. ``session.message``."""

    seq: int
    method: str
    params: dict[str, Any]
    line: bytes

    @classmethod
    def build(cls, seq: int, method: str, params: dict[str, Any]) -> Event:
        body = {"jsonrpc": "2.0", "method": method, "params": params}
        try:
            line = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # A lone surrogate (legal in JSON text, not in UTF-8): escape it instead.
            line = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
        return cls(seq, method, params, line + b"\n")


class EventSink(Protocol):
    """Where a hub delivers events. ``deliver`` must never block: the sink owns its lag policy."""

    def deliver(self, event: Event) -> None: ...


@attrs.frozen
class Gap:
    """Events ``first..last`` (inclusive) are not available any more."""

    first: int
    last: int


class EventHub:
    """Ordered, bounded event ring plus the set of subscribers of one session."""

    def __init__(self, session: str, *, ring_size: int, first_seq: int = 1) -> None:
        self.session = session
        self._ring: collections.deque[Event] = collections.deque(maxlen=ring_size)
        self._sinks: dict[int, EventSink] = {}
        #: seq of the next event; restored from the checkpoint's reservation after a restart.
        self.next_seq = first_seq

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def subscriber_count(self) -> int:
        return len(self._sinks)

    def notify(self, note: Notification) -> Event:
        """Publish one catalogued notification (:mod:`geminid.protocol.notifications`)."""
        return self.publish(note.METHOD, note.to_params())

    def publish(self, method: str, params: dict[str, Any]) -> Event:
        seq = self.next_seq
        self.next_seq += 1
        event = Event.build(seq, method, {"session": self.session, "seq": seq, **params})
        self._ring.append(event)
        for sink in tuple(self._sinks.values()):
            sink.deliver(event)
        return event

    def subscribe(self, sink: EventSink, since: int | None = None) -> tuple[Gap | None, list[Event]]:
        """Attach ``sink``. With ``since``, return the retained events after it, and the gap
        (if any) between ``since`` and the oldest retained one. Nothing is delivered here: the
        caller queues the backlog first, so that live events cannot overtake it.
        """
        self._sinks[id(sink)] = sink
        if since is None:
            return None, []
        backlog = [e for e in self._ring if e.seq > since]
        oldest = backlog[0].seq if backlog else self.next_seq
        gap = Gap(since + 1, oldest - 1) if oldest - 1 > since else None
        return gap, backlog

    def unsubscribe(self, sink: EventSink) -> None:
        self._sinks.pop(id(sink), None)
