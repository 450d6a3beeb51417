"""The fake model's voice: one turn at a time, streamed, interruptible.

A :class:`Gen` is one model turn in progress. The :class:`Speaker` starts it (a reply, a
BLOCKING call the model waits on, or a NON_BLOCKING call with a filler), streams it in chunks
(text, or audio with its transcription), ends each utterance with ``generationComplete`` and a
``turnComplete`` carrying ``interactionStatus``, and stops it when new input interrupts.

A generation is cancelled synchronously by an interruption: it checks after every await that it
is still the current one, so an already-woken task never emits a stale chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from geminid.protocol import live

from . import catalogue as C
from . import model as M

if TYPE_CHECKING:
    from .connection import FakeConnection

IN_PROGRESS, IDLE = "IN_PROGRESS", "IDLE"


@attrs.define(eq=False)
class Gen:
    """One model turn in progress: streaming a reply, or waiting for a tool response."""

    turn: int
    kind: str  # "reply" | "tool" (a BLOCKING call: the model waits for its response)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    text: str = ""
    sent: str = ""
    tool_ids: list[str] = attrs.Factory(list)
    #: Utterances still to speak after ``text`` (extended thinking: the answer after the filler).
    more: list[str] = attrs.Factory(list)
    #: Between an IN_PROGRESS turnComplete and the next utterance.
    in_progress: bool = False


class Speaker:
    """Owns the current generation; emits through its connection (frames, fault triggers)."""

    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.gen: Gen | None = None

    def user_turn(self) -> None:
        """The user's turn is complete: answer it, or call a tool it mentions."""
        conn = self.conn
        turn, heard, earlier = conn.state.begin_turn()
        if self._declines(heard):
            self._decline()
            return
        name = M.tool_to_call(conn.tools.functions, heard, conn.opts.tool_trigger_words)
        if name is not None and conn.tools.behavior(name) == "BLOCKING":
            gen = self.start(Gen(turn, "tool"))
            conn.start_soon(conn.tools.call, gen, name, heard)
        elif name is not None:
            # NON_BLOCKING: the call goes out, and the model speaks a filler meanwhile.
            gen = self.start(Gen(turn, "reply", text=M.tool_filler_text(turn, name)))
            conn.start_soon(conn.tools.call, gen, name, heard)
        else:
            answer = M.compose_reply(turn, heard, earlier)
            if conn.spec.style is C.Style.EXTENDED:
                gen = Gen(turn, "reply", text=M.filler_text(turn), more=[answer])
            else:
                gen = Gen(turn, "reply", text=answer)
            self.stream(self.start(gen))

    def _declines(self, heard: str) -> bool:
        """Proactive audio ignores this input (``FakeOptions.decline``)."""
        opts = self.conn.opts
        low = heard.lower()
        return (
            opts.decline is not None
            and self.conn.spec.proactive_audio_always
            and any(w.lower() in low for w in opts.decline_words)
        )

    def _decline(self) -> None:
        """The input is in context; the model says nothing (a bare turnComplete, or nothing)."""
        conn = self.conn
        if conn.opts.decline == "turn_complete":
            st = conn.state
            conn.emit(live.turn_complete(live.usage_metadata(st.context_tokens(), 0), self.status(more=False)))
            conn._counts["turns"] += 1  # the handle follows once the input is taken (connection)
            conn.fire("turns", conn._counts["turns"])
            self._next_when_idle()

    def start(self, gen: Gen) -> Gen:
        self.gen = gen
        self.conn.busy_update()
        return gen

    def stream(self, gen: Gen) -> None:
        self.conn.start_soon(self._stream_reply, gen)

    async def _stream_reply(self, gen: Gen) -> None:
        """Speak ``gen.text``, then each of ``gen.more``: one turnComplete per utterance, the
        ones before the last with IN_PROGRESS (extended thinking), the last one IDLE."""
        with gen.scope:
            await self.speak(gen)

    async def speak(self, gen: Gen) -> None:
        while True:
            if not await self._utter(gen, gen.text):
                return
            more = bool(gen.more)
            self._end_utterance(gen, last=not more)
            if not more:
                return
            gen.in_progress = True
            self._turn_done()  # a handle here only with resumable_in_progress
            if self.conn.opts.when_idle_at_pause:
                # Kept results, spoken here inside the interaction, each its own utterance.
                waiting = self.conn.tools.when_idle
                gen.more[:0] = [kept.text for kept in waiting]
                waiting.clear()
            await trio.sleep(self.conn.opts.reply_pace)  # background reasoning
            if self.gen is not gen:
                return
            gen.in_progress = False
            gen.text = gen.more.pop(0)

    async def _utter(self, gen: Gen, text: str) -> bool:
        """Stream ``text`` in chunks; False if ``gen`` was superseded (interrupted) meanwhile."""
        conn = self.conn
        pace = conn.opts.reply_pace
        for i, chunk in enumerate(M.split_chunks(text, conn.opts.reply_chunks)):
            await trio.sleep(pace)
            if self.gen is not gen:
                return False
            if conn.admitted.audio_out:
                conn.emit(live.server_audio(M.pcm_for_text(chunk)))
                if conn.admitted.output_transcription:
                    conn.emit(live.output_transcription(chunk))
            else:
                conn.emit(live.server_text(chunk))
            gen.sent += chunk
            if i == 0 and conn.opts.empty_frames:
                conn.emit({})
            conn._counts["chunks"] += 1
            conn.fire("chunks", conn._counts["chunks"])
        await trio.sleep(pace)
        return self.gen is gen

    def _end_utterance(self, gen: Gen, *, last: bool) -> None:
        conn = self.conn
        st = conn.state
        prompt = st.context_tokens()
        st.add_model_text(gen.text)
        gen.sent = ""
        if last:
            self.gen = None
        conn.emit(live.generation_complete())
        usage = live.usage_metadata(prompt, M.text_tokens(gen.text))
        conn.emit(live.turn_complete(usage, self.status(more=not last)))
        if last:
            self._turn_done()
            self._next_when_idle()

    def _turn_done(self) -> None:
        conn = self.conn
        conn._counts["turns"] += 1
        conn._maybe_resumable_update()
        conn.fire("turns", conn._counts["turns"])

    def _next_when_idle(self) -> None:
        """The model went idle: speak the oldest WHEN_IDLE tool result waiting, if any."""
        waiting = self.conn.tools.when_idle
        if self.gen is None and waiting and not self.conn.closing:
            self.stream(self.start(waiting.pop(0)))

    def idle_now(self) -> None:
        """End an interaction that only a pending call kept IN_PROGRESS, with nothing to say
        (``FakeOptions.idle_after_silent``): a bare ``turnComplete`` with the status now. Not
        with ``idle_while_call_pending``: no call kept the interaction open."""
        if self.conn.spec.style is not C.Style.EXTENDED or self.gen is not None or self.conn.opts.idle_while_call_pending:
            return
        st = self.conn.state
        self.conn.emit(live.turn_complete(live.usage_metadata(st.context_tokens(), 0), self.status(more=False)))
        self._turn_done()
        self._next_when_idle()

    def status(self, *, more: bool) -> str | None:
        """The ``interactionStatus`` for a turnComplete now; None if this model sends none."""
        conn = self.conn
        spec = conn.spec
        extended = spec.style is C.Style.EXTENDED
        if not spec.interaction_status or not (extended or conn.opts.plain_interaction_status):
            return None
        if more or (extended and self._call_holds()):
            return IN_PROGRESS
        return IDLE

    def _call_holds(self) -> bool:
        """On extended thinking, a pending call keeps the interaction IN_PROGRESS (unless
        ``FakeOptions.idle_while_call_pending``)."""
        return bool(self.conn.tools.pending) and not self.conn.opts.idle_while_call_pending

    def interrupt(self) -> None:
        """New input while the model is busy: stop it, as the real service does. BLOCKING calls
        of the stopped turn are cancelled (``toolCallCancellation``); NON_BLOCKING ones go on."""
        gen = self.gen
        if gen is None:
            return
        conn = self.conn
        self.gen = None
        gen.scope.cancel()
        st = conn.state
        if gen.sent:
            st.add_model_text(gen.sent, interrupted=True)
        ids = conn.tools.cancel_blocking(gen.tool_ids)
        if ids:
            conn.emit(live.tool_call_cancellation(ids))
        conn.emit(live.interrupted())
        prompt = st.context_tokens()
        usage = live.usage_metadata(prompt, M.text_tokens(gen.sent) if gen.sent else 0)
        conn.emit(live.turn_complete(usage, self.status(more=False)))
        conn._counts["turns"] += 1
        conn.fire("turns", conn._counts["turns"])
