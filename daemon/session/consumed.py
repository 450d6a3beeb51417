"""Reading ``lastConsumedClientMessageIndex`` when its convention is unknown (pure, no I/O).

The index's base (0 or 1) and scope (counted per connection, or over the conversation and
carried across resumes) are unconfirmed for the real service. This module keeps every
convention still consistent with what was seen and answers the one question the replay buffer
asks: *how many of the messages written on this connection has the server consumed, for sure?*

**Candidates.** For a convention ``(b, scope)`` an index ``i`` means a count ``S = i + 1 - b``
of consumed messages. Per connection, the count on this connection is ``c = S`` exactly. Per
session, ``c = S - S0`` where ``S0``, the conversation's count when this connection started,
is known only as an interval ``[s_lo, s_hi]``: ``s_lo`` is 0 (a fresh dial restarts the
count, and the buffer is not told whether a dial resumed), ``s_hi`` is the previous
connection's last count plus what was written after its last sure consumption. A convention is
dropped when no ``c`` fits ``prev_c <= c <= sent`` (counts never go back, and the server cannot
consume what was not written).

**Safety (no loss).** The answer is the minimum, over surviving candidates, of the smallest
``c`` each allows. The true convention always survives (its true ``c`` always fits), and its
smallest allowed ``c`` is at most the true one, so nothing unconsumed is ever trimmed.

**Duplicates.** Trimming less than was consumed replays consumed messages after a reconnect.
Two ambiguities can do that, and the first updates resolve both:

- *Base.* 0- and 1-based differ by one message. An index of 0 proves 0-based (an index names
  the last consumed message, and none is numbered 0 from 1); an index equal to the number
  written proves 1-based (0-based would mean one more consumed than written). Updates without
  a handle (``resumable: false``, while the model speaks) are read for this too
  (:meth:`ReplayBuffer.index_seen`): the one right after the first turn settles the base. The common case in between, index = written - 1 at a quiet
  point, is settled by the replies: a reply that ended proves its eliciting message (and all
  before it) consumed (``at_least``), so 1-based, which would leave it unconsumed, is dropped.
  Resumable handles come at quiet points (every reply ended), so the first one settles the base
  unless nothing eliciting was written before it.
- *Scope.* Until a resume, both scopes read alike (``S0 = 0``). On a resumed connection, an
  index that arrives before anything was written (the service's update right after setup)
  proves session scope (per connection it would mean a count above 0 with nothing written)
  and pins ``S0`` exactly. Per connection is never disproved by the session reading (a fresh
  dial may restart the conversation's count), so under per-connection scope the session
  candidates survive with a wide ``S0`` and the answer stays the per-connection one. If a
  session-scoped index arrives only after replay writes began, ``S0`` stays an interval and
  the answer is short by at most its width: consumed messages may be replayed once (a
  duplicate, never a loss) until the next connection pins it.

A third source of duplicates is not an ambiguity of the index: a per-connection index says
nothing about what the *previous* connection consumed after its last handle (the update after
a resume names 0), so what was written there after it is replayed.

*A restart.* A restarted daemon resumes from its checkpoint's handle without the index history
of the daemon it replaces, so under session scope it cannot know the conversation's count at that
resume (assuming 0, as for a new session, read the resumed count as consumed on this connection:
every per-connection reading then trims messages the server never saw, a loss, and the session
readings are dropped for good, so nothing is trimmed again and every reconnect replays it all).
:meth:`ConsumedIndex.unknown_start` opens ``S0`` to ``[0, unbounded)`` for the next connection:
only what the replies prove is trimmed until an update pins it (the update right after setup,
when it comes before replay writes, pins it exactly).

``for_convention`` with one name (``upstream.consumed_index``) starts with that single candidate.
"""

from __future__ import annotations

import attrs

from geminid.daemon.config import CONSUMED_INDEX_CONVENTIONS

#: The conventions, as the config (``upstream.consumed_index``) and the fake name them.
CONVENTIONS = CONSUMED_INDEX_CONVENTIONS
#: An upper bound of ``S0`` that no count reaches: the conversation's count is unknown.
UNBOUNDED = 1 << 62


@attrs.define
class _Candidate:
    base: int
    session: bool
    #: Interval of the conversation's consumed count at this connection's start (session scope).
    s_lo: int = 0
    s_hi: int = 0
    #: Smallest count on this connection this candidate allows after the last update.
    c_lo: int = 0
    #: Last consumed count (S) seen on this connection, None before the first update.
    last_s: int | None = None

    def fit(self, s: int, sent: int, at_least: int) -> tuple[int, int] | None:
        """The interval of counts on this connection a total ``s`` allows, None if none fits."""
        lo, hi = (s - self.s_hi, s - self.s_lo) if self.session else (s, s)
        if hi < at_least:
            return None
        lo, hi = max(lo, self.c_lo, at_least, 0), min(hi, sent)
        return (lo, hi) if lo <= hi else None


@attrs.define
class ConsumedIndex:
    """Which convention the server uses, and how many written messages it surely consumed."""

    candidates: list[_Candidate]

    @classmethod
    def for_convention(cls, convention: str = "auto") -> ConsumedIndex:
        names = CONVENTIONS if convention == "auto" else (convention,)
        if any(n not in CONVENTIONS for n in names):
            raise ValueError(f"unknown consumed_index convention {convention!r}")
        return cls([_Candidate(int(n[0]), n.endswith("session")) for n in names])

    @property
    def convention(self) -> str | None:
        """The convention once only one is left (None while ambiguous, or if none fits)."""
        if len(self.candidates) != 1:
            return None
        c = self.candidates[0]
        return f"{c.base}-{'session' if c.session else 'connection'}"

    def observe(self, index: int | None, sent: int, at_least: int = 0) -> int:
        """An update named ``index`` when ``sent`` messages had been written on this connection,
        of which the first ``at_least`` are known consumed (a reply to the last of them ended).

        Returns how many of them (from the first) are consumed under every surviving
        convention. If no convention fits (a server outside all four), trims nothing more.
        ``index`` None: a transparent update with no index, a count of 0 under every convention
        (per connection: nothing consumed here yet; per session: the conversation restarted,
        which pins ``S0 = 0`` and makes the session reading as exact as the other).
        """

        def total(cand: _Candidate) -> int:
            return 0 if index is None else index + 1 - cand.base

        # An index names a consumed message (its absence, None, says none was): so a count
        # below 1 is no reading of it (index 0 is 0-based: no message is numbered 0 from 1).
        fits = [(cand, None if index is not None and total(cand) < 1 else cand.fit(total(cand), sent, at_least))
                for cand in self.candidates]
        alive = [(cand, f) for cand, f in fits if f is not None]
        if not alive:
            return min((c.c_lo for c in self.candidates), default=0)
        self.candidates = [cand for cand, _ in alive]
        for cand, (lo, hi) in alive:
            s = total(cand)
            cand.c_lo, cand.last_s = lo, s
            if cand.session:  # S0 = S - c with c in [lo, hi]: narrow the interval
                cand.s_lo, cand.s_hi = max(cand.s_lo, s - hi), min(cand.s_hi, s - lo)
        return min(cand.c_lo for cand in self.candidates)

    def unknown_start(self) -> None:
        """The next connection resumes a conversation whose count this detector never saw (a
        restored session): its session-scoped start may be anything from 0 up."""
        for cand in self.candidates:
            if cand.session:
                cand.s_lo, cand.s_hi = 0, UNBOUNDED
            cand.c_lo, cand.last_s = 0, None

    def new_connection(self, sent: int) -> None:
        """The connection that wrote ``sent`` messages ended; the next starts at count 0."""
        for cand in self.candidates:
            if cand.session:
                # The next start is at most what could have been consumed by now (all written
                # after the last sure consumption); at least 0 (a fresh dial restarts the count).
                top = cand.s_hi + cand.c_lo if cand.last_s is None else cand.last_s
                cand.s_lo, cand.s_hi = 0, top + max(sent - cand.c_lo, 0)
            cand.c_lo, cand.last_s = 0, None
