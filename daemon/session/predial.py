"""Pre-dialling during a goAway drain: when to dial the next connection ahead of its setup, and
whether a pre-dialled connection may still carry it. Pure (no trio, no clock: times passed in).

On a goAway the session dials its next connection at once (TCP, TLS, the WebSocket handshake)
and holds it without a setup; once the old connection is closed (the service refuses a resume
while the old socket is open, GEMINI_LIVE.md §5) only the setup is left, on the socket already
open. The core (:class:`~geminid.daemon.session.core.SessionCore`) asks :class:`PreDials`; the
shell runs the dial (:class:`~geminid.daemon.upstream.predial.PreDialled`).
"""

from __future__ import annotations

import attrs

from geminid.daemon.session.effects import DropPreDial, Effect, PreDial
from geminid.daemon.states import State
from geminid.daemon.upstream.backoff import RotationLimit

#: A pre-dialled connection idle (handshaken, no setup) for longer than this is not used: the
#: service may drop a connection that sends nothing (how soon is UNCONFIRMED; this is a guess,
#: well beyond the usual drain of a few milliseconds to seconds), and a fresh dial is then safer.
PREDIAL_MAX_IDLE = 20.0


@attrs.define
class PreDials:
    """Whether a pre-dial is asked for and not yet handed to a dial or dropped."""

    #: ``upstream.predial``.
    enabled: bool = False
    pending: bool = False

    def goaway(self, *, draining: bool, rotations: RotationLimit, now: float) -> list[Effect]:
        """A goAway at ``now``: pre-dial if it is on, the session just moved to ``draining``, none
        is pending, and the rotation rate limit would let the rotation's dial go at once (if it
        would at ``now``, it will later: the window slides)."""
        if not (self.enabled and draining and not self.pending and rotations.after_rotation(now)[1] == 0):
            return []
        self.pending = True
        return [PreDial()]

    def moved(self, new: State) -> list[Effect]:
        """The session moved to ``new``: a pre-dialled connection is for the dial that follows
        the drain at once, so it is closed unused on a move to ``backoff`` (it would idle through
        the wait: a rate-limited rotation, a failure's delay) or to ``failed``/``closed``."""
        if not self.pending or new not in (State.BACKOFF, State.FAILED, State.CLOSED):
            return []
        self.pending = False
        return [DropPreDial(f"session {new.value}")]

    def take(self) -> bool:
        """A dial is due now: whether it should use the pre-dialled connection."""
        pending, self.pending = self.pending, False
        return pending


def predial_refusal(*, failed: str | None, closed: bool, idle_for: float) -> str | None:
    """Why a pre-dialled connection must not carry the next setup (then dial as usual), or None
    to use it. ``failed``: the dial's failure in words; ``closed``: the peer ended it since;
    ``idle_for``: seconds since its handshake completed."""
    if failed is not None:
        return failed
    if closed:
        return "closed by the peer before use"
    if idle_for > PREDIAL_MAX_IDLE:
        return f"idle for {idle_for:.1f} s (more than {PREDIAL_MAX_IDLE:g} s)"
    return None
