"""Tool calls of one session, as the server sees them: what is pending, answered, lost, cancelled.

Pure bookkeeping, kept apart from the actor so that the rules read in one place:

- a ``toolCall`` makes its ids *pending*; the client's ``toolResponse`` makes them *answered*
  (still open: the round trip ends when the reply that consumed the response ends);
- a call is BLOCKING or NON_BLOCKING as the setup's declarations and the model's default say
  (:func:`geminid.protocol.models.function_behaviors`, the one owner of that rule: on 3.8 an
  undeclared ``behavior`` is NON_BLOCKING; 3.1 blocks always);
- input that interrupts the model (a turn, text, ``activityStart``, the end of an utterance)
  makes the server cancel what is pending **and BLOCKING**; a NON_BLOCKING call survives new
  input (the model goes on talking while the tool runs). A ``toolCallCancellation`` cancels
  whatever it names;
- a NON_BLOCKING response with ``scheduling: "SILENT"`` goes into the model's context and
  elicits nothing: it closes its round trip at once (no reply is expected, so no stall);
  ``WHEN_IDLE`` (the default) and ``INTERRUPT`` expect one reply each;
- a response with ``willContinue: true`` leaves its call pending: more responses with the same id
  follow, until one without it;
- a new connection loses every open call: the server never issues a resumable handle while a
  call is pending, so the handle the session resumed with predates the call.

A response is accepted only for a pending id; anything else is refused here with an error that
says why, instead of reaching the server, which closes the connection with 1007.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from geminid.protocol import models
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
        #: Function name -> BLOCKING / NON_BLOCKING, from the setup (and context updates).
        self.behaviors: dict[str, str] = {}
        #: The behaviour of a call whose function is not declared (the model's default).
        self.default_behavior = models.BLOCKING
        #: Behaviour of each pending call, and the function name of each (for late results).
        self._behavior: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def declare(self, setup: Mapping[str, Any]) -> None:
        """Learn each declared function's behaviour from the session's setup."""
        self.behaviors = models.function_behaviors(setup)
        self.default_behavior = models.rules_for(str(setup.get("model") or "")).default_behavior

    def redeclare(self, model: str, tools: Any) -> None:
        """A ``contextUpdate`` replaced the tools."""
        self.behaviors = models.declared_behaviors(tools, models.rules_for(model))

    @property
    def open(self) -> bool:
        """A round trip is in progress (a call waits, or a response has not been consumed)."""
        return bool(self.pending or self.answered)

    @property
    def blocking_pending(self) -> bool:
        """The model waits, silent, for a response (a BLOCKING call is pending)."""
        return any(self.is_blocking(i) for i in self.pending)

    @property
    def non_blocking_pending(self) -> bool:
        """A NON_BLOCKING call runs (the model may talk meanwhile, IN_PROGRESS)."""
        return any(not self.is_blocking(i) for i in self.pending)

    def is_blocking(self, call_id: str) -> bool:
        return self._behavior.get(call_id, models.BLOCKING) == models.BLOCKING

    def open_ids(self) -> list[str]:
        return sorted(self.pending | self.answered)

    def called(self, calls: Iterable[Mapping[str, Any] | str]) -> None:
        """A toolCall: ``calls`` are its ``functionCalls`` (``id``, ``name``; a bare id is a
        call of an undeclared function)."""
        for call in map(_as_call, calls):
            call_id, name = call.get("id"), call.get("name")
            if not isinstance(call_id, str) or not call_id:
                continue
            self.answered.discard(call_id)  # an id the server issues again is pending again
            self.pending.add(call_id)
            fname = name if isinstance(name, str) else ""
            self.names[call_id] = fname
            self._behavior[call_id] = self.behaviors.get(fname, self.default_behavior)

    def cancelled_by_server(self, ids: Iterable[str]) -> None:
        for call_id in ids:
            self.pending.discard(call_id)
            self.answered.discard(call_id)
            self.cancelled.append(call_id)

    def interrupted(self) -> None:
        """New input interrupts the model: the server cancels every pending BLOCKING call
        (NON_BLOCKING calls go on)."""
        gone = sorted(i for i in self.pending if self.is_blocking(i))
        self.cancelled.extend(gone)
        self.pending.difference_update(gone)

    def check_response(self, ids: Iterable[str | None]) -> None:
        """Raise if any id is not pending (a response to it would be a fatal 1007 upstream)."""
        for call_id in ids:
            if call_id in self.pending:
                continue
            if call_id in self.lost:
                raise ToolCallLost(
                    f"tool call {call_id!r} was lost when the connection was resumed; the model "
                    "will ask again (see session.tool_call_lost), or send the result as text "
                    "(the error's data.as_text)",
                    data={"id": call_id, "lost": "reconnect"},
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

    def check_responses(self, responses: list[Mapping[str, Any]], model: str) -> None:
        """:meth:`check_response` for a toolResponse's ``functionResponses``. A response to a
        call lost to a reconnect is refused with ``data.as_text``: the same result as a
        conversation message the client may send instead (:func:`late_result_message`; the
        resumed server would not act on a response to a call it did not issue)."""
        try:
            self.check_response(r.get("id") for r in responses)
        except ToolCallLost as exc:
            if exc.data.get("lost") != "reconnect":
                raise
            lost = [r for r in responses if r.get("id") in self.lost]
            raise ToolCallLost(exc.message, data={**exc.data, "as_text": late_result_message(lost, model)}) from None

    def responded(self, responses: Iterable[Mapping[str, Any] | str]) -> tuple[int, bool]:
        """The client's ``functionResponses`` were accepted. Returns how many replies they
        elicit of their own (NON_BLOCKING ones that are not SILENT; a BLOCKING response's reply
        is the model's turn the call belongs to, counted there), and whether they ask for
        nothing at all (all NON_BLOCKING and SILENT: context only, no reply, no stall)."""
        replies = 0
        asks = False
        for r in map(_as_call, responses):
            call_id = r.get("id")
            if not isinstance(call_id, str) or not call_id:
                continue
            blocking = self.is_blocking(call_id)
            silent = not blocking and r.get("scheduling") == "SILENT"
            if not blocking and not silent:
                replies += 1
            asks = asks or not silent
            if r.get("willContinue") is True and not blocking:
                continue  # a generator: more responses to this id follow
            self.pending.discard(call_id)
            self._behavior.pop(call_id, None)
            if not silent:
                self.answered.add(call_id)
        return replies, not asks

    def reply_ended(self) -> None:
        """The reply that consumed the responses ended: the round trip is over."""
        self.answered.clear()

    def connection_lost(self, queued: Iterable[str | None]) -> list[str]:
        """A new connection: every open call is gone, and so is every call whose response is
        still queued (no handle covers it, so the resumed state never issued the call)."""
        lost = sorted(self.pending | self.answered | {i for i in queued if i})
        self.pending.clear()
        self.answered.clear()
        self._behavior.clear()
        self.lost.extend(lost)
        return lost

    def restore(self, pending: Iterable[str], lost: Iterable[str]) -> None:
        self.pending = set(pending)
        self.lost.extend(lost)


def late_result_message(responses: Iterable[Mapping[str, Any]], model: str) -> dict[str, Any]:
    """Late tool results as conversation text (pipecat PR #5497's workaround): a user turn on
    models that take ``clientContent`` mid-session, realtime text on 3.1."""
    lines = [
        f"(The result of the earlier call {r.get('name') or '?'} (id {r.get('id')}), which was "
        f"interrupted by a reconnect: {json.dumps(r.get('response'), sort_keys=True, ensure_ascii=False)})"
        for r in responses
    ]
    text = "\n".join(lines)
    if models.rules_for(model).initial_history_only:
        return {"realtimeInput": {"text": text}}
    return {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}}


def _as_call(item: Mapping[str, Any] | str) -> Mapping[str, Any]:
    return {"id": item} if isinstance(item, str) else item
