"""A client that keeps sending must not hide a stall (found verifying issue #11 point 3).

Silence was measured from the *last* message that asked for a reply: a client sending a turn
every second into a stalled connection pushed the stall deadline on for ever, and the stall was
only noticed when the keepalive ping gave up (120 s instead of ``stall_timeout``). Silence now
counts from the first message asked since a frame last came (MockClock, in-memory streams).
"""

from __future__ import annotations

import trio
from session_harness import make_config, open_core

from geminid.daemon.config import UpstreamConfig
from geminid.daemon.fake import FakeOptions, Fault, text_catalogue
from geminid.daemon.fake.faults import Planned, Trigger
from geminid.daemon.upstream import BackoffPolicy


async def test_a_stall_is_noticed_at_stall_timeout_while_the_client_keeps_sending(state_dir, autojump_clock):
    up = UpstreamConfig(stall_timeout=30, keepalive_interval=30, keepalive_timeout=90)
    cfg = make_config(state_dir, backoff=BackoffPolicy(), upstream=up)
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.005,
                       faults=(Planned(Fault.stall(), Trigger("seconds", seconds=3.0)),))
    async with open_core(state_dir, cfg=cfg, fake_options=opts, memory=True) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await trio.sleep(5)  # the fake stalled at 3 s
        first_at = trio.current_time()
        n = 0
        while not rec.statuses().count("backoff") and trio.current_time() - first_at < 200:
            n += 1
            await core.say("s", f"hello {n}?")  # one turn a second, each owed a reply
            await trio.sleep(1)
        noticed = trio.current_time() - first_at
        stall = [p for p in rec.of("session.status") if p["status"] == "backoff"][0]
        assert stall["cause"] == "stall" and "while a reply was expected" in stall["reason"], stall
        assert up.stall_timeout <= noticed < up.stall_timeout + 2, noticed
