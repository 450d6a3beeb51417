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

from geminid.protocol.jsoncodec import dumps_fast
from geminid.protocol.notifications import Notification


@attrs.frozen(slots=True)
class Event:
    """One notification, already encoded. ``method`` is e.g. ``session.message``."""

    seq: int
    method: str
    params: dict[str, Any]
    line: bytes
    #: For a ``session.message`` of a reply: the seq of the client message it answers.
    #: In-process only (not in ``line``): a Live client uses it to skip a reply it already saw
    #: whole before a daemon restart (:mod:`geminid.daemon.live.connection`).
    answers: int | None = None

    @classmethod
    def build(cls, seq: int, method: str, params: dict[str, Any], answers: int | None = None) -> Event:
        body = {"jsonrpc": "2.0", "method": method, "params": params}
        # Encoded once per event for every subscriber; orjson when it can (a NaN from upstream
        # becomes null there, where the stdlib below writes the non-JSON ``NaN``).
        fast = dumps_fast(body, newline=True, nan_as_null=True)
        if fast is not None:
            return cls(seq, method, params, fast, answers)
        try:
            line = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # A lone surrogate (legal in JSON text, not in UTF-8): escape it instead.
            line = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
        return cls(seq, method, params, line + b"\n", answers)


class EventSink(Protocol):
    """Where a hub delivers events. ``deliver`` must never block: the sink owns its lag policy."""

    def deliver(self, event: Event) -> None: ...


@attrs.frozen
class Gap:
    """Events ``first..last`` (inclusive) are not available any more; ``missed`` of them were
    published (None: unknown, see :meth:`EventHub.restored`)."""

    first: int
    last: int
    missed: int | None = None


class EventHub:
    """Ordered, bounded event ring plus the set of subscribers of one session."""

    def __init__(self, session: str, *, ring_size: int, first_seq: int = 1) -> None:
        self.session = session
        self._ring: collections.deque[Event] = collections.deque(maxlen=ring_size)
        self._sinks: dict[int, EventSink] = {}
        #: seq of the next event; restored from the checkpoint's reservation after a restart.
        self.next_seq = first_seq
        #: Seqs a previous daemon reserved but (``_unused``) never published, or (``_unsure``)
        #: may have published after its last checkpoint write (it was killed): (first, last).
        self._unused: tuple[int, int] | None = None
        self._unsure: tuple[int, int] | None = None

    def restored(self, event_last: int, event_reserved: int, *, clean: bool) -> None:
        """A restart: the previous daemon had published events up to ``event_last`` when it wrote
        its last checkpoint, and reserved seqs up to ``event_reserved``. After a clean stop, the
        seqs in between were never used, and no gap report counts them. After a kill -9 they may
        have been used (events published after that write): a gap over them is reported with
        ``missed`` unknown."""
        if event_reserved > event_last:
            rest = (event_last + 1, event_reserved)
            self._unused, self._unsure = (rest, None) if clean else (None, rest)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def subscriber_count(self) -> int:
        return len(self._sinks)

    def notify(self, note: Notification, *, answers: int | None = None) -> Event:
        """Publish one catalogued notification (:mod:`geminid.protocol.notifications`)."""
        return self.publish(note.METHOD, note.to_params(), answers=answers)

    def publish(self, method: str, params: dict[str, Any], *, answers: int | None = None) -> Event:
        seq = self.next_seq
        self.next_seq += 1
        event = Event.build(seq, method, {"session": self.session, "seq": seq, **params}, answers)
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
        gap = self._gap(since + 1, oldest - 1) if oldest - 1 > since else None
        return gap, backlog

    def _gap(self, first: int, last: int) -> Gap | None:
        """The real gap in ``first..last``: without the seqs a previous daemon never used."""
        if self._unused is not None:
            lo, hi = self._unused
            before = (first, min(last, lo - 1)) if first < lo else None
            after = (max(first, hi + 1), last) if last > hi else None
            parts = [p for p in (before, after) if p is not None and p[0] <= p[1]]
            if not parts:
                return None
            return Gap(parts[0][0], parts[-1][1], sum(b - a + 1 for a, b in parts))
        if self._unsure is not None and first <= self._unsure[1] and last >= self._unsure[0]:
            return Gap(first, last, None)
        return Gap(first, last, last - first + 1)

    def unsubscribe(self, sink: EventSink) -> None:
        self._sinks.pop(id(sink), None)
