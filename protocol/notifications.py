"""The catalogue of JSON-RPC notifications the daemon sends to clients (daemon -> client).

One attrs class per method, with exactly the params the daemon sends (the hub adds ``session``
and ``seq``; ``session.lagged`` has no seq of its own). Every publish in the daemon builds one of
these, so the wire cannot drift from this file; ``tests/protocol/test_notifications.py`` checks
this file against PROTOCOL.md's notification table and ``schemas/local_rpc.json`` (one schema
per method, every field documented), so the three cannot drift from each other either.

Optional fields that are None are left out of the params, as they always were.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs

__all__ = [
    "CATALOGUE",
    "SessionContext",
    "EndReason",
    "Notification",
    "SessionContextLost",
    "SessionEnded",
    "SessionLagged",
    "SessionMessage",
    "SessionStatus",
    "SessionToolCallLost",
]


class SessionContext(enum.Enum):
    """What a ``live`` status says about the conversation."""

    RESTORED = "restored"  # resumed with the server's handle
    LOST = "lost"  # a fresh session replaced one whose context is gone
    FRESH = "fresh"  # a new session


class EndReason(enum.Enum):
    """Why a session ended (``session.ended.reason``)."""

    CLOSED = "closed"  # closed by a client (or by an operator)
    FATAL = "fatal"  # failed: a fatal error, or the retry budget ran out
    TIMEOUT = "timeout"  # the inactivity timeout closed it


def _params(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if value is None:
            continue
        out[field.name] = value.value if isinstance(value, enum.Enum) else value
    return out


@attrs.frozen
class SessionMessage:
    """A Gemini server message, verbatim (camelCase)."""

    METHOD: ClassVar[str] = "session.message"
    message: dict[str, Any]
    #: The frame belongs to a reply that started again from its beginning: it answers a message
    #: that was replayed after a reconnect or a daemon restart, and that an earlier connection
    #: had already sent (so an earlier reply to it may have been partly delivered: a voice client
    #: should not speak its first half twice).
    replayed: bool = False

    def to_params(self) -> dict[str, Any]:
        if self.replayed:
            return {"message": self.message, "replayed": True}
        return {"message": self.message}


@attrs.frozen
class SessionStatus:
    """A state transition of the session.

    ``cause`` is the machine-readable cause of the transition (``dial``, ``setup_complete``,
    ``goaway``, ``closed``, a classify cause such as ``server_error``, or the reason a fresh
    session was started); ``reason`` is the human-readable detail where there is one (the close
    code and text of a backoff, the reason of a failure or a close).
    """

    METHOD: ClassVar[str] = "session.status"
    status: str
    cause: str
    attempt: int | None = None
    context: SessionContext | None = None
    downtime_ms: float | None = None
    retry_in: float | None = None
    time_left: float | None = None
    reason: str | None = None

    def to_params(self) -> dict[str, Any]:
        return _params(self)


@attrs.frozen
class SessionLagged:
    """Events ``first..last`` (inclusive) were not delivered to this client (no seq of its own).

    ``missed``: how many events of that range were published (after a daemon restart, seqs that
    were reserved but never used are no events); None when that cannot be known (a kill -9 of the
    daemon: the events published after its last checkpoint write are not counted anywhere).
    """

    METHOD: ClassVar[str] = "session.lagged"
    first: int
    last: int
    missed: int | None = None

    def to_params(self) -> dict[str, Any]:
        return _params(self)


@attrs.frozen
class SessionEnded:
    """The session is gone. ``detail`` says why, in words."""

    METHOD: ClassVar[str] = "session.ended"
    reason: EndReason
    detail: str

    def to_params(self) -> dict[str, Any]:
        return _params(self)


@attrs.frozen
class SessionToolCallLost:
    """Tool calls the server forgot in a reconnect: don't answer them (the model asks again)."""

    METHOD: ClassVar[str] = "session.tool_call_lost"
    ids: list[str]

    def to_params(self) -> dict[str, Any]:
        return {"ids": list(self.ids)}


@attrs.frozen
class SessionContextLost:
    """The conversation context could not be kept; ``suspected`` when only inferred (the prompt
    token count collapsed after a resume)."""

    METHOD: ClassVar[str] = "session.context_lost"
    reason: str
    suspected: bool | None = None

    def to_params(self) -> dict[str, Any]:
        return _params(self)


Notification = (
    SessionMessage | SessionStatus | SessionLagged | SessionEnded | SessionToolCallLost | SessionContextLost
)

#: Every notification class, by method.
CATALOGUE: dict[str, type[Any]] = {
    cls.METHOD: cls
    for cls in (SessionMessage, SessionStatus, SessionLagged, SessionEnded, SessionToolCallLost, SessionContextLost)
}
