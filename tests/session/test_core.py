"""The sans-IO session core driven by events alone: no sockets, no fake, no trio.

A hypothesis state machine feeds ``SessionCore`` sequences of events (dial, setupComplete,
client turns written, model replies, resumption handles, goAway, timers, endings, wall time
passing) and checks its decisions against a small model: whether the next dial resumes, when a
goAway rotation happens, and which client messages a handle covers.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from geminid.daemon.config import SessionConfig
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.core import Failed, Retry, SessionCore, Stall
from geminid.daemon.session.effects import (
    EndConnection,
    HandleDropped,
    Persist,
    SecretAdded,
    SecretRemoved,
    Transition,
)
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.states import ALLOWED, IllegalTransition, LocalReason, State
from geminid.daemon.upstream import Action, BackoffPolicy, Ending, EndingKind
from geminid.protocol import live

TTL = 100.0


def server(obj: dict) -> live.ServerMessage:
    msg = live.parse_server_frame(json.dumps(obj))
    assert msg is not None
    return msg


def make_core(**session: float) -> SessionCore:
    buf = ReplayBuffer(max_bytes=1_000_000, staleness=1.0)
    activity = Activity(buf, ToolCalls(), last_activity=0.0)
    policy = SessionConfig(handle_ttl=session.pop("handle_ttl", TTL), goaway_margin=5.0)
    return SessionCore(session=policy, backoff=BackoffPolicy(max_attempts=10_000), activity=activity)


def turn(seq: int) -> Entry:
    message = live.client_content(f"t{seq}")
    return Entry(seq, Kind.TURN, message, live.encode(message), 0.0, True)


class CoreModel(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.core = make_core()
        self.buf = self.core.buffer
        self.now = 0.0
        self.wall = 1000.0
        self.seq = 0
        # The model.
        self.handle: str | None = None
        self.handle_seen = 0.0  # wall time the handle was issued or last used live
        self.phase = "idle"  # idle | dialled | live
        self.sent: list[int] = []  # written on this connection, not covered by a handle
        self.unsent: list[int] = []
        self.answered = 0  # replies ended on this connection, not yet matched to a handle
        self.generating = False
        self.goaway = False
        self.rotated = False
        self.state = State.CONNECTING  # the model's idea of the session state
        self.moves = 0

    def _moves(self, effects: list, *expected: State) -> list:
        """Every transition the core returns is allowed, starts where the last one ended, leads
        where the model expects, and is the last word on the state; returns the other effects."""
        moves = [e for e in effects if isinstance(e, Transition)]
        assert [m.new for m in moves] == list(expected)
        for move in moves:
            assert move.old is self.state and move.new in ALLOWED[move.old]
            assert move.status.status == move.new.value and move.log_fields()["to"] == move.new.value
            self.state = move.new
            self.moves += 1
        assert self.core.state is self.state
        return [e for e in effects if not isinstance(e, Transition)]

    # -- time ----------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.1, 1.0, 30.0, 150.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.wall += dt
        if self.phase == "live":
            self.handle_seen = self.wall  # (the shell snapshots last_alive_at while connected)
            self.core.last_alive_at = self.wall

    # -- the connection ----------------------------------------------------------------

    @precondition(lambda self: self.phase == "idle")
    @rule()
    def dial(self) -> None:
        expired = self.handle is not None and self.wall - self.handle_seen > TTL
        plan = self.core.dial(self.wall)
        assert plan.resume == (self.handle is not None and not expired)
        self._moves(plan.effects, State.RESUMING if plan.resume else State.CONNECTING)
        assert plan.effects[-1].status.cause == plan.cause and plan.effects[-1].status.attempt == plan.attempt
        if expired:
            assert HandleDropped("resumption handle expired") in plan.effects
            assert SecretRemoved(self.handle) in plan.effects
            assert plan.cause == "resumption handle expired"
            self.handle = None
        assert self.core.handle == self.handle
        self.phase = "dialled"

    @precondition(lambda self: self.phase == "dialled")
    @rule()
    def setup_complete(self) -> None:
        self.core.opened(self.now, self.wall)
        context, effects = self.core.went_live(None)
        self._moves(effects, State.LIVE)
        assert effects[0].status.context is context
        self.buf.new_connection(self.now)
        self.unsent = self.sent + self.unsent  # replayed from the cursor, in order
        self.sent = []
        self.answered = 0
        self.generating = False
        self.goaway = self.rotated = False
        self.handle_seen = self.wall
        self.phase = "live"

    @precondition(lambda self: self.phase in ("dialled", "live"))
    @rule(code=st.sampled_from([None, 1000, 1011]), local=st.booleans())
    def connection_ends(self, code: int | None, local: bool) -> None:
        ending = Ending(EndingKind.LOCAL, reason="x") if local else Ending(EndingKind.CLOSED, code=code)
        was_live = self.phase == "live"
        self.core.connection_closed(self.wall)
        decision = self.core.ended(ending, self.now, rand=0.5)
        assert isinstance(decision, Retry)
        assert decision.classified.action in (Action.RESUME_NOW, Action.RESUME_AFTER_BACKOFF)
        # A wait is announced as backoff (with its delay); an immediate re-dial moves nothing yet.
        others = self._moves(decision.effects, *([State.BACKOFF] if decision.delay > 0 else []))
        if decision.delay > 0:
            assert decision.effects[-1].status.retry_in == round(decision.delay, 3)
        if others:
            # Only resumes that keep failing before live give the handle up (never a drop of a
            # live connection, and never without a handle).
            assert not was_live and self.handle is not None
            assert any(isinstance(e, HandleDropped) and "resumes in a row failed" in e.reason
                       for e in decision.effects)
            self.handle = None
        if was_live:
            self.handle_seen = self.wall
        self.phase = "idle"

    @precondition(lambda self: self.phase != "closed")
    @rule(was_dialling=st.booleans())
    def session_closed(self, was_dialling: bool) -> None:
        """Closed by a client (whatever it was doing): terminal, nothing moves it again."""
        self._moves(self.core.closed("closed by client"), State.CLOSED)
        assert self.core.status_reason == "closed by client"
        with pytest.raises(IllegalTransition):
            self.core.dial(self.wall)
        self.phase = "closed"

    # -- client and server ---------------------------------------------------------------

    @rule()
    def client_turn(self) -> None:
        self.seq += 1
        self.buf.append(turn(self.seq))
        self.unsent.append(self.seq)

    @precondition(lambda self: self.phase == "live" and self.unsent and not self.goaway)
    @rule()
    def writer_writes(self) -> None:
        entry = self.buf.peek()
        assert entry is not None and entry.seq == self.unsent[0]
        assert not self.core.activity.holds(entry, draining=self.core.draining())
        self.buf.mark_sent()
        assert self.core.activity.written(entry, self.now)
        self.sent.append(self.unsent.pop(0))

    @precondition(lambda self: self.phase == "live" and len(self.sent) > self.answered)
    @rule(end=st.booleans())
    def model_replies(self, end: bool) -> None:
        self.core.activity.server_message(server(live.server_text("hi")))
        self.generating = True
        if end:
            self.core.activity.server_message(server(live.turn_complete()))
            self.generating = False
            self.answered += 1
        self._rotation_check()

    @precondition(lambda self: self.phase == "live" and not self.generating)
    @rule()
    def resumption_update(self) -> None:
        """The server issues resumable handles only at quiet points (no generation in flight)."""
        self.seq += 1000
        new = f"h{self.seq}"
        old = self.handle
        trimmed, effects = self.core.resumption_update(server(live.session_resumption_update(new, True)), self.wall)
        assert SecretAdded(new) in effects
        assert (SecretRemoved(old) in effects) == (old is not None)
        assert Persist(urgent=old is None) in effects
        # Coverage: everything up to the last answered message, never an unanswered one.
        covered = self.sent[: self.answered]
        assert trimmed == len(covered)
        self.sent = self.sent[self.answered:]
        self.answered = 0
        self.handle, self.handle_seen = new, self.wall
        self._rotation_check()

    @precondition(lambda self: self.phase == "live" and not self.goaway)
    @rule(time_left=st.sampled_from([0.0, 4.0, 30.0]))
    def goaway_arrives(self, time_left: float) -> None:
        _, effects = self.core.goaway(time_left, self.now)
        self._moves(effects, State.DRAINING)
        self.goaway = True
        deadline = self.now + max(0.0, time_left - min(5.0, time_left / 2))
        assert self.core.wake_at(0) == deadline
        self._rotation_check()

    @precondition(lambda self: self.phase == "live" and self.goaway)
    @rule()
    def deadline_passes(self) -> None:
        assert self.core.conn is not None and self.core.conn.deadline is not None
        self.now = max(self.now, self.core.conn.deadline)
        assert self.core.timer(self.now, stall_timeout=0) == EndConnection(LocalReason.GOAWAY_DEADLINE)

    def _rotation_check(self) -> None:
        """A drained connection rotates exactly at a quiet point: nothing generating, nothing
        unanswered, nothing written that no handle covers."""
        quiet = not self.generating and not self.sent
        rotation = self.core.rotation()
        assert (rotation is not None) == (self.goaway and quiet and not self.rotated)
        if rotation is not None:
            assert rotation == EndConnection(LocalReason.ROTATION)
            assert self.core.end_connection(rotation.reason.value)
            self.rotated = True

    @invariant()
    def buffer_holds_exactly_what_no_handle_covers(self) -> None:
        if hasattr(self, "buf"):
            assert [e.seq for e in self.buf] == self.sent + self.unsent

    @invariant()
    def a_reply_is_due_exactly_while_one_is_unanswered(self) -> None:
        if hasattr(self, "buf") and self.phase == "live":
            due = self.generating or len(self.sent) > self.answered
            assert self.core.activity.expecting_reply() == due


TestCoreModel = CoreModel.TestCase
TestCoreModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---- single decisions -------------------------------------------------------------------


def test_a_refused_handle_makes_the_next_dial_fresh():
    core = make_core()
    core.dial(0.0)
    core.opened(0.0, 0.0)
    core.resumption_update(server(live.session_resumption_update("h1", True)), 0.0)
    core.connection_closed(0.0)
    core.ended(Ending(EndingKind.CLOSED, code=1011), 1.0, rand=0.0)
    plan = core.dial(1.0)
    assert plan.resume
    decision = core.ended(Ending(EndingKind.CLOSED, code=1007, reason="bad handle"), 1.5, rand=0.0)
    assert isinstance(decision, Retry)
    assert HandleDropped("server no longer knows the resumption handle") in decision.effects
    assert core.handle is None
    plan = core.dial(2.0)
    assert not plan.resume and plan.cause == "server no longer knows the resumption handle"


def test_a_fatal_ending_fails_and_a_stall_is_decided_by_the_timer():
    core = make_core()
    core.dial(0.0)
    decision = core.ended(Ending(EndingKind.REJECTED, http_status=401), 0.5, rand=0.0)
    assert isinstance(decision, Failed) and decision.verdict.cause == "bad_key"
    core = make_core()  # a failed session is terminal (a revived one is a new actor and core)
    core.dial(1.0)
    core.opened(1.0, 1.0)
    core.buffer.new_connection(1.0)
    core.buffer.append(turn(1))
    core.activity.written(core.buffer.mark_sent(), 2.0)
    assert core.wake_at(5.0) == 7.0
    assert core.timer(6.9, 5.0) is None
    fired = core.timer(7.0, 5.0)
    assert isinstance(fired, Stall) and fired.ending.kind is EndingKind.STALL


def test_the_setup_carries_the_handle_only_on_a_resume():
    core = make_core()
    core.handle = "h"
    assert core.setup_message({"model": "m"}, resume=True) == {"setup": {"model": "m", "sessionResumption": {"handle": "h"}}}
    assert core.setup_message({"model": "m"}, resume=False) == {"setup": {"model": "m", "sessionResumption": {}}}


@pytest.mark.parametrize(("before", "after", "suspected"), [(1000, 900, False), (1000, 400, True), (None, 10, False)])
def test_a_collapsed_token_count_after_a_resume_is_suspected_context_loss(before, after, suspected):
    core = make_core()
    core.handle = "h"
    core.last_prompt_tokens = before
    core.dial(0.0)
    assert (core.usage({"promptTokenCount": after}) is not None) == suspected
    assert core.usage({"promptTokenCount": 1}) is None  # only the first count after a resume


def test_accept_queues_refuses_and_interrupts_without_io():
    from geminid.protocol.errors import LiveMessageError, ToolCallLost

    core = make_core()
    entry = core.accept(live.client_content("hello"), 1, now=0.0)
    assert entry.kind is Kind.TURN and entry.gen == -1 and [e.seq for e in core.buffer] == [1]
    assert list(core.transcript) == [{"role": "user", "text": "hello"}]
    with pytest.raises(LiveMessageError, match="no pending tool call"):
        core.accept(live.tool_response([{"id": "x", "name": "f", "response": {}}]), 2, now=0.0)
    core.tool_call(server(live.tool_call([{"id": "c1", "name": "f"}])))
    core.accept(live.client_content("never mind"), 2, now=0.0)  # interrupts: the server cancels c1
    with pytest.raises(ToolCallLost, match="cancelled"):
        core.accept(live.tool_response([{"id": "c1", "name": "f", "response": {}}]), 3, now=0.0)
    assert [e.seq for e in core.buffer] == [1, 2]
    with pytest.raises(LiveMessageError, match="setup is sent by the daemon"):
        core.accept({"setup": {"model": "models/x"}}, 3, now=0.0)


def test_the_model_reply_lands_in_the_transcript_at_its_boundary():
    core = make_core()
    core.dial(0.0)
    core.opened(0.0, 0.0)
    assert core.server_content(server(live.server_text("hel"))).started
    core.server_content(server(live.server_text("lo")))
    assert not core.transcript
    assert core.server_content(server(live.turn_complete())).boundary
    assert list(core.transcript) == [{"role": "model", "text": "hello"}]


def test_a_failure_is_the_last_transition_and_carries_its_reason():
    core = make_core()
    core.dial(0.0)
    decision = core.ended(Ending(EndingKind.REJECTED, http_status=403), 0.5, rand=0.0, summary="HTTP 403")
    assert isinstance(decision, Failed)
    (move,) = decision.effects
    assert isinstance(move, Transition) and (move.old, move.new) == (State.CONNECTING, State.FAILED)
    assert move.status.reason == decision.reason == "bad_key: HTTP 403" and move.cause == "bad_key"
    assert core.state is State.FAILED and core.status_reason == "bad_key: HTTP 403"
    with pytest.raises(IllegalTransition):
        core.closed("too late")


def refused() -> Ending:
    from geminid.daemon.upstream.endings import DialFault

    return Ending(EndingKind.NETWORK, reason="ConnectionRefusedError: refused", fault=DialFault.REFUSED)


def test_the_same_dial_fault_three_times_from_the_start_is_reported_as_misconfiguration_once():
    from geminid.daemon.session.effects import Misconfigured

    core = make_core()
    reasons, hints = [], []
    for attempt in range(5):
        core.dial(float(attempt))
        decision = core.ended(refused(), attempt + 0.1, rand=0.5, summary="network: refused")
        assert isinstance(decision, Retry) and decision.delay > 0  # still retrying on the schedule
        hints += [e for e in decision.effects if isinstance(e, Misconfigured)]
        (move,) = [e for e in decision.effects if isinstance(e, Transition)]
        reasons.append(move.status.reason)
    assert reasons[:2] == ["network: refused"] * 2
    assert all(r.startswith("endpoint_refused: ") and r.endswith("(last: network: refused)") for r in reasons[2:])
    assert [h.cause for h in hints] == ["endpoint_refused"] and hints[0].attempts == 3


def test_no_misconfiguration_once_any_dial_reached_the_server():
    core = make_core()
    core.dial(0.0)
    core.ended(Ending(EndingKind.REJECTED, http_status=503), 0.1, rand=0.5, summary="HTTP 503")
    for attempt in range(1, 5):
        core.dial(float(attempt))
        decision = core.ended(refused(), attempt + 0.1, rand=0.5, summary="network: refused")
        assert isinstance(decision, Retry)
        assert decision.effects[-1].status.reason == "network: refused"


def test_a_refreshable_credential_is_refreshed_once_per_incident_after_a_401():
    from geminid.daemon.session.effects import InvalidateCredential

    core = make_core()
    for _ in range(2):  # two incidents, each with its one refresh
        core.dial(0.0)
        first = core.ended(Ending(EndingKind.REJECTED, http_status=401), 0.1, rand=0.0, credential_refreshable=True)
        assert isinstance(first, Retry) and first.classified.cause == "credential_refresh"
        assert InvalidateCredential() in first.effects and first.delay == 0
        core.dial(0.2)
        core.opened(0.3, 0.3)  # the fresh credential worked: the incident is over
        core.ended(Ending(EndingKind.CLOSED, code=1011), 5.0, rand=0.0)
    core.dial(6.0)
    core.ended(Ending(EndingKind.REJECTED, http_status=401), 6.1, rand=0.0, credential_refreshable=True)
    core.dial(6.2)
    second = core.ended(Ending(EndingKind.REJECTED, http_status=401), 6.3, rand=0.0, credential_refreshable=True)
    assert isinstance(second, Failed) and second.verdict.cause == "bad_key"  # never twice in one incident
    core2 = make_core()
    core2.dial(0.0)
    key = core2.ended(Ending(EndingKind.REJECTED, http_status=401), 0.1, rand=0.0, credential_refreshable=False)
    assert isinstance(key, Failed) and key.verdict.cause == "bad_key"


@pytest.mark.parametrize("cut_resume", [False, True])
def test_a_fresh_start_after_a_resume_that_was_cut_after_its_setup_asks_answered_turns_again(cut_resume):
    # The 3.8-extended soak under load (seed 12002): turn 1 was answered on a connection no
    # handle covered it on; a resume got setupComplete from the server (which restores the
    # handle's conversation, from before turn 1, when it reads the setup) and was cut before the
    # daemon read it; the next resume was refused (handle expired) and the fresh start dropped
    # turn 1 as "answered": it was in no conversation. Only a resume refused outright (the
    # server restored nothing) leaves the answered turn droppable.
    core = make_core()
    buf = core.buffer
    core.dial(0.0)
    core.opened(0.0, 0.0)
    buf.new_connection(0.0, replaying=False)
    core.resumption_update(server(live.session_resumption_update("h1", True)), 0.0)
    buf.append(turn(1))
    core.activity.written(buf.mark_sent(), 0.1)
    buf.response_ended()  # answered; the handle issued after it never arrived
    core.connection_closed(0.5)
    assert isinstance(core.ended(Ending(EndingKind.CLOSED, code=1006), 0.5, rand=0.0), Retry)
    if cut_resume:
        assert core.dial(1.0).resume
        assert isinstance(core.ended(Ending(EndingKind.CLOSED, code=1006), 1.1, rand=0.0), Retry)
    assert core.dial(2.0).resume
    refused = core.ended(Ending(EndingKind.CLOSED, code=1008, reason="Requested entity was not found."), 2.1, rand=0.0)
    assert isinstance(refused, Retry) and core.handle is None
    assert not core.dial(3.0).resume
    core.opened(3.0, 3.0)
    buf.new_connection(3.0, fresh=True)
    assert [e.seq for e in buf] == ([1] if cut_resume else [])
