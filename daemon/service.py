"""The seam between the socket server and the session core.

The JSON-RPC layer (``geminid.daemon.rpc`` / ``geminid.daemon.server``) only ever talks to a
:class:`SessionService`; the session registry implements it. Errors are raised as
:class:`geminid.protocol.errors.GeminidError` subclasses, which carry their JSON-RPC code.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import attrs

from geminid.daemon.events import Event, EventSink, Gap
from geminid.daemon.session.durability import Deferred as Deferred
from geminid.protocol.acks import SendAck


@attrs.frozen
class OpenResult:
    session: str
    status: str
    #: True when the session was created now, False when an existing one was attached to.
    created: bool
    #: True when the session was restored from a checkpoint at daemon start.
    restored: bool
    last_seq: int
    #: Things the client should know about its setup (a retired model), for the reply.
    warnings: tuple[str, ...] = ()


@attrs.frozen
class Subscription:
    """Returned by ``attach``: the backlog to deliver first, and a gap to announce first."""

    session: str
    gap: Gap | None
    backlog: list[Event]
    last_seq: int


class SessionService(Protocol):
    async def open(self, name: str, setup: dict[str, Any]) -> OpenResult:
        """Create the named session, or attach to it. Raises SetupMismatch on a different setup."""

    async def send(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> SendAck:
        """Accept one Gemini client message; return its seq (a :class:`SendAck`, an int) once
        acknowledged (durable for turns and tool responses, or ``durable=False`` if their
        checkpoint write failed). ``msg_id``: the client's id of an idempotent send; a repeat is
        answered with the original seq (``duplicate=True``) and not sent again. Raises
        UnknownSession, SessionFailed, BufferFull, LiveMessageError, ToolCallLost, NotDurable."""

    def send_now(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> SendAck | Awaitable[SendAck]:
        """Like ``send``, but synchronous up to the acknowledgement: returns the seq when the
        message is acknowledged on enqueue (audio, realtime input), else an awaitable of it
        (durable kinds). Raises the same errors, synchronously. The socket server uses it so
        that the audio hot path costs no task and no await."""

    def attach(self, name: str, sink: EventSink, since: int | None) -> Subscription:
        """Subscribe ``sink`` to the session's events (raises UnknownSession)."""

    def detach(self, name: str, sink: EventSink) -> None:
        """Undo attach; never raises for an unknown session or sink."""

    async def close(self, name: str) -> dict[str, Any]:
        """End the session upstream (1000) and delete its checkpoint."""

    def list(self) -> list[dict[str, Any]]:
        """One dict per session: status, handle age, connected-since, reconnects, counts."""

    def status(self) -> dict[str, Any]:
        """daemon.status: version, uptime, upstream kind, sessions, counters."""
