""""replayed" has one owner (the replay buffer's stats; the daemon metric mirrors it) and
counts only what a reconnect sends again, never the first connection's sends."""

from __future__ import annotations

from session_harness import open_core


async def test_a_first_connection_replays_nothing_and_a_drop_mid_reply_replays_the_turn(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "one")  # queued before live or right after: sent, not replayed
        await rec.wait(lambda r: r.turn_ends() == 1)
        actor = core.actor()
        assert actor.buffer.stats.replayed == 0 and core.metrics.replayed == 0
        await core.fake.stall_all()  # the next reply never ends, so no handle covers the turn
        await core.say("s", "two")
        await rec.wait(lambda r: len(actor.buffer) >= 1 and actor.buffer.cursor >= 1)
        await core.fake.drop_all()
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert actor.buffer.stats.replayed >= 1
        assert core.metrics.replayed == actor.buffer.stats.replayed
        core.nursery.cancel_scope.cancel()
