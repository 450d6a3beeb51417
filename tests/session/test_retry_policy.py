"""Never give up on a link that recovers (issue #11 points 1-3), end to end under MockClock:
a link that drops every 3 s for 30 minutes, a server that sends goAway at once on every
connection, and a stall noticed at ``stall_timeout`` while a keepalive ping waits for its pong.
The WebSocket runs over in-memory streams (``memory=True``) so autojump cannot race real I/O."""

from __future__ import annotations

import trio
from session_harness import conversation_turns, make_config, open_core

from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, Fault, text_catalogue
from geminid.daemon.fake.faults import Planned, Trigger
from geminid.daemon.upstream import BackoffPolicy
from geminid.daemon.upstream.backoff import RotationLimit


def answered(rec, sent: list[str]) -> bool:
    return rec.turn_ends() >= len(sent)


async def test_thirty_minutes_of_drops_every_3_s_keep_the_session_alive_and_answering(state_dir, autojump_clock):
    # The default policy (stable_after 10 s): no connection is ever "stable", yet every one
    # reached live and resumed the conversation, which is progress.
    cfg = make_config(state_dir, backoff=BackoffPolicy(), session=SessionConfig(inactivity_timeout=0))
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.005,
                       faults=(Planned(Fault.drop(), Trigger("seconds", seconds=3.0)),))
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        start = trio.current_time()
        sent: list[str] = []
        while trio.current_time() - start < 30 * 60:
            sent.append(f"t{len(sent)}")
            await core.say("s", sent[-1])
            await trio.sleep(20)
            assert "failed" not in rec.statuses()
        await rec.wait(lambda r: answered(r, sent), timeout=120)
        assert "failed" not in rec.statuses()
        assert len(core.fake.accepted) > 400  # it really dropped every 3 s throughout
        assert conversation_turns(core.fake) == [sent]  # one conversation, each turn once
        live = [p for p in rec.of("session.status") if p["status"] == "live"]
        assert {p["context"] for p in live[1:]} == {"restored"}


async def test_a_goaway_at_once_on_every_connection_is_rate_limited_never_failed(state_dir, autojump_clock):
    # lifetime 4 s, goAway at the upgrade (timeLeft 4 s, under goaway_margin 5 s): each
    # connection rotates a moment after setup. Rotations are not failures: the session rotates
    # at most RotationLimit.per_window times per window, for ever.
    cfg = make_config(state_dir, backoff=BackoffPolicy(), session=SessionConfig(inactivity_timeout=0))
    opts = FakeOptions(catalogue=text_catalogue(), lifetime=4.0, goaway_before=4.0, reply_pace=0.005)
    limit = RotationLimit()
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        start = trio.current_time()
        sent: list[str] = []
        dial_times: list[float] = []
        seen = 0
        while trio.current_time() - start < 20 * 60:
            sent.append(f"t{len(sent)}")
            await core.say("s", sent[-1])
            for _ in range(30):
                await trio.sleep(1)
                if len(core.fake.accepted) > seen:
                    dial_times += [trio.current_time()] * (len(core.fake.accepted) - seen)
                    seen = len(core.fake.accepted)
        await rec.wait(lambda r: answered(r, sent), timeout=120)
        statuses = rec.of("session.status")
        assert "failed" not in rec.statuses()
        waits = [p for p in statuses if p["status"] == "backoff"]
        assert waits and {p["cause"] for p in waits} == {"rotation"}
        assert all(p["retry_in"] <= limit.window for p in waits)
        assert all(p["reason"].startswith("rotation rate limit") for p in waits)
        # The rate: never more than per_window dials (+1 for the first) in any window...
        for i in range(len(dial_times) - limit.per_window - 1):
            assert dial_times[i + limit.per_window + 1] - dial_times[i] >= limit.window - 2
        # ... and it kept rotating all along (not stuck in ever-growing delays).
        assert len(core.fake.accepted) >= 20 * limit.per_window
        assert conversation_turns(core.fake) == [sent]


async def test_a_stall_is_noticed_at_stall_timeout_while_the_keepalive_waits(state_dir, autojump_clock):
    # The fake stops reading and writing 3 s after each upgrade (--stall-after 3). A turn sent
    # at 5 s is owed a reply; the keepalive ping at 30 s gets no pong (timeout 90 s), but the
    # stall must be noticed at 5 + stall_timeout, not when the ping gives up.
    up = UpstreamConfig(stall_timeout=30, keepalive_interval=30, keepalive_timeout=90)
    cfg = make_config(state_dir, backoff=BackoffPolicy(), upstream=up)
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.005,
                       faults=(Planned(Fault.stall(), Trigger("seconds", seconds=3.0)),))
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        opened = trio.current_time()
        await trio.sleep(5)
        sent_at = trio.current_time()
        await core.say("s", "hello?")
        await rec.wait(lambda r: r.statuses().count("backoff") >= 1, timeout=600)
        noticed = trio.current_time() - sent_at
        stall = [p for p in rec.of("session.status") if p["status"] == "backoff"][0]
        assert stall["cause"] == "stall"
        assert up.stall_timeout <= noticed < up.stall_timeout + 1, (opened, noticed)
