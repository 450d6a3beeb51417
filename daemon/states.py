"""The session state machine: an explicit enum and its allowed transitions.

The session actor never assigns its state directly; it calls :func:`transition`, which refuses
anything not in :data:`ALLOWED`. That makes the life of a session reviewable on one screen and
lets hypothesis walk it.

```
connecting ──setupComplete──▶ live ──goAway──▶ draining ──quiet point / deadline──▶ resuming
    │                          │                  │                                    │
    └──────── close ──────────▶ backoff ◀── close ┘◀────────────── close ──────────────┘
                               │   ▲
                               └───┴─▶ resuming (with a handle) | connecting (fresh)
failed (fatal, budget exhausted)  and  closed (asked to)  are terminal.
```
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    CONNECTING = "connecting"  # dialling a fresh session (no handle)
    RESUMING = "resuming"  # dialling with a resumption handle
    LIVE = "live"  # setupComplete received; relaying
    DRAINING = "draining"  # goAway received; rotating at the first quiet point
    BACKOFF = "backoff"  # waiting before the next dial
    FAILED = "failed"  # terminal: fatal error or retry budget exhausted
    CLOSED = "closed"  # terminal: closed by a client, by inactivity, or by shutdown

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def connected(self) -> bool:
        return self in (State.LIVE, State.DRAINING)


TERMINAL = frozenset({State.FAILED, State.CLOSED})


class LocalReason(enum.Enum):
    """Why geminid itself ends a connection or the session. The value is the text carried in
    the ending's reason and the logs (as it always was); decisions compare the enum, never text."""

    SHUTDOWN = "daemon shutting down"
    CLOSED = "closed by client"
    INACTIVITY = "inactivity timeout"
    FORCED = "forced reconnect"
    ROTATION = "goAway: rotating at a quiet point"
    GOAWAY_DEADLINE = "goAway deadline reached; rotating"

_DIALLING = {State.CONNECTING, State.RESUMING}

ALLOWED: dict[State, frozenset[State]] = {
    # A dial ends in live, in a wait, in an immediate re-dial (fresh after a stale handle, or a
    # resume right after a clean 1000), or in a terminal state.
    State.CONNECTING: frozenset({State.LIVE, State.BACKOFF, State.CONNECTING, State.RESUMING, *TERMINAL}),
    State.RESUMING: frozenset({State.LIVE, State.BACKOFF, State.CONNECTING, State.RESUMING, *TERMINAL}),
    State.LIVE: frozenset({State.DRAINING, State.BACKOFF, *_DIALLING, *TERMINAL}),
    State.DRAINING: frozenset({State.BACKOFF, *_DIALLING, *TERMINAL}),
    State.BACKOFF: frozenset({*_DIALLING, *TERMINAL}),
    State.FAILED: frozenset(),
    State.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: the actor tried a transition the state machine does not allow."""


def transition(current: State, new: State) -> State:
    """Return ``new`` if the move is allowed, else raise :class:`IllegalTransition`."""
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"{current.value} -> {new.value} is not a session transition")
    return new
