"""Connection lifetime (goAway, then the cut) on trio's clock, and the concurrent-session quota."""

from __future__ import annotations

import trio
import trio.lowlevel

from geminid.daemon.fake import CANCELLED_REASON, FakeOptions, FakeUpstream, text_catalogue
from geminid.protocol import live

from .helpers import connect, connect_memory


async def _timeline(client, start):
    """(kind, seconds since start) of each message until the close, then ("close", t, code, reason)."""
    out = []
    while True:
        try:
            msg = await client.recv(limit=10_000)
        except Exception as exc:  # ConnectionClosed
            reason = exc.reason
            out.append(("close", trio.current_time() - start, reason.code, reason.reason))
            return out
        out.append((next(iter(msg)), trio.current_time() - start, msg))


async def test_goaway_then_1008_when_client_ignores_it(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue()))
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        events = await _timeline(client, start)
    goaway = [e for e in events if e[0] == "goAway"]
    assert len(goaway) == 1
    assert goaway[0][1] == 540.0 and goaway[0][2] == {"goAway": {"timeLeft": "60s"}}
    close = events[-1]
    assert close[:3] == ("close", 600.0, 1008)
    assert "client failed to close the connection after receiving a GoAway" in close[3]
    assert fake.connections[0].closed_by == "server"


async def test_millisecond_lifetime_and_goaway_capped(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), lifetime=0.05, goaway_before=60.0))
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        events = await _timeline(client, start)
    # goaway_before is capped to the lifetime: goAway at once, with all of it left
    assert events[0][0] == "goAway" and events[0][2] == {"goAway": {"timeLeft": live.format_duration(0.05)}}
    assert events[-1][:3] == ("close", 0.05, 1008)


async def test_cancelled_cut_mode_closes_1000(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), lifetime=30.0, goaway_before=5.0, cut_mode="cancelled"))
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        events = await _timeline(client, start)
    assert [e[:2] for e in events] == [("goAway", 25.0), ("close", 30.0)]
    assert events[-1][2:] == (1000, CANCELLED_REASON)


async def test_cut_without_goaway(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), lifetime=10.0, goaway=False))
    async with connect_memory(fake, nursery) as client:
        start = trio.current_time()
        await client.setup()
        events = await _timeline(client, start)
    assert [e[0] for e in events] == ["close"] and events[0][1] == 10.0


async def test_client_that_closes_after_goaway_is_not_cut(nursery, autojump_clock):
    fake = FakeUpstream(FakeOptions(catalogue=text_catalogue(), lifetime=100.0, goaway_before=10.0))
    async with connect_memory(fake, nursery) as client:
        await client.setup()
        msg = await client.recv(limit=1000)
        assert "goAway" in msg
        await client.ws.aclose(1000, "rotating")
    await trio.lowlevel.checkpoint()
    record = fake.connections[0]
    assert (record.closed_by, record.close_code, record.close_reason) == ("client", 1000, "rotating")


async def test_max_sessions_closes_1011(start_fake):
    fake = await start_fake(max_sessions=2)
    async with connect(fake) as a, connect(fake) as b:
        await a.setup()
        await b.setup()
        assert fake.live_connections == 2
        async with connect(fake) as c:
            await c.send(live.setup("models/x"))
            code, reason = await c.closed()
        assert code == 1011 and reason == "RESOURCE_EXHAUSTED: Maximum concurrent sessions"
    async with connect(fake) as d:  # room again once they are gone
        await d.setup()
