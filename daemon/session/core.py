"""The sans-IO session core: the decisions of a session's connection life, events in, effects out.

In the manner of h11 and wsproto: :class:`SessionCore` holds the resumption handle, the backoff
state and the facts of the current connection, and shares the replay buffer, the tool calls and
the activity model with the shell. Its methods take one event (a dial is due, the connection went
live, a server message, a timer fired, the connection ended) and return a decision or a list of
:mod:`effects <geminid.daemon.session.effects>`. It imports neither trio nor trio_websocket nor
structlog and reads no clock: trio time (``now``) and wall time (``wall``, for the handle's age,
which must survive a restart) are passed in, so MockClock and a test's numbers drive it alike.

What is decided here and nowhere else: whether the next dial resumes (and when an expired or
refused handle makes it fresh), what a resumption update covers and whether it must be written at
once, when a goAway rotation happens (at a quiet point, or at the deadline), what the silence of
the server means (a stall), what an ending means (classify, then backoff: retry after a delay,
go fresh, or fail), and when a resumed session's token counts say its context was lost.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import attrs

from geminid.daemon.config import SessionConfig
from geminid.daemon.session import reseed
from geminid.daemon.session.activity import PROBE, Activity, ReplyFacts
from geminid.daemon.session.effects import (
    Effect,
    EndConnection,
    HandleDropped,
    InvalidateCredential,
    Misconfigured,
    Persist,
    SecretAdded,
    SecretRemoved,
    Transition,
)
from geminid.daemon.session.predial import PreDials
from geminid.daemon.session.record import PendingMessage, SessionRecord
from geminid.daemon.session.replay import Entry, Kind, classify_message
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.states import LocalReason, State, transition

# The pure upstream modules only (no link, no transport): see tests/session/test_layering_core.py.
from geminid.daemon.upstream.backoff import Backoff, BackoffPolicy, RotationLimit
from geminid.daemon.upstream.classify import Action, Context, Verdict, classify
from geminid.daemon.upstream.diagnose import DialHistory, SetupHistory
from geminid.daemon.upstream.endings import Ending, EndingKind
from geminid.protocol import live
from geminid.protocol.errors import LiveMessageError
from geminid.protocol.notifications import SessionContext, SessionStatus

#: Endings that happen before the server has read the setup (and so the handle).
_BEFORE_SETUP = frozenset({EndingKind.REJECTED, EndingKind.NETWORK, EndingKind.CONNECT_TIMEOUT})


@attrs.define
class Conn:
    """Facts about the current connection attempt, for classification and the timers."""

    resumed: bool
    attempt: int
    live_at: float | None = None
    goaway_seen: bool = False
    #: When the goAway rotation must happen at the latest (trio time).
    deadline: float | None = None
    #: Set when we decided to end it ourselves (rotation, close, shutdown): the reason's text.
    local_reason: str | None = None
    first_usage_checked: bool = False
    #: Some serverContent or toolCall arrived on this connection.
    content_seen: bool = False


@attrs.frozen
class DialPlan:
    """The next dial: resume with the handle or start fresh; ``cause`` for the status."""

    resume: bool
    attempt: int
    cause: str
    effects: list[Effect]
    #: Use the connection pre-dialled during the goAway drain (:mod:`.predial`), if it is
    #: still good (``predial_refusal``); else dial as usual.
    predialled: bool = False


@attrs.frozen
class Retry:
    """Dial again after ``delay`` seconds (0: at once). ``effects`` end with the move to
    ``backoff`` when there is a wait."""

    classified: Verdict
    delay: float
    live_for: float | None
    effects: list[Effect]


@attrs.frozen
class Failed:
    """Give up: the session fails with ``verdict`` (``note`` replaces the ending's summary as
    the reason). ``classified`` is what the ending itself was classified as."""

    classified: Verdict
    verdict: Verdict
    live_for: float | None
    note: str | None = None
    #: The failure in words (the status's and ``session.failed``'s reason).
    reason: str = ""
    effects: list[Effect] = attrs.Factory(list)


@attrs.frozen
class Stall:
    """The server fell silent while it owed us frames."""

    ending: Ending


@attrs.frozen
class Probe:
    """A reply is overdue, but the model may have declined the input: ping now, and tell
    :meth:`Activity.pong` when the pong comes (none by the stall deadline: a stall)."""


class SessionCore:
    """Connection-life decisions of one session (see the module docstring)."""

    def __init__(self, *, session: SessionConfig, backoff: BackoffPolicy, activity: Activity,
                 transparent: bool = False, predial: bool = False) -> None:
        self.policy = session
        self.backoff_policy = backoff
        self.backoff = Backoff(backoff)
        #: goAway rotations are not failures; this bounds how often a server can make us rotate.
        self.rotations = RotationLimit(per_window=backoff.rotation_limit, window=backoff.rotation_window)
        self.activity = activity
        self.buffer = activity.buffer
        self.tools = activity.tools
        self.transparent = transparent
        self.predials = PreDials(enabled=predial)
        self.handle: str | None = None
        #: Wall-clock seconds: when the handle was issued, and when we were last connected.
        self.handle_issued_at: float | None = None
        self.last_alive_at = 0.0
        self.last_prompt_tokens: int | None = None
        #: Why the context was lost, until the next live connection announces it.
        self.context_lost_pending: str | None = None
        self.conn: Conn | None = None
        #: The session state machine (:mod:`geminid.daemon.states`): the core decides every move.
        self.state = State.CONNECTING
        #: The last status's reason (or cause), for summaries and refusals.
        self.status_reason: str | None = None
        #: Dial failures since the session started, as far as they bear on the endpoint.
        self.history = DialHistory()
        self._misconfigured_said = False
        #: The credential was already refreshed after a 401 in this incident (until live again).
        self._credential_refreshed = False
        self._attempt = 0
        self._fresh_reason: str | None = None
        #: The conversation's tail, for re-seeding a fresh session and for the checkpoint.
        self.transcript: collections.deque[dict[str, Any]] = collections.deque(maxlen=session.transcript_tail)
        self._model_text: list[str] = []
        self._audio_since_turn = False
        self._model = ""
        self._seed_setup: dict[str, Any] = {}
        self.setup_history = SetupHistory()

    # -- the state machine ---------------------------------------------------------------

    def _to(self, new: State, *, cause: str, **fields: Any) -> list[Effect]:
        """Move to ``new`` (refused by :func:`~geminid.daemon.states.transition` if not allowed).
        Staying put is no move, except a re-dial (each dial is announced)."""
        if new is self.state and new not in (State.CONNECTING, State.RESUMING):
            return []
        old = self.state
        self.state = transition(old, new)
        note = SessionStatus(status=new.value, cause=cause, **fields)
        self.status_reason = note.reason or cause
        return [*self.predials.moved(new), Transition(old, new, note)]

    def closed(self, reason: str) -> list[Effect]:
        """The session is closed for good (by a client, by inactivity)."""
        return self._to(State.CLOSED, cause="closed", reason=reason)

    # -- the checkpoint record -------------------------------------------------------------

    def record(
        self, session: str, setup: dict[str, Any], *, created_at: float, seq_reserved: int,
        event_reserved: int, reconnects: int, failed: str | None,
    ) -> SessionRecord:
        """What a checkpoint holds: the core's part, plus the shell's counters."""
        return SessionRecord(
            session=session, setup=setup, handle=self.handle, handle_issued_at=self.handle_issued_at,
            last_alive_at=self.last_alive_at, created_at=created_at, seq_reserved=seq_reserved,
            event_reserved=event_reserved,
            pending=tuple(PendingMessage(e.seq, e.message) for e in self.buffer.durable_entries()),
            pending_tools=tuple(self.tools.open_ids()), lost_tools=tuple(self.tools.lost),
            transcript=tuple(self.transcript), reconnects=reconnects, context_lost=self.context_lost_pending,
            failed=failed,
        )

    def restore(self, r: SessionRecord, now: float) -> list[Effect]:
        """Rebuild the core's part from a validated record."""
        self.handle, self.handle_issued_at, self.last_alive_at = r.handle, r.handle_issued_at, r.last_alive_at
        for item in r.pending:
            rkind, elicits = classify_message(next(iter(item.message)), item.message)
            self.buffer.append(Entry(item.seq, rkind, item.message, live.encode(item.message), now, elicits))
        # Tool calls open at the crash are lost on the resume (announced when live).
        self.tools.restore(r.pending_tools, r.lost_tools)
        self.transcript.extend(r.transcript)
        self.context_lost_pending = r.context_lost
        if not self.handle and self.transcript:
            self.context_lost_pending = self.context_lost_pending or "no resumption handle was saved"
        if self.handle:  # resumed without the index history of the daemon before the restart
            self.buffer.consumed.unknown_start()
        return [SecretAdded(self.handle)] if self.handle else []

    # -- client messages -------------------------------------------------------------------

    def accept(self, message: dict[str, Any], seq: int, now: float) -> Entry:
        """Validate and queue one client message as ``seq``; raises (nothing queued) if the
        server would refuse it: a bad message, a setup, a response to no pending call, a full
        buffer. A durable entry is held back (gen -1) until its checkpoint is on disk."""
        kind, canonical = live.validate_client_message(message, transparent_allowed=False)
        if kind == "setup":
            raise LiveMessageError(
                "setup is sent by the daemon; use session.open to configure a session", path="setup"
            )
        rkind, elicits = classify_message(kind, canonical)
        if rkind is Kind.TOOL_RESPONSE:
            self.tools.check_responses(canonical["toolResponse"].get("functionResponses", []), self._model)
        entry = Entry(seq, rkind, canonical, live.encode(canonical), now, elicits, gen=-1 if rkind.durable else 0)
        if rkind is Kind.AUDIO:
            self.buffer.drop_sent_stale_audio(now)
        self.buffer.append(entry)  # may raise BufferFull (nothing consumed, seq not used)
        self.activity.touch(now)
        interrupting_end = False  # an audioStreamEnd/activityEnd closing an utterance
        _tool_bookkeeping(self.tools, entry, self._model)
        if text := user_text(canonical):
            self.transcript.append({"role": "user", "text": text})
        if rkind is Kind.AUDIO:
            self._audio_since_turn = True
        elif elicits:
            interrupting_end = self._audio_since_turn
            self._audio_since_turn = False
        if self.tools.pending and (interrupts(canonical) or (elicits and interrupting_end)):
            self.tools.interrupted()  # the server cancels pending BLOCKING calls (ToolCalls.interrupted)
        return entry

    # -- server messages -------------------------------------------------------------------

    def server_content(self, msg: live.ServerMessage) -> ReplyFacts:
        """serverContent: the reply model, the transcript, the end of a tool round trip."""
        if self.conn is not None:
            self.conn.content_seen = True
        text = msg.text or msg.output_transcription
        if text:
            self._model_text.append(text)
        facts = self.activity.server_message(msg)
        if facts.boundary:
            # The tool round trip is over once the response that consumed it ends.
            self.tools.reply_ended()
            if self._model_text:
                self.transcript.append({"role": "model", "text": "".join(self._model_text)})
                self._model_text = []
        return facts

    def tool_call(self, msg: live.ServerMessage) -> None:
        self.tools.called(msg.function_calls)  # first: the activity model asks what kind they are
        self.activity.server_message(msg)

    def reconcile_tool_calls(self) -> tuple[list[str], int]:
        """A new connection: every open call is lost (``ToolCalls.connection_lost``), its turn is
        replayed; queued responses to lost calls are dropped. Returns the ids, the drop count."""
        queued = [i for e in self.buffer if e.kind is Kind.TOOL_RESPONSE for i in response_ids(e.message)]
        lost = self.tools.connection_lost(queued)
        if not lost:
            return [], 0
        return lost, len(self.buffer.remove_tool_responses(lost))

    # -- the handle ------------------------------------------------------------------------

    def handle_expired(self, wall: float) -> bool:
        seen = max(self.handle_issued_at or 0.0, self.last_alive_at)
        return wall - seen > self.policy.handle_ttl

    def drop_handle(self, reason: str) -> list[Effect]:
        effects: list[Effect] = [SecretRemoved(self.handle)] if self.handle else []
        self.handle = None
        self.handle_issued_at = None
        self.last_prompt_tokens = None  # the next conversation's counts start from scratch
        self.context_lost_pending = reason
        return [*effects, HandleDropped(reason), Persist()]

    def resumption_update(self, msg: live.ServerMessage, wall: float) -> tuple[int, list[Effect]]:
        """A sessionResumptionUpdate: keep the new handle and trim what it covers.

        Returns the number of buffered messages trimmed and the effects. ``resumable: false``
        (sent while generating) keeps the last good handle.
        """
        if not (msg.resumable and msg.new_handle):
            self.buffer.index_seen(msg.last_consumed_index if self.transparent else None)  # no trim
            return 0, []
        if (self.activity.in_response or self.tools.open) and not self.transparent:
            return 0, []  # mid-interaction or a tool round trip open: keep the last quiet handle
        old = self.handle
        self.handle = msg.new_handle
        self.handle_issued_at = self.last_alive_at = wall
        effects: list[Effect] = [SecretAdded(self.handle)]
        if old and old != self.handle:
            effects.append(SecretRemoved(old))
        trimmed = self.buffer.covered_by_handle(
            msg.last_consumed_index if self.transparent else None, transparent=self.transparent
        )
        # The first handle of a conversation is written at once; later ones lazily.
        effects.append(Persist(urgent=old is None))
        return trimmed, effects

    # -- dialling --------------------------------------------------------------------------

    def dial(self, wall: float) -> DialPlan:
        """A dial is due: resume if there is a live handle, else fresh."""
        effects: list[Effect] = []
        resume = self.handle is not None
        if resume and self.handle_expired(wall):
            self._fresh_reason = "resumption handle expired"
            effects = self.drop_handle(self._fresh_reason)
            resume = False
        self._attempt += 1
        self.conn = Conn(resumed=resume, attempt=self._attempt)
        cause = self._fresh_reason or "dial"
        self._fresh_reason = None
        effects += self._to(State.RESUMING if resume else State.CONNECTING, cause=cause, attempt=self._attempt)
        return DialPlan(resume, self._attempt, cause, effects, predialled=self.predials.take())

    def setup_message(self, setup: dict[str, object], *, resume: bool) -> dict[str, object]:
        """The setup of the next dial: the session's own plus the daemon-owned resumption."""
        self._model = str(setup.get("model") or "")
        self.activity.declare(setup)
        body = self._seed_setup = reseed.seeded_setup(dict(setup)) if not resume and self._seed_turns() else dict(setup)
        resumption: dict[str, object] = {"handle": self.handle} if resume else {}
        if self.transparent:
            resumption["transparent"] = True
        body["sessionResumption"] = resumption
        return {"setup": body}

    def _seed_turns(self) -> list[dict[str, object]]:
        conn = self.conn
        if conn is None or conn.resumed or not self.policy.reseed or self.context_lost_pending is None:
            return []
        return reseed.seed_turns(self.transcript, replayed=(user_text(e.message) for e in self.buffer.unanswered()))

    def seed_message(self) -> dict[str, object] | None:
        """Optionally re-seed a fresh session with the saved transcript (:mod:`.reseed`)."""
        turns = self._seed_turns()
        return reseed.seed_message(turns, self._seed_setup) if turns else None

    def opened(self, now: float, wall: float) -> None:
        """setupComplete: the connection is live."""
        assert self.conn is not None
        self.conn.live_at = now
        self.last_alive_at = wall
        self._credential_refreshed = False  # the incident is over
        self.activity.connection_opened(now)

    def went_live(self, downtime_ms: float | None) -> tuple[SessionContext, list[Effect]]:
        """Announce the live connection: what it says about the conversation, and the move."""
        conn = self.conn
        assert conn is not None
        if conn.resumed:
            context = SessionContext.RESTORED
        elif self.context_lost_pending is not None:
            context = SessionContext.LOST
        else:
            context = SessionContext.FRESH
        return context, self._to(
            State.LIVE, cause="setup_complete", attempt=conn.attempt, context=context, downtime_ms=downtime_ms
        )

    def connection_closed(self, wall: float) -> None:
        if self.conn is not None and self.conn.live_at is not None:
            self.last_alive_at = wall
        self.activity.connection_closed()

    # -- while live ------------------------------------------------------------------------

    def end_connection(self, reason: str) -> bool:
        """We end the current connection ourselves; False if it already has a reason."""
        if self.conn is None or self.conn.local_reason is not None:
            return False
        self.conn.local_reason = reason
        return True

    def goaway(self, time_left: float | None, now: float) -> tuple[float, list[Effect]]:
        """The server will close: rotate at the next quiet point, at the latest by the deadline
        (the time left minus a margin, at most half of it). Returns the seconds left and the
        move to ``draining`` (if live), and a pre-dial of the next connection (:mod:`.predial`)."""
        assert self.conn is not None
        left = time_left if time_left is not None else 0.0
        self.conn.goaway_seen = True
        margin = min(self.policy.goaway_margin, left / 2)
        self.conn.deadline = now + max(0.0, left - margin)
        effects = self._to(State.DRAINING, cause="goaway", time_left=left) if self.state is State.LIVE else []
        return left, [*effects, *self.predials.goaway(draining=bool(effects), rotations=self.rotations, now=now)]

    def rotation(self) -> EndConnection | None:
        """After a server message: a drained connection rotates at the first quiet point."""
        conn = self.conn
        if conn is not None and conn.goaway_seen and conn.local_reason is None and self.activity.quiet():
            return EndConnection(LocalReason.ROTATION)
        return None

    def draining(self) -> bool:
        return self.conn is not None and self.conn.goaway_seen

    def wake_at(self, stall_timeout: float) -> float:
        """The earliest deadline the timers must wake for (goAway, stall), or inf."""
        wake = math.inf
        if self.conn is not None and self.conn.deadline is not None:
            wake = self.conn.deadline
        stall_at = self.activity.stall_at(stall_timeout)
        if stall_at is not None:
            wake = min(wake, stall_at)
        return wake

    def timer(self, now: float, stall_timeout: float) -> EndConnection | Stall | Probe | None:
        """The timers woke at ``now``: the goAway deadline passed, the server stalled, or a probe is due."""
        conn = self.conn
        if conn is not None and conn.deadline is not None and now >= conn.deadline:
            return EndConnection(LocalReason.GOAWAY_DEADLINE)
        due = self.activity.overdue(now, stall_timeout)  # None, PROBE, or why it is a stall
        if due is not None:
            return Probe() if due is PROBE else Stall(Ending(EndingKind.STALL, reason=due))
        return None

    def usage(self, usage: dict[str, object]) -> str | None:
        """A resumed session whose prompt token count collapses has lost its context even
        though the server accepted the handle. Returns the suspected reason, or None."""
        prompt = usage.get("promptTokenCount")
        conn = self.conn
        if not isinstance(prompt, int) or conn is None:
            return None
        first = conn.resumed and not conn.first_usage_checked
        suspected = _collapsed(self.last_prompt_tokens, prompt) if first else None
        conn.first_usage_checked = True
        self.last_prompt_tokens = prompt
        return suspected

    # -- the end of a connection -----------------------------------------------------------

    def ended(
        self, ending: Ending, now: float, rand: float, *, summary: str | None = None,
        credential_refreshable: bool = False,
    ) -> Retry | Failed:
        """What an ending means: classify it, then ask the backoff (retry, fresh, or fail).
        ``summary``: the ending in a few redacted words (the shell's, as redaction is the log's
        business). ``credential_refreshable``: a 401 retries once per incident, never twice."""
        conn = self.conn
        assert conn is not None
        self.conn = None
        if conn.live_at is not None:
            self._attempt = 0
        live_for = (now - conn.live_at) if conn.live_at is not None else None
        summary = summary if summary is not None else f"{ending.kind.value}: {ending.reason}"[:160]
        verdict = classify(
            ending,
            Context(
                handle_sent=conn.resumed, goaway_seen=conn.goaway_seen, reached_live=conn.live_at is not None,
                credential_refreshable=credential_refreshable and not self._credential_refreshed,
            ),
        )
        if _may_have_restored(conn, ending, verdict):
            self.buffer.resume_tried()
        self.history = self.history.after(ending)
        self.setup_history = self.setup_history.after(ending, content_seen=conn.content_seen)
        if (refused := self.setup_history.refused()) is not None:
            return self._failed(verdict, Verdict(Action.FATAL, "invalid_config"), live_for, refused, summary)
        # A dial refused before the setup was read (HTTP 429/503, TCP, handshake) says nothing
        # about the handle: only a failure after the setup counts as a failed resume.
        handle_judged = conn.resumed and ending.kind not in _BEFORE_SETUP
        rotation = conn.goaway_seen and live_for is not None and verdict.action is Action.RESUME_NOW
        self.backoff, self.rotations, delay = next_wait(
            self.backoff, self.rotations, verdict.action, live_for, rotation=rotation, resumed=handle_judged,
            now=now, rand=rand,
        )
        if verdict.action is Action.FATAL:
            return self._failed(verdict, verdict, live_for, None, summary)
        if delay is None:
            return self._failed(
                verdict, Verdict(verdict.action, "retry_budget_exhausted"), live_for,
                f"gave up after {self.backoff.spent - 1} attempts; last: {verdict.cause}", summary,
            )
        effects: list[Effect] = []
        if verdict.cause == "credential_refresh":
            self._credential_refreshed = True
            effects.append(InvalidateCredential())
        if self.handle is not None and (verdict.action is Action.FRESH_SESSION or self.backoff.must_go_fresh()):
            self._fresh_reason = (
                "server no longer knows the resumption handle"
                if verdict.action is Action.FRESH_SESSION
                else f"{self.backoff.failed_resumes} resumes in a row failed"
            )
            effects += self.drop_handle(self._fresh_reason)
            self.backoff = attrs.evolve(self.backoff, failed_resumes=0)
        if delay > 0:
            reason = self.rotations.describe() if rotation else summary
            suspicion = self.history.suspicion()
            if suspicion is not None:
                # The status says what is probably wrong instead of "network" every 10 s.
                reason = f"{suspicion.cause}: {suspicion.reason} (last: {summary})"
                if not self._misconfigured_said:
                    self._misconfigured_said = True
                    effects.append(Misconfigured(suspicion.cause, suspicion.reason, suspicion.attempts))
            effects += self._to(
                State.BACKOFF, cause=verdict.cause, attempt=self.backoff.attempt, retry_in=round(delay, 3),
                reason=reason,
            )
        return Retry(verdict, delay, live_for, effects)

    def _failed(
        self, classified: Verdict, verdict: Verdict, live_for: float | None, note: str | None, summary: str
    ) -> Failed:
        reason = note or f"{verdict.cause}: {summary}"
        effects = self._to(State.FAILED, cause=verdict.cause, reason=reason)
        return Failed(classified, verdict, live_for, note=note, reason=reason, effects=effects)


def _collapsed(before: int | None, prompt: int) -> str | None:
    """The first prompt token count after a resume fell below half the last one: suspected."""
    if before and prompt < before // 2:
        return f"prompt tokens fell from {before} to {prompt} after resuming"
    return None


def _may_have_restored(conn: Conn, ending: Ending, verdict: Verdict) -> bool:
    """A resume that ended before it went live, after its setup may have been read: the server
    restores the handle's conversation then (ReplayBuffer.resume_tried). Not a dial that never
    reached the server, nor one whose handle was refused (nothing was restored)."""
    return (
        conn.resumed and conn.live_at is None and ending.fault is None
        and ending.kind not in (EndingKind.REJECTED, EndingKind.CONNECT_TIMEOUT)
        and verdict.action is not Action.FRESH_SESSION
    )


def _tool_bookkeeping(tools: ToolCalls, entry: Entry, model: str) -> None:
    """What an accepted tool response or context update changes in the tool calls."""
    if entry.kind is Kind.TOOL_RESPONSE:
        responses = entry.message["toolResponse"].get("functionResponses", [])
        entry.replies_owed, entry.silent = tools.responded(responses)
    elif entry.kind is Kind.CONTEXT:
        declared = (entry.message["contextUpdate"].get("tools") or {}).get("tools")
        if declared is not None:
            tools.redeclare(model, declared)


def next_wait(
    backoff: Backoff, rotations: RotationLimit, action: Action, live_for: float | None, *, rotation: bool,
    resumed: bool, now: float, rand: float,
) -> tuple[Backoff, RotationLimit, float | None]:
    """The wait before the next dial (None: give up), and the new retry states.

    A goAway rotation (ours, or the server's announced cut) is planned by the server: never a
    failure, however soon it came; only the rotation rate limit can make it wait. Any other
    ending of a connection that reached live is progress: it refunds the failure budget (the
    delay still grows for connections that die right after setup).
    """
    if rotation and live_for is not None:
        rotations, delay = rotations.after_rotation(now)
        return backoff.after_rotation(live_for=live_for), rotations, delay
    backoff, wait = backoff.after_ending(
        action, live_for=live_for, resumed=resumed, rand=rand, progress=live_for is not None
    )
    return backoff, rotations, wait


def response_ids(canonical: dict[str, Any]) -> list[str | None]:
    return [r.get("id") for r in canonical["toolResponse"].get("functionResponses", [])]


def interrupts(canonical: dict[str, Any]) -> bool:
    """Input that makes the server interrupt the model (and cancel its pending tool calls)."""
    if "clientContent" in canonical:
        return True
    body = canonical.get("realtimeInput") or {}
    return "text" in body or "activityStart" in body


def user_text(canonical: dict[str, Any]) -> str:
    """What the user said in a client message, for the transcript: a turn's text parts, or
    realtime text (how 3.1 takes the conversation after its initial history)."""
    if "clientContent" in canonical:
        return content_text(canonical["clientContent"].get("turns", []))
    text = (canonical.get("realtimeInput") or {}).get("text")
    return text if isinstance(text, str) else ""


def content_text(turns: list[dict[str, Any]]) -> str:
    out = []
    for turn in turns:
        for part in turn.get("parts", []) or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return "".join(out)
