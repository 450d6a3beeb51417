"""What the fake observed about each dial: the record tests assert on."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(eq=False)
class ConnectionRecord:
    """One upgrade attempt (refused ones included; ``accepted`` tells them apart).

    - ``path``: the request target as sent (query included); ``route``: ``developer``/``vertex``.
    - ``status``: 101 if accepted, else the HTTP status it was refused with.
    - ``auth_ok``: the credential check passed (False also when it was not reached).
    - ``setup``: the canonical setup message (``{"setup": {...}}``), ``resumed_handle``: the
      handle it resumed (None for a fresh session), ``conversation_id``.
    - ``messages``: every valid client message received, canonical (setup included), in order;
      ``invalid``: the raw message that got the connection closed with 1007, if any.
    - ``sent``: every server message actually written (``{}`` frames included), in order.
    - ``handles``: handles issued on this connection, in order.
    - ``close_code``/``close_reason``/``closed_by``: who ended it and how. ``closed_by`` is
      ``server`` (the fake sent a close frame), ``client`` (the client did), ``drop`` (the fake
      dropped TCP), ``stall`` (the fake stalled, then dropped), ``abnormal`` (TCP vanished) or
      ``shutdown``. A drop records code 1006.
    - ``opened_at``/``closed_at``: trio clock.
    """

    id: int
    path: str
    opened_at: float
    route: str | None = None
    version: str | None = None
    status: int | None = None
    auth_ok: bool = False
    accepted: bool = False
    setup: dict[str, Any] | None = None
    resumed_handle: str | None = None
    conversation_id: str | None = None
    messages: list[dict[str, Any]] = attrs.Factory(list)
    invalid: Any = None
    sent: list[dict[str, Any]] = attrs.Factory(list)
    handles: list[str] = attrs.Factory(list)
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None
    closed_at: float | None = None

    def sent_kinds(self) -> list[str]:
        """The top-level key of each sent message (``{}`` frames as ``""``)."""
        return [next(iter(m), "") for m in self.sent]

    def client_kinds(self) -> list[str]:
        return [next(iter(m)) for m in self.messages]
