"""Pre-dialling during a goAway drain (issue #13 point 4): the next connection's TCP and
WebSocket handshake happen while the old connection drains, its setup only once the old one is
closed; a pre-dial that fails, is closed by the peer or idles too long falls back to a normal
dial; a session that ends first closes it. Against the fake, in memory (exact timing under
MockClock: a reply paced in mock seconds keeps the drain open while the pre-dial completes) or
over loopback TCP."""

from __future__ import annotations

import trio
from session_harness import TOOL_SETUP, make_config, open_core
from structlog.testing import capture_logs

from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, Fault, text_catalogue
from geminid.daemon.session.activity import Activity
from geminid.daemon.session.core import Retry, SessionCore
from geminid.daemon.session.effects import DropPreDial, PreDial
from geminid.daemon.session.predial import PREDIAL_MAX_IDLE, PreDials, predial_refusal
from geminid.daemon.session.replay import ReplayBuffer
from geminid.daemon.session.toolcalls import ToolCalls
from geminid.daemon.states import State
from geminid.daemon.upstream import (
    BackoffPolicy,
    Dial,
    Ending,
    EndingKind,
    Endpoint,
    FixedKey,
    dial_socket,
)
from geminid.daemon.upstream.backoff import RotationLimit
from geminid.protocol import live

#: One reply takes 3 chunks x 1 s (mock time): a goAway during it drains for seconds.
SLOW = FakeOptions(catalogue=text_catalogue(), reply_pace=1.0, reply_chunks=3)


def order(fake, conn: int, what: str) -> int:
    return fake.timeline.index((conn, what))


async def rotate_mid_reply(core, rec, text: str = "hello") -> None:
    """Ask, send goAway while the reply streams, wait until live again on the next connection."""
    await core.say("s", text)
    await rec.wait(lambda r: any("modelTurn" in m.get("serverContent", {}) for m in r.messages()))
    await core.fake.goaway_all(time_left=30.0)
    await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=60)


async def test_the_next_connection_is_dialled_during_the_drain_and_set_up_after_the_old_close(
    state_dir, autojump_clock
):
    async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await rotate_mid_reply(core, rec)
        fake = core.fake
        old, new = fake.accepted[0], fake.accepted[1]
        assert (old.id, new.id) == (1, 2) and len(fake.connections) == 2  # no other dial
        # The handshake of the new connection before the old one ended, its setup after it.
        assert order(fake, 2, "accepted") < order(fake, 1, "ended") < order(fake, 2, "setup")
        assert old.closed_by == "client" and old.close_code == 1000
        assert new.resumed_handle is not None and new.resumed_handle == old.handles[-1]
        await rec.wait(lambda r: r.turn_ends() == 1)
        assert "hello" in rec.texts()


async def test_over_loopback_the_rotation_uses_the_predialled_connection(state_dir):
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.05, reply_chunks=4)
    with capture_logs() as logs:
        async with open_core(state_dir, fake_options=opts) as core:
            rec = await core.open()
            await rec.wait(lambda r: "live" in r.statuses())
            await rotate_mid_reply(core, rec)
            await core.say("s", "again")
            await rec.wait(lambda r: r.turn_ends() == 2)
            fake = core.fake
            assert order(fake, 2, "accepted") < order(fake, 1, "ended") < order(fake, 2, "setup")
            assert [c.record.id for c in fake.open_sessions()] == [2] and len(fake.connections) == 2
            core.nursery.cancel_scope.cancel()
    connecting = [e for e in logs if e["event"] == "upstream.connecting"]
    assert [e["predialled"] for e in connecting] == [False, True]
    assert not [e for e in logs if e["event"] == "upstream.predial_failed"]


async def test_a_refused_predial_falls_back_to_a_normal_dial(state_dir, autojump_clock):
    with capture_logs() as logs:
        async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
            rec = await core.open()
            await rec.wait(lambda r: "live" in r.statuses())
            core.fake.refuse_next(1, status=503)  # the pre-dial's upgrade
            await rotate_mid_reply(core, rec)
            await rec.wait(lambda r: r.turn_ends() == 1)
            fake = core.fake
            assert [(c.id, c.status) for c in fake.connections] == [(1, 101), (2, 503), (3, 101)]
            # The normal dial came after the old connection ended, and resumed.
            assert order(fake, 1, "ended") < order(fake, 3, "accepted") < order(fake, 3, "setup")
            assert fake.connections[2].resumed_handle == fake.connections[0].handles[-1]
            assert "backoff" not in rec.statuses() and "hello" in rec.texts()
            core.nursery.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "upstream.predial_failed"]
    assert len(failed) == 1 and "503" in failed[0]["reason"]
    assert "test-key" not in repr(failed)


async def test_a_predial_closed_by_the_peer_before_use_is_not_used(state_dir, autojump_clock):
    with capture_logs() as logs:
        async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
            rec = await core.open()
            await rec.wait(lambda r: "live" in r.statuses())
            core.fake.script(Fault.close(1000, "idle"))  # the pre-dialled one, at its upgrade
            await rotate_mid_reply(core, rec)
            await rec.wait(lambda r: r.turn_ends() == 1)
            fake = core.fake
            assert [c.id for c in fake.accepted] == [1, 2, 3]
            assert fake.connections[1].setup is None and fake.connections[1].closed_by == "server"
            assert fake.connections[2].resumed_handle == fake.connections[0].handles[-1]
            core.nursery.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "upstream.predial_failed"]
    assert [e["reason"] for e in failed] == ["closed by the peer before use"]


async def test_a_predial_idle_too_long_is_closed_and_a_new_dial_made(state_dir, autojump_clock):
    # A BLOCKING tool call holds the rotation (no quiet point) far past PREDIAL_MAX_IDLE.
    async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "what is the weather in Paris?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()), timeout=60)
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.fake.goaway_all(time_left=120.0)
        await rec.wait(lambda r: "draining" in r.statuses())
        await trio.sleep(PREDIAL_MAX_IDLE + 5)
        fake = core.fake
        assert [c.id for c in fake.accepted] == [1, 2] and fake.connections[1].setup is None
        response = live.tool_response([live.function_response(call["id"], call["name"], {"temp": "21C"})])
        await core.registry.send("s", response)
        await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=120)
        assert [c.id for c in fake.accepted] == [1, 2, 3]
        idle = fake.connections[1]
        assert idle.setup is None and idle.closed_by == "client" and idle.close_code == 1000
        assert fake.connections[2].setup is not None


async def _draining_with_a_predial(core) -> None:
    """A live session in mid-reply gets a goAway: the next connection is handshaken (no setup)."""
    rec = await core.open()
    await rec.wait(lambda r: "live" in r.statuses())
    await core.say("s", "hello")
    await rec.wait(lambda r: any("modelTurn" in m.get("serverContent", {}) for m in r.messages()))
    await core.fake.goaway_all(time_left=30.0)
    await rec.wait(lambda r: (2, "accepted") in core.fake.timeline)


async def test_a_session_closed_during_the_drain_closes_the_predialled_socket(state_dir, autojump_clock):
    async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
        await _draining_with_a_predial(core)
        await core.registry.close("s")
        with trio.fail_after(10):
            while core.fake._conns:
                await trio.sleep(0.1)
        predialled = core.fake.connections[1]
        assert predialled.setup is None and predialled.messages == []
        assert predialled.closed_by == "client" and predialled.close_code == 1000
        assert len(core.fake.connections) == 2 and core.fake.live_connections == 0


async def test_a_daemon_stop_during_the_drain_closes_the_predialled_socket(state_dir, autojump_clock):
    async with open_core(state_dir, fake_options=SLOW, memory=True) as core:
        await _draining_with_a_predial(core)
        await core.actor("s").stop()
        with trio.fail_after(10):
            while core.fake._conns:
                await trio.sleep(0.1)
        assert core.fake.connections[1].setup is None and core.fake.connections[1].closed_by == "client"
        assert len(core.fake.connections) == 2


async def test_predial_off_dials_after_the_close(state_dir, autojump_clock):
    cfg = make_config(state_dir, upstream=UpstreamConfig(connect_timeout=5, setup_timeout=5, stall_timeout=5,
                                                         predial=False))
    async with open_core(state_dir, cfg=cfg, fake_options=SLOW, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await rotate_mid_reply(core, rec)
        assert order(core.fake, 1, "ended") < order(core.fake, 2, "accepted")


async def test_a_predialled_socket_is_no_session_for_the_quota(state_dir):
    # max_sessions 1: a connection handshaken without its setup (a pre-dial) is no session.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.005, max_sessions=1)
    async with open_core(state_dir, fake_options=opts) as core:
        ep = Endpoint.parse(core.fake.url())
        async with trio.open_nursery() as ws_nursery:
            sock = await dial_socket(ws_nursery, Dial(ep, FixedKey("test-key"), 5, 5, 1 << 20))
            rec = await core.open()
            await core.say("s", "hello")
            await rec.wait(lambda r: r.turn_ends() == 1)
            assert [c.close_code for c in core.fake.connections] == [None, None]
            assert [c.record.id for c in core.fake.open_sessions()] == [2]
            await sock.close()
            ws_nursery.cancel_scope.cancel()
        core.nursery.cancel_scope.cancel()


# -- the pure rules ---------------------------------------------------------------------------


def test_predials_ask_once_per_drain_and_only_when_the_rotation_can_go_at_once():
    p = PreDials(enabled=True)
    free = RotationLimit(per_window=2, window=60.0)
    assert p.goaway(draining=False, rotations=free, now=0.0) == []  # (not live: no drain begins)
    assert p.goaway(draining=True, rotations=free, now=0.0) == [PreDial()]
    assert p.goaway(draining=True, rotations=free, now=0.0) == []  # one at a time
    assert p.take() is True and p.take() is False
    full, _ = free.after_rotation(0.0)
    full, _ = full.after_rotation(1.0)
    assert p.goaway(draining=True, rotations=full, now=2.0) == []  # the rotation would wait
    assert p.goaway(draining=True, rotations=full, now=60.5) == [PreDial()]  # the window slid
    assert PreDials(enabled=False).goaway(draining=True, rotations=free, now=0.0) == []


def test_predials_are_dropped_by_a_wait_a_failure_or_the_end_not_by_a_dial():
    for state in (State.BACKOFF, State.FAILED, State.CLOSED):
        p = PreDials(enabled=True, pending=True)
        assert p.moved(state) == [DropPreDial(f"session {state.value}")]
        assert p.moved(state) == [] and p.take() is False
    for state in (State.RESUMING, State.CONNECTING, State.LIVE, State.DRAINING):
        p = PreDials(enabled=True, pending=True)
        assert p.moved(state) == [] and p.take() is True


def test_predial_refusal():
    assert predial_refusal(failed=None, closed=False, idle_for=0.0) is None
    assert predial_refusal(failed=None, closed=False, idle_for=PREDIAL_MAX_IDLE) is None
    assert predial_refusal(failed="HTTP 503", closed=True, idle_for=0.0) == "HTTP 503"
    assert predial_refusal(failed=None, closed=True, idle_for=0.0) == "closed by the peer before use"
    assert "idle for" in (predial_refusal(failed=None, closed=False, idle_for=PREDIAL_MAX_IDLE + 0.1) or "")


def make_core(limit: int) -> SessionCore:
    activity = Activity(ReplayBuffer(max_bytes=1_000_000, staleness=1.0), ToolCalls(), last_activity=0.0)
    return SessionCore(session=SessionConfig(), backoff=BackoffPolicy(rotation_limit=limit, rotation_window=60.0),
                       activity=activity, predial=True)


def go_live(core: SessionCore, now: float) -> bool:
    plan = core.dial(now)
    core.opened(now, now)
    core.went_live(None)
    return plan.predialled


ROTATED = Ending(EndingKind.LOCAL, reason="goAway: rotating at a quiet point")


def test_the_core_predials_a_rotation_that_can_go_at_once_and_hands_it_to_the_next_dial():
    core = make_core(limit=1)
    assert go_live(core, 0.0) is False
    _, effects = core.goaway(30.0, 5.0)
    assert PreDial() in effects
    core.conn.local_reason = ROTATED.reason
    decision = core.ended(ROTATED, 6.0, 0.5)
    assert isinstance(decision, Retry) and decision.delay == 0
    assert not [e for e in decision.effects if isinstance(e, DropPreDial)]
    assert go_live(core, 6.0) is True
    # The second rotation within the window would wait (limit 1 per 60 s): no pre-dial.
    _, effects = core.goaway(30.0, 10.0)
    assert PreDial() not in effects and State.DRAINING is core.state
    core.conn.local_reason = ROTATED.reason
    decision = core.ended(ROTATED, 11.0, 0.5)
    assert isinstance(decision, Retry) and decision.delay > 0
    assert go_live(core, 70.0) is False


def test_the_core_drops_a_predial_when_the_next_dial_must_wait():
    core = make_core(limit=6)
    go_live(core, 0.0)
    _, effects = core.goaway(30.0, 5.0)
    assert PreDial() in effects
    decision = core.ended(Ending(EndingKind.REJECTED, http_status=429, reason="quota"), 6.0, 0.5)
    assert isinstance(decision, Retry) and decision.delay > 0
    assert DropPreDial("session backoff") in decision.effects
    assert core.dial(7.0).predialled is False
