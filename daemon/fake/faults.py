"""Faults the fake upstream can inject, and the triggers that place them inside a connection.

A :class:`Fault` says *what* happens (drop the TCP connection, close with a code, stall, send a
goAway now, expire every handle, or nothing); a :class:`Trigger` says *when* in the life of one
connection (at the upgrade, when setup arrives, right after setupComplete, after the N-th client
message, after the N-th reply chunk, after a toolCall, after the N-th completed turn, or N seconds
after the upgrade). :class:`Planned` pairs them.

A fault fires in order with the frames: it is queued behind every frame the fake produced before
the trigger, so "close after the 2nd chunk" means the client sees exactly two chunks, then the
close frame (latency included). ``drop``/``stall`` with live actions (``FakeUpstream.drop_all``)
act at once instead.
"""

from __future__ import annotations

import attrs

KINDS = ("none", "drop", "close", "stall", "goaway", "expire_handles")
TRIGGERS = ("accept", "setup", "after_setup", "messages", "chunks", "tool_call", "turns", "seconds")


@attrs.frozen
class Fault:
    """What to do. Build with the class methods."""

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    code: int | None = None
    reason: str | None = None
    time_left: float | None = None
    duration: float | None = None
    rst: bool = False

    @classmethod
    def none(cls) -> Fault:
        """Let the connection through untouched (skips one scripted slot)."""
        return cls("none")

    @classmethod
    def drop(cls, *, rst: bool = False) -> Fault:
        """Close the TCP connection with no close frame (the client sees 1006).

        ``rst=True`` sets ``SO_LINGER`` 0 so the peer gets a RST instead of a FIN.
        """
        return cls("drop", rst=rst)

    @classmethod
    def close(cls, code: int, reason: str = "") -> Fault:
        """Send a close frame with ``code``/``reason`` and end the connection."""
        return cls("close", code=code, reason=reason)

    @classmethod
    def stall(cls, duration: float | None = None) -> Fault:
        """Neither read nor write any more; the socket stays open.

        After ``duration`` seconds (None: until a live drop/close or shutdown) the TCP connection
        is dropped. A stalled connection no longer counts as its session's open connection.
        """
        return cls("stall", duration=duration)

    @classmethod
    def goaway(cls, time_left: float = 1.0) -> Fault:
        """Send ``goAway {timeLeft}`` now and move the connection's cut to now + ``time_left``."""
        return cls("goaway", time_left=time_left)

    @classmethod
    def expire_handles(cls) -> Fault:
        """Make every handle issued so far unknown (resume then closes 1008)."""
        return cls("expire_handles")


@attrs.frozen
class Trigger:
    """When a fault fires within one connection. ``n`` counts from 1; ``seconds`` from the upgrade."""

    kind: str = attrs.field(validator=attrs.validators.in_(TRIGGERS))
    n: int = 0
    seconds: float = 0.0


@attrs.frozen
class Planned:
    fault: Fault
    trigger: Trigger = Trigger("accept")


def make_trigger(
    *,
    on_setup: bool = False,
    after_setup: bool = False,
    after_messages: int | None = None,
    after_chunks: int | None = None,
    after_tool_call: bool = False,
    after_turns: int | None = None,
    after_seconds: float | None = None,
) -> Trigger:
    """The keyword form used by ``FakeUpstream.script``: at most one may be given.

    - ``on_setup``: when the setup message arrives, before setupComplete (the setup "fails");
    - ``after_setup``: right after setupComplete and the first sessionResumptionUpdate;
    - ``after_messages=N``: after the N-th non-setup client message was processed
      (e.g. N=1 with a clientContent: mid-turn, before the first reply chunk);
    - ``after_chunks=N``: right after the N-th reply chunk (``modelTurn``) of the connection;
    - ``after_tool_call``: right after the first toolCall (a tool call is then pending);
    - ``after_turns=N``: right after the N-th turnComplete of the connection;
    - ``after_seconds=S``: S seconds after the upgrade;
    - none of them: at the upgrade, before any message is read.
    """
    chosen = [
        t
        for t in (
            Trigger("setup") if on_setup else None,
            Trigger("after_setup") if after_setup else None,
            Trigger("messages", n=after_messages) if after_messages is not None else None,
            Trigger("chunks", n=after_chunks) if after_chunks is not None else None,
            Trigger("tool_call", n=1) if after_tool_call else None,
            Trigger("turns", n=after_turns) if after_turns is not None else None,
            Trigger("seconds", seconds=after_seconds) if after_seconds is not None else None,
        )
        if t is not None
    ]
    if len(chosen) > 1:
        raise ValueError("give at most one trigger")
    return chosen[0] if chosen else Trigger("accept")
