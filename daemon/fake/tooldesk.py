"""The fake model's tool-call desk: declarations, pending calls, and the answers to them.

A call runs BLOCKING (the model waits for the response, then speaks about it) or NON_BLOCKING
(the model speaks a filler meanwhile; the result is spoken as its ``scheduling`` says: SILENT
into context only, WHEN_IDLE once the model is idle, INTERRUPT at once). ``willContinue: true``
keeps a call pending for more responses (a generator). One owner for the pending calls, so the
speaker, the resumption rules and ``interactionStatus`` all ask the same place.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

from geminid.protocol import live

from . import catalogue as C
from . import model as M
from .speaker import Gen

if TYPE_CHECKING:
    from .connection import FakeConnection

BAD_TOOL_ID_REASON = "Request contains an invalid argument. Function response id {id!r} matches no pending call."
BAD_SCHEDULING_REASON = "Invalid value at 'tool_response.function_responses[{i}].scheduling'"
SCHEDULINGS = ("SILENT", "WHEN_IDLE", "INTERRUPT")


class ToolDesk:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.decls: dict[str, dict[str, Any]] = {}
        self.functions: list[str] = []
        self.pending: dict[str, M.ToolCallRecord] = {}
        #: WHEN_IDLE tool replies waiting for the model to be idle.
        self.when_idle: list[Gen] = []

    def set_tools(self, tools: list[dict[str, Any]]) -> None:
        self.decls = M.declarations(tools)
        self.functions = list(self.decls)

    def behavior(self, name: str) -> str:
        """How a call of ``name`` runs: its declared ``behavior`` if the model honours it."""
        spec = self.conn.spec
        if spec.tool_mode is C.ToolMode.BLOCKING:
            return "BLOCKING"
        declared = (self.decls.get(name) or {}).get("behavior")
        if declared in ("BLOCKING", "NON_BLOCKING"):
            return str(declared)
        return spec.default_behavior

    def holds_handles(self, resumable_pending_calls: bool) -> bool:
        """A pending call makes handles resumable:false (NON_BLOCKING ones as the option says)."""
        return any(
            call.behavior == "BLOCKING" or not resumable_pending_calls
            for call in self.pending.values()
        )

    def cancel_blocking(self, tool_ids: list[str]) -> list[str]:
        """Cancel the still-pending BLOCKING calls among ``tool_ids`` (an interrupted turn)."""
        ids = [i for i in tool_ids if i in self.pending and self.pending[i].behavior == "BLOCKING"]
        for call_id in ids:
            self.pending.pop(call_id).cancelled = True
        return ids

    async def call(self, gen: Gen, name: str, heard: str) -> None:
        """The model calls ``name`` (after a beat); NON_BLOCKING: then speaks ``gen``'s filler."""
        conn, speaker = self.conn, self.conn.speaker
        behavior = self.behavior(name)
        with gen.scope:
            await trio.sleep(conn.opts.reply_pace)
            if speaker.gen is not gen:
                return
            args = M.call_args(self.decls.get(name) or {}, heard)
            call = M.ToolCallRecord(conn.up.new_call_id(), name, args, gen.turn, behavior=behavior)
            st = conn.state
            st.tool_calls.append(call)
            st.history.append({"role": "model", "text": f"call {name}", "call_id": call.id})
            gen.tool_ids.append(call.id)
            self.pending[call.id] = call
            conn.emit(live.tool_call([{"id": call.id, "name": name, "args": call.args}]))
            conn._counts["tool_call"] += 1
            conn.fire("tool_call", conn._counts["tool_call"])
            if behavior == "NON_BLOCKING":
                await speaker.speak(gen)  # the filler, while the call runs

    def response_error(self, body: dict[str, Any]) -> str | None:
        """The 1007 reason if any response of ``body`` is invalid (nothing is taken then)."""
        for i, fr in enumerate(body.get("functionResponses") or []):
            scheduling = fr.get("scheduling")
            if scheduling is not None and scheduling not in SCHEDULINGS:
                return BAD_SCHEDULING_REASON.format(i=i) + f" ({live.encode(scheduling)})"
            if fr["id"] not in self.pending:
                return BAD_TOOL_ID_REASON.format(id=fr["id"])
        return None

    def on_response(self, body: dict[str, Any]) -> None:
        if (reason := self.response_error(body)) is not None:
            self.conn.reject(body, reason)
            return
        last: M.ToolCallRecord | None = None
        silent_closed = False  # a final SILENT response to a NON_BLOCKING call
        for fr in body.get("functionResponses") or []:
            call = self.pending[fr["id"]]
            if fr.get("willContinue") is not True:
                del self.pending[call.id]  # a generator ends with willContinue false
                call.answered = True
            call.response = fr.get("response")
            call.responses.append(call.response)
            self.conn.state.history.append(
                {"role": "tool", "text": json.dumps(call.response, sort_keys=True), "call_id": call.id}
            )
            if call.behavior == "NON_BLOCKING":
                self._async_result(call, fr.get("scheduling") or "WHEN_IDLE")
                silent_closed = silent_closed or (call.answered and fr.get("scheduling") == "SILENT")
            elif call.answered:
                last = call
        speaker = self.conn.speaker
        gen = speaker.gen
        if silent_closed and not self.pending and gen is None and self.conn.opts.idle_after_silent:
            speaker.idle_now()
        if (
            last is not None
            and gen is not None
            and gen.kind == "tool"
            and not any(i in self.pending for i in gen.tool_ids)
        ):
            text = M.compose_tool_reply(gen.turn, last.name, last.response)
            speaker.stream(speaker.start(Gen(gen.turn, "reply", text=text)))

    def _async_result(self, call: M.ToolCallRecord, scheduling: str) -> None:
        """A NON_BLOCKING result: SILENT goes into context only; WHEN_IDLE is spoken when the
        model is idle; INTERRUPT stops what the model is saying and is spoken now."""
        if scheduling == "SILENT":
            return
        speaker = self.conn.speaker
        gen = Gen(call.turn, "reply", text=M.compose_tool_reply(call.turn, call.name, call.response))
        if scheduling == "INTERRUPT":
            speaker.interrupt()
        if speaker.gen is None:
            speaker.stream(speaker.start(gen))
        else:
            self.when_idle.append(gen)
