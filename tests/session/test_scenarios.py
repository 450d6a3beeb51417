"""The session core against the fake upstream: one scenario per way a connection can end.

Each test checks the outcome through the fake's own record of the conversation (its user
turns, in order, as the *current* history holds them), so a resumed conversation is told from a
fresh one, and a lost or duplicated turn shows.
"""

from __future__ import annotations

import trio
import trio.testing
from session_harness import TOOL_SETUP, conversation_turns, make_config, open_core

from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, Fault, text_catalogue
from geminid.daemon.upstream import BackoffPolicy
from geminid.protocol import live
from geminid.protocol.errors import ToolCallLost


async def test_turns_relayed_and_acknowledged_in_order(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        seqs = [await core.say("s", f"t{i}") for i in range(3)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        await rec.wait(lambda r: r.turn_ends() == 3)
        assert conversation_turns(core.fake) == [["t0", "t1", "t2"]]
        assert "turn 3:" in rec.texts()
        # Events carry strictly increasing seqs, and daemon-owned frames are not forwarded.
        event_seqs = [e.seq for e in rec.events]
        assert event_seqs == sorted(event_seqs) and len(set(event_seqs)) == len(event_seqs)
        assert not any("sessionResumptionUpdate" in m or "setupComplete" in m for m in rec.messages())


async def test_abrupt_drop_mid_stream_resumes_and_replays_exactly_once(state_dir):
    # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
    # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
    async with open_core(state_dir, fake_options=FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=4)) as core:
        rec = await core.open()
        await core.say("s", "remember: blue")
        await rec.wait(lambda r: r.turn_ends() == 1)
        # The next connection drops after the first reply chunk of the second turn.
        core.fake.script(Fault.none())  # (the connection already open is not scripted)
        await core.say("s", "what colour?")
        await rec.wait(lambda r: "turn 2" in r.texts())
        await core.fake.drop_all()
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert conversation_turns(core.fake) == [["remember: blue", "what colour?"]]
        statuses = rec.statuses()
        assert "backoff" in statuses and statuses[-1] == "live"
        live_events = [p for p in rec.of("session.status") if p["status"] == "live"]
        assert live_events[-1]["context"] == "restored"
        assert core.actor().buffer.stats.replayed >= 1


async def test_normal_lifetime_cut_with_goaway_rotates_without_loss(state_dir):
    opts = FakeOptions(catalogue=text_catalogue(), lifetime=1.5, goaway_before=1.0, reply_pace=0.01)
    async with open_core(state_dir, fake_options=opts) as core:
        rec = await core.open()
        sent = []
        for i in range(12):
            sent.append(f"turn-{i}")
            await core.say("s", sent[-1])
            await trio.sleep(0.25)
        await rec.wait(lambda r: r.turn_ends() >= len(sent))
        assert conversation_turns(core.fake) == [sent]
        accepted = core.fake.accepted
        assert len(accepted) >= 3
        # Every rotation closed the old socket itself, with 1000, before the cut.
        closed = [c for c in accepted[:-1]]
        assert all(c.close_code == 1000 and c.closed_by == "client" for c in closed), [
            (c.close_code, c.closed_by) for c in closed
        ]
        assert "draining" in rec.statuses()
        assert core.metrics.reconnects_by_cause.get("goaway_overdue", 0) == 0


async def test_outage_of_several_dials_then_recovery_keeps_conversation(state_dir):
    async with open_core(state_dir, memory=True) as core:
        rec = await core.open()
        await core.say("s", "alpha")
        await rec.wait(lambda r: r.turn_ends() == 1)
        for _ in range(3):
            core.fake.script(Fault.close(1011, "The service is currently unavailable."), after_setup=True)
        await core.fake.close_all(1011, "Internal error encountered.")
        await core.say("s", "beta")
        await rec.wait(lambda r: r.turn_ends() == 2, timeout=60)
        assert conversation_turns(core.fake) == [["alpha", "beta"]]
        assert rec.statuses().count("backoff") >= 3
        assert [p for p in rec.of("session.status") if p["status"] == "live"][-1]["context"] == "restored"


async def test_stale_handle_starts_fresh_and_announces_context_lost(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "my name is Ada")
        await rec.wait(lambda r: r.turn_ends() == 1)
        # Expire only once a handle covers the turn: before that, the fresh session would
        # (rightly) replay "my name is Ada" too, and the fresh conversation would hold it.
        actor = core.actor()
        await rec.wait(lambda r: actor.handle is not None and len(actor.buffer) == 0)
        core.fake.expire_handles()
        await core.fake.drop_all()
        await rec.wait(lambda r: r.of("session.context_lost"))
        await core.say("s", "recall")
        await rec.wait(lambda r: r.turn_ends() == 2)
        convs = conversation_turns(core.fake)
        assert convs[-1] == ["recall"]  # a fresh conversation on the server
        closes = [c.close_code for c in core.fake.accepted]
        assert 1008 in closes
        lost = [p for p in rec.of("session.status") if p.get("context") == "lost"]
        assert lost, rec.statuses()
        # Never resumed again with the stale handle: exactly one 1008 refusal.
        assert closes.count(1008) == 1


async def test_bad_key_is_fatal_without_a_retry_storm(state_dir):
    async with open_core(state_dir, fake_options=FakeOptions(catalogue=text_catalogue(), api_key="right-key"), key="wrong-key") as core:
        rec = await core.open()
        await rec.wait(lambda r: "failed" in r.statuses())
        await trio.sleep(0.5)
        assert core.fake.dials == 1
        ended = rec.of("session.ended")
        assert ended and ended[0]["reason"] == "fatal"


async def test_quota_refusal_backs_off_for_minutes(state_dir, autojump_clock):
    async with open_core(state_dir, memory=True) as core:
        core.fake.refuse_next(2, status=429)
        rec = await core.open()
        await rec.wait(lambda r: r.statuses().count("backoff") >= 1, timeout=5)
        retry = [p["retry_in"] for p in rec.of("session.status") if p["status"] == "backoff"][0]
        assert retry >= BackoffPolicy().quota_initial / 2
        start = trio.current_time()
        await rec.wait(lambda r: "live" in r.statuses(), timeout=2000)
        assert trio.current_time() - start >= BackoffPolicy().quota_initial / 2
        assert core.fake.dials == 3


async def test_stall_is_detected_and_reconnected(state_dir, autojump_clock):
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=10, keepalive_interval=0))
    async with open_core(state_dir, cfg=cfg, memory=True) as core:
        rec = await core.open()
        await core.say("s", "one")
        await rec.wait(lambda r: r.turn_ends() == 1)
        core.fake.script(Fault.none())
        await core.fake.stall_all()
        t0 = trio.current_time()
        await core.say("s", "two")
        await rec.wait(lambda r: r.turn_ends() == 2, timeout=120)
        assert trio.current_time() - t0 >= 10
        assert core.metrics.reconnects_by_cause.get("stall", 0) >= 1
        assert conversation_turns(core.fake) == [["one", "two"]]


async def test_keepalive_detects_a_silent_peer(state_dir, autojump_clock):
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=0, keepalive_interval=30, keepalive_timeout=90))
    async with open_core(state_dir, cfg=cfg, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await core.fake.stall_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=600)
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 1


async def test_tool_call_pending_during_goaway_defers_rotation(state_dir):
    async with open_core(state_dir, fake_options=FakeOptions(catalogue=text_catalogue(), reply_pace=0.01)) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "what is the weather in Paris?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.fake.goaway_all(time_left=20)
        await rec.wait(lambda r: "draining" in r.statuses())
        await trio.sleep(0.3)
        # Not rotated while the call is pending (the next connection may be pre-dialled, no setup).
        assert [c.record.id for c in core.fake.open_sessions()] == [1]
        await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {"temp": "21C"})]))
        await rec.wait(lambda r: r.turn_ends() == 1)
        await rec.wait(lambda r: r.statuses().count("live") >= 2)
        assert "21C" in rec.texts()
        assert not rec.of("session.tool_call_lost")
        first = core.fake.accepted[0]
        assert first.close_code == 1000 and first.closed_by == "client"


async def test_tool_call_lost_to_an_old_handle(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "weather in Oslo please")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.fake.drop_all()
        await rec.wait(lambda r: r.of("session.tool_call_lost"))
        assert rec.of("session.tool_call_lost")[0]["ids"] == [call["id"]]
        try:
            await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {"t": 1})]))
        except ToolCallLost as exc:
            assert call["id"] in exc.message
        else:
            raise AssertionError("a response to a lost call was accepted")
        # The turn was replayed, so the model asks again with a new id.
        await rec.wait(lambda r: sum("toolCall" in m for m in r.messages()) == 2)
        calls = [m["toolCall"]["functionCalls"][0]["id"] for m in rec.messages() if "toolCall" in m]
        assert calls[0] != calls[1]
        await core.registry.send("s", live.tool_response([live.function_response(calls[1], call["name"], {"t": 2})]))
        await rec.wait(lambda r: r.turn_ends() == 1)
        assert conversation_turns(core.fake)[-1] == ["weather in Oslo please"]


async def test_inactivity_timeout_ends_the_session(state_dir, autojump_clock):
    cfg = make_config(state_dir, session=SessionConfig(inactivity_timeout=60))
    async with open_core(state_dir, cfg=cfg, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: r.of("session.ended"), timeout=120)
        assert rec.of("session.ended")[0]["reason"] == "timeout"
        assert not (state_dir / "s.ckpt").exists()
        assert core.registry.list() == []


async def test_a_slow_tool_is_not_a_stall(state_dir, autojump_clock):
    cfg = make_config(state_dir, upstream=UpstreamConfig(stall_timeout=10, keepalive_interval=0))
    async with open_core(state_dir, cfg=cfg, memory=True) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "weather in Lima?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await trio.sleep(120)  # the tool takes two minutes; the server is rightly silent
        assert core.metrics.reconnects_by_cause.get("stall", 0) == 0
        await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {"t": "18C"})]))
        await rec.wait(lambda r: r.turn_ends() == 1)
        assert "18C" in rec.texts()
        assert rec.statuses().count("live") == 1


async def test_refused_dials_do_not_cost_the_handle(state_dir, autojump_clock):
    async with open_core(state_dir, memory=True) as core:
        rec = await core.open()
        await core.say("s", "keep me")
        await rec.wait(lambda r: r.turn_ends() == 1)
        core.fake.refuse_next(5, status=503)
        await core.fake.drop_all()
        await rec.wait(lambda r: r.statuses().count("live") >= 2, timeout=600)
        assert not rec.of("session.context_lost")
        assert [p for p in rec.of("session.status") if p["status"] == "live"][-1]["context"] == "restored"
        assert core.fake.dials >= 7


async def test_frequent_planned_rotations_never_exhaust_the_retry_budget(state_dir, autojump_clock):
    # A server that rotates every 5 s (goAway 2 s ahead): each rotation is planned and healthy,
    # so a long-lived session must never run out of retries.
    cfg = make_config(state_dir, backoff=BackoffPolicy(), session=SessionConfig(goaway_margin=0.5, inactivity_timeout=0))
    opts = FakeOptions(catalogue=text_catalogue(), lifetime=5.0, goaway_before=2.0, reply_pace=0.01)
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        sent = []
        for i in range(40):
            sent.append(f"t{i}")
            await core.say("s", sent[-1])
            await trio.sleep(5)
        await rec.wait(lambda r: r.turn_ends() >= len(sent), timeout=60)
        assert "failed" not in rec.statuses()
        assert len(core.fake.accepted) > BackoffPolicy().max_attempts + 5
        assert conversation_turns(core.fake) == [sent]


async def test_a_response_after_an_interrupting_turn_is_refused_not_fatal(state_dir):
    # The client answers a tool call after it already sent a new turn (which makes the server
    # cancel the call): the late response is refused locally instead of costing a 1007.
    async with open_core(state_dir) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "weather in Bern?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.say("s", "never mind")
        try:
            await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {})]))
        except ToolCallLost as exc:
            assert "cancelled" in exc.message
        else:
            raise AssertionError("a response to a cancelled call was accepted")
        await rec.wait(lambda r: r.turn_ends() >= 2)
        assert "failed" not in rec.statuses()
        assert rec.statuses().count("live") == 1


async def test_a_response_after_an_interrupting_utterance_is_refused(state_dir):
    # Same race with audio: the end of an utterance makes the server interrupt and cancel.
    async with open_core(state_dir) as core:
        rec = await core.open(setup=TOOL_SETUP)
        await core.say("s", "weather in Kyiv?")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        call = next(m for m in rec.messages() if "toolCall" in m)["toolCall"]["functionCalls"][0]
        await core.registry.send("s", live.realtime_audio(bytes(640)))
        await core.registry.send("s", live.audio_stream_end())
        try:
            await core.registry.send("s", live.tool_response([live.function_response(call["id"], call["name"], {})]))
        except ToolCallLost:
            pass
        else:
            raise AssertionError("a response to a cancelled call was accepted")
        await rec.wait(lambda r: r.turn_ends() >= 2)
        assert "failed" not in rec.statuses()
