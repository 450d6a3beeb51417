"""What the sans-IO session core asks its shell to do (:mod:`geminid.daemon.session.core`).

The core decides; the actor (:mod:`geminid.daemon.session.actor`) carries each effect out: it
turns :class:`Persist` into a checkpoint write, :class:`Notify` into a hub publish, the secret
effects into the log redactor, :class:`EndConnection` into cancelling the relay. Frozen values,
so that a test can compare a decision with the effects it expects.
"""

from __future__ import annotations

import attrs

from geminid.daemon.states import LocalReason
from geminid.protocol.notifications import Notification


@attrs.frozen
class Notify:
    """Publish ``note`` to the session's subscribers (and log it)."""

    note: Notification


@attrs.frozen
class Persist:
    """Checkpoint the session: now (``urgent``), or lazily (at most once a second: a newer
    handle only ever makes a checkpoint shorter, so an older one is still consistent)."""

    urgent: bool = True


@attrs.frozen
class EndConnection:
    """End the current connection from our side (with 1000) and reconnect."""

    reason: LocalReason


@attrs.frozen
class SecretAdded:
    """A value that must never reach a log line (a resumption handle)."""

    value: str


@attrs.frozen
class SecretRemoved:
    value: str


@attrs.frozen
class HandleDropped:
    """The session gives up its resumption handle and will start fresh (context lost)."""

    reason: str


Effect = Notify | Persist | EndConnection | SecretAdded | SecretRemoved | HandleDropped
