"""What the client's input does to the conversation: turns, audio, video, context updates.

Realtime text and the end of an audio turn (``activityEnd`` / ``audioStreamEnd``) interrupt the
model and start a user turn; ``activityStart`` only interrupts. Audio is counted (its length is
what the model "hears"), with input transcriptions as the setup asked.

The 3.1 models take ``clientContent`` only as **initial history** (``historyConfig``): before the
first turnComplete:true it is history, without a model reply, and realtime input is refused; after
it, ``clientContent`` is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geminid.protocol import live
from geminid.protocol.errors import LiveMessageError

from . import catalogue as C
from . import model as M

if TYPE_CHECKING:
    from .connection import FakeConnection

HISTORY_REASON = "Request contains an invalid argument. client_content is only accepted as initial history."
HISTORY_OPEN_REASON = "Request contains an invalid argument. Initial history has not ended (turn_complete)."


class Hearing:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        #: 3.1: initial history in clientContent, until turnComplete.
        self.history_open = False

    def client_content(self, body: dict[str, Any]) -> None:
        conn = self.conn
        history = conn.spec.history is C.History.INITIAL_ONLY
        if history and not self.history_open:
            conn.reject(body, HISTORY_REASON)
            return
        if not history:
            conn.speaker.interrupt()
        st = conn.state
        for turn in body.get("turns") or []:
            text = M.content_text(turn)
            if turn.get("role") == "user":
                st.add_user_text(text)
            else:
                st.history.append({"role": str(turn.get("role")), "text": text})
        if history:
            # Initial history: taken without calling the model, until turnComplete:true.
            if body.get("turnComplete"):
                self.history_open = False
            st.pending = []
            return
        if body.get("turnComplete"):
            conn.speaker.user_turn()
        elif conn.spec.interaction_status:
            conn.emit(live.waiting_for_input())

    def realtime_input(self, body: dict[str, Any]) -> None:
        conn = self.conn
        if self.history_open:
            conn.reject(body, HISTORY_OPEN_REASON)
            return
        st = conn.state
        if (audio := body.get("audio")) is not None:
            self._take_blob(audio)
        for blob in body.get("mediaChunks") or []:
            self._take_blob(blob)
        if body.get("video") is not None:
            st.video_frames += 1
        if body.get("activityStart") is not None:
            conn.speaker.interrupt()
        if (text := body.get("text")) is not None:
            conn.speaker.interrupt()
            st.add_user_text(text)
            conn.speaker.user_turn()
        if body.get("activityEnd") is not None or body.get("audioStreamEnd"):
            label = st.take_audio()
            if label is not None:
                if conn.admitted.input_transcription:
                    conn.emit(live.input_transcription(label))
                conn.speaker.interrupt()
                conn.speaker.user_turn()

    def _take_blob(self, blob: dict[str, Any]) -> None:
        conn = self.conn
        mime = str(blob.get("mimeType") or "")
        if mime.startswith("audio/"):
            try:
                data = live.b64decode_any(blob.get("data") or "")
            except LiveMessageError:
                conn.reject(blob, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES)")
                return
            st = conn.state
            st.add_audio(len(data), M.pcm_rate(mime))
            if conn.admitted.input_transcription and conn.spec.interim_transcription:
                conn.emit(live.interim_input_transcription(f"({st.pending_audio_ms} ms of audio)"))
        else:
            conn.state.video_frames += 1

    def context_update(self, body: dict[str, Any]) -> None:
        conn = self.conn
        sysi = body.get("systemInstruction")
        if isinstance(sysi, dict):
            conn.state.system_instruction = M.content_text(sysi)
        tools = body.get("tools")
        if isinstance(tools, dict):
            conn.tools.set_tools(tools.get("tools") or [])
