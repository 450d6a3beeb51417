"""Transparent replay through the daemon against the fake, for every index convention.

The fake names ``lastConsumedClientMessageIndex`` 0- or 1-based, per connection or per session
(``FakeOptions.consumed_index``); the daemon is not told which (``auto``) and must detect it.
Turns and audio chunks are sent while connections are dropped: the model must hear every turn
once and count every audio chunk once (0 lost, 0 duplicated). (The fake's ``transparent`` option puts the index on the Developer
API path, which the harness dials; the Vertex path emits the same index.)
"""

from __future__ import annotations

import pytest
import trio
from session_harness import conversation_turns, make_config, open_core

from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, text_catalogue
from geminid.daemon.session.consumed import CONVENTIONS
from geminid.protocol import live


async def run_with_drops(state_dir, convention: str, configured: str = "auto") -> tuple[bool, bool, bool]:
    """Returns (every turn heard once, in order; every audio chunk counted once; every drop
    redialled)."""
    cfg = make_config(
        state_dir,
        upstream=UpstreamConfig(transparent=True, stall_timeout=5, consumed_index=configured),
        session=SessionConfig(inactivity_timeout=0, audio_staleness=60.0),
    )
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.002, consumed_index=convention,
                       transparent=True)
    async with open_core(state_dir, cfg=cfg, fake_options=opts) as core:
        rec = await core.open()
        sent: list[str] = []
        chunks = 0
        for round_ in range(6):
            for i in range(3):
                await core.registry.send("s", live.realtime_audio(b"\0\0" * 160))
                chunks += 1
                text = f"r{round_} t{i}"
                await core.say("s", text)
                sent.append(text)
            # Quiet: every reply ended (the last handle covers everything written).
            n = len(sent)
            await rec.wait(lambda r, n=n: r.turn_ends() >= n)
            await trio.sleep(0.05)
            await core.fake.drop_all()
        # (A lost turn is never answered: wait for the ones heard, then compare.)
        with trio.move_on_after(10):
            await rec.wait(lambda r: r.turn_ends() >= len(sent), timeout=30)
        await trio.sleep(0.1)
        (conv,) = core.fake.conversations.values()
        return (conversation_turns(core.fake) == [sent], conv.state.audio_chunks == chunks,
                len(core.fake.accepted) >= 6)


@pytest.mark.parametrize("convention", CONVENTIONS)
async def test_drops_at_quiet_points_lose_and_duplicate_nothing(state_dir, convention):
    """Auto detection under every convention: the replay is exact (a wrong base would lose or
    duplicate one message per trim, a wrong scope would trim too much after a resume)."""
    assert await run_with_drops(state_dir, convention) == (True, True, True)


@pytest.mark.parametrize("convention", CONVENTIONS)
async def test_a_configured_convention_is_exact(state_dir, convention):
    """``upstream.consumed_index`` set to the server's convention: the one reading, exact."""
    assert await run_with_drops(state_dir, convention, configured=convention) == (True, True, True)


@pytest.mark.parametrize(("server", "configured"), [("1-connection", "0-connection"),
                                                     ("0-session", "0-connection")])
async def test_a_wrongly_configured_convention_loses_or_duplicates(state_dir, server, configured):
    """The harness sees a wrong reading (so the tests above can fail): trusted alone, 0-based per
    connection fits neither a 1-based nor a session-scoped server's updates, the buffer is never
    trimmed and every reconnect replays what the server already holds (measured: turns, audio
    and redials all off for both)."""
    assert await run_with_drops(state_dir, server, configured=configured) != (True, True, True)


@pytest.mark.parametrize("convention", CONVENTIONS)
async def test_audio_heard_during_the_first_reply_is_not_replayed(state_dir, convention):
    """The first handle of a session comes at the end of its first reply, with audio written
    while the reply streamed: the index then names everything (turn and chunk) consumed, but
    the reply that ended proves only the turn, so 0- and 1-based readings both fit it. A drop
    right after must not replay the chunk into the resumed state (a duplicate); the base is
    settled by the updates that came before (resumable: false, sent while the model spoke)."""
    cfg = make_config(
        state_dir,
        upstream=UpstreamConfig(transparent=True, stall_timeout=5),
        session=SessionConfig(inactivity_timeout=0, audio_staleness=60.0),
    )
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.02, reply_chunks=4,
                       consumed_index=convention, transparent=True)
    async with open_core(state_dir, cfg=cfg, fake_options=opts) as core:
        rec = await core.open()
        await core.say("s", "first turn")
        await rec.wait(lambda r: any("serverContent" in m for m in r.messages()))
        await core.registry.send("s", live.realtime_audio(b"\0\0" * 160))
        await rec.wait(lambda r: r.turn_ends() >= 1)
        # The handle issued at the reply's end reached the daemon: drop now.
        first = core.fake.accepted[0]
        await rec.wait(lambda r: first.handles and core.actor("s").core.handle == first.handles[-1])
        await core.fake.drop_all()
        await rec.wait(lambda r: len(core.fake.accepted) >= 2 and r.statuses()[-1] == "live")
        await core.say("s", "second turn")
        await rec.wait(lambda r: r.turn_ends() >= 2)
        await trio.sleep(0.05)
        (conv,) = core.fake.conversations.values()
        assert conversation_turns(core.fake) == [["first turn", "second turn"]]
        assert conv.state.audio_chunks == 1
