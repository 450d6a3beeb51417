"""What the sans-IO session core asks its shell to do (:mod:`geminid.daemon.session.core`).

The core decides; the actor (:mod:`geminid.daemon.session.actor`) carries each effect out: it
turns :class:`Persist` into a checkpoint write, :class:`Notify` into a hub publish, the secret
effects into the log redactor, :class:`EndConnection` into cancelling the relay. Frozen values,
so that a test can compare a decision with the effects it expects.
"""

from __future__ import annotations

import attrs

from geminid.daemon.states import LocalReason, State
from geminid.protocol.notifications import Notification, SessionStatus


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


@attrs.frozen
class Transition:
    """The core moved the session from ``old`` to ``new`` (allowed by :data:`~geminid.daemon.states.ALLOWED`).

    The shell logs it once (``session.transition``, with ``from``/``to`` and the status's params)
    and publishes ``status`` as is: the log line and the wire are built from the same value.
    """

    old: State
    new: State
    status: SessionStatus

    @property
    def cause(self) -> str:
        return self.status.cause

    def log_fields(self) -> dict[str, object]:
        """The ``session.transition`` fields (as they always were): from, to, then the params."""
        params = self.status.to_params()
        del params["status"]
        return {"from": self.old.value, "to": self.new.value, **params}


@attrs.frozen
class Misconfigured:
    """Every dial since the session started failed the same way before reaching the server: the
    endpoint is probably wrong (:class:`~geminid.daemon.upstream.diagnose.Suspicion`). Raised once
    per session; the session keeps retrying on its schedule (a real outage must not be given up on)."""

    cause: str
    reason: str
    attempts: int


@attrs.frozen
class InvalidateCredential:
    """The server refused the dial's credential (HTTP 401) and it can be fetched anew: the next
    dial must present a fresh one (``Credentials.invalidate``)."""


@attrs.frozen
class PreDial:
    """A goAway rotation is coming: dial the next connection now (TCP, TLS, the WebSocket
    handshake, with the dial's credentials and connect timeout) and hold it without a setup.
    The next :class:`~geminid.daemon.session.core.DialPlan` says whether to use it."""


@attrs.frozen
class DropPreDial:
    """The pre-dialled connection will not be used (backoff, failure, close): close it."""

    reason: str


Effect = (
    Notify | Persist | EndConnection | SecretAdded | SecretRemoved | HandleDropped | Transition | Misconfigured
    | InvalidateCredential | PreDial | DropPreDial
)
