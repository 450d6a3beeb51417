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
)
from geminid.daemon.session.replay import Entry, Kind, ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.states import LocalReason
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
        if decision.effects:
            # Only resumes that keep failing before live give the handle up (never a drop of a
            # live connection, and never without a handle).
            assert not was_live and self.handle is not None
            assert any(isinstance(e, HandleDropped) and "resumes in a row failed" in e.reason
                       for e in decision.effects)
            self.handle = None
        if was_live:
            self.handle_seen = self.wall
        self.phase = "idle"

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
        self.core.goaway(time_left, self.now)
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
