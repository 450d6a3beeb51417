"""Tool calls of one session, as the server sees them: what is pending, answered, lost, cancelled.

Pure bookkeeping, kept apart from the actor so that the rules read in one place:

- a ``toolCall`` makes its ids *pending*; the client's ``toolResponse`` makes them *answered*
  (still open: the round trip ends when the reply that consumed the response ends);
- input that interrupts the model (a turn, text, ``activityStart``, the end of an utterance)
  makes the server cancel what is pending, and so does a ``toolCallCancellation``;
- a new connection loses every open call: the server never issues a resumable handle while a
  call is pending, so the handle the session resumed with predates the call.

A response is accepted only for a pending id; anything else is refused here with an error that
says why, instead of reaching the server, which closes the connection with 1007.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from geminid.protocol.errors import LiveMessageError, ToolCallLost

#: Ids remembered as lost or cancelled, to refuse late responses with a precise error.
REMEMBERED = 256
_PATH = "toolResponse.functionResponses.id"


class ToolCalls:
    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.answered: set[str] = set()
        self.lost: deque[str] = deque(maxlen=REMEMBERED)
        self.cancelled: deque[str] = deque(maxlen=REMEMBERED)

    @property
    def open(self) -> bool:
        """A round trip is in progress (a call waits, or a response has not been consumed)."""
        return bool(self.pending or self.answered)

    def open_ids(self) -> list[str]:
        return sorted(self.pending | self.answered)

    def called(self, ids: Iterable[str | None]) -> None:
        issued = {i for i in ids if i}
        self.answered -= issued  # an id the server issues again is pending again
        self.pending |= issued

    def cancelled_by_server(self, ids: Iterable[str]) -> None:
        for call_id in ids:
            self.pending.discard(call_id)
            self.answered.discard(call_id)
            self.cancelled.append(call_id)

    def interrupted(self) -> None:
        """New input interrupts the model: the server cancels every pending call."""
        self.cancelled.extend(sorted(self.pending))
        self.pending.clear()

    def check_response(self, ids: Iterable[str | None]) -> None:
        """Raise if any id is not pending (a response to it would be a fatal 1007 upstream)."""
        for call_id in ids:
            if call_id in self.pending:
                continue
            if call_id in self.lost:
                raise ToolCallLost(
                    f"tool call {call_id!r} was lost when the connection was resumed; the model "
                    "will ask again (see session.tool_call_lost)",
                    data={"id": call_id},
                )
            if call_id in self.cancelled:
                raise ToolCallLost(
                    f"tool call {call_id!r} was cancelled: new input interrupted the model before the "
                    "response (see toolCallCancellation)",
                    data={"id": call_id},
                )
            if call_id in self.answered:
                raise LiveMessageError(f"tool call {call_id!r} was already answered", path=_PATH)
            raise LiveMessageError(f"no pending tool call has id {call_id!r}", path=_PATH)

    def responded(self, ids: Iterable[str | None]) -> None:
        answered = {i for i in ids if i}
        self.pending -= answered
        self.answered |= answered

    def reply_ended(self) -> None:
        """The reply that consumed the responses ended: the round trip is over."""
        self.answered.clear()

    def connection_lost(self, queued: Iterable[str | None]) -> list[str]:
        """A new connection: every open call is gone, and so is every call whose response is
        still queued (no handle covers it, so the resumed state never issued the call)."""
        lost = sorted(self.pending | self.answered | {i for i in queued if i})
        self.pending.clear()
        self.answered.clear()
        self.lost.extend(lost)
        return lost

    def restore(self, pending: Iterable[str], lost: Iterable[str]) -> None:
        self.pending = set(pending)
        self.lost.extend(lost)
