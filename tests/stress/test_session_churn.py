"""1,000 sessions opened and closed in rapid cycles through the real registry, against the fake
upstream over loopback TCP: afterwards no trio task, file descriptor, checkpoint file, slot or
upstream connection is left, and memory growth is reported (with a generous bound)."""

from __future__ import annotations

import os
import tracemalloc

import trio
from stress_lib import TRACEMALLOC, Stopwatch, Usage, quiet_logs, report, scaled, settle

from geminid.daemon import logsetup
from geminid.daemon.config import UpstreamConfig
from geminid.daemon.fake import FakeOptions, text_catalogue
from geminid.protocol import live

# isort: split
from session_harness import Recorder, make_config, open_core  # (on sys.path via stress_lib)

BATCH = 50
SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]


async def _cycle(core, prefix: str, n: int) -> None:
    """Open ``n`` sessions at once; every other one sends a turn and waits for the reply; then
    close them all at once (upstream closed with 1000, checkpoint deleted)."""
    recorders: dict[str, Recorder] = {}

    async def one(name: str, talk: bool) -> None:
        rec = Recorder()
        await core.registry.open(name, SETUP)
        core.registry.attach(name, rec, 0)
        recorders[name] = rec
        if talk:
            await core.registry.send(name, live.client_content(f"hello {name}"))
            await rec.wait(lambda r: r.turn_ends() == 1, timeout=30)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, f"{prefix}-{i}", i % 2 == 0)
    async with trio.open_nursery() as nursery:
        for name in recorders:
            nursery.start_soon(core.registry.close, name)
    for name, rec in recorders.items():
        assert rec.of("session.ended"), name
        core.registry.detach(name, rec)


async def test_1000_sessions_open_and_close_in_rapid_cycles(tmp_path):
    total = scaled(1000)
    state_dir = tmp_path / "state"
    cfg = make_config(
        state_dir,
        upstream=UpstreamConfig(connect_timeout=10, setup_timeout=10, stall_timeout=10, keepalive_interval=0),
    )
    # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
    # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
    opts = FakeOptions(catalogue=text_catalogue(), reply_pace=0.0005, reply_chunks=2)
    with quiet_logs():
        await _run(state_dir, cfg, opts, total)


async def _run(state_dir, cfg, opts, total: int) -> None:
    async with open_core(state_dir, cfg=cfg, fake_options=opts) as core:
        await _cycle(core, "warm", 10)  # thread pool, caches, first-use imports
        await settle(lambda: not core.registry.names(), what="warm-up slots gone")
        if TRACEMALLOC:
            tracemalloc.start()
        try:
            before = Usage.now()
            clock = Stopwatch()
            done = 0
            while done < total:
                n = min(BATCH, total - done)
                await _cycle(core, f"c{done // BATCH}", n)
                done += n
            elapsed = str(clock)
            registry, fake = core.registry, core.fake
            await settle(lambda: not registry.names(), what="every slot removed")
            await settle(lambda: fake.live_connections == 0 and not fake._conns, what="fake connections closed")
            await settle(lambda: Usage.now().tasks <= before.tasks, what="tasks back to baseline")
            await settle(lambda: Usage.now().fds <= before.fds, what="fds back to baseline")
            # Every upstream connection was accepted once per session and closed by us with 1000.
            accepted = fake.accepted
            sessions = total + 10
            assert len(accepted) == sessions, len(accepted)
            bad = [(r.id, r.closed_by, r.close_code) for r in accepted
                   if (r.closed_by, r.close_code) != ("client", 1000) or r.closed_at is None]
            assert not bad, bad[:10]
            del accepted
            after = Usage.now()
            # The fake's own records of 1,000 conversations are test bookkeeping, not daemon
            # memory: measure without them as well.
            fake.connections.clear()
            fake.conversations.clear()
            fake.handles = type(fake.handles)(fake.options.handle_ttl, fake.options.seed)
            without_fake = Usage.now()
        finally:
            tracemalloc.stop()

        report(
            f"{total} sessions opened/closed in batches of {BATCH} ({elapsed})",
            before,
            without_fake,
            with_fake_records=f"{after.blocks - before.blocks:+d} blocks, {(after.heap - before.heap) // 1024:+d} KiB heap",
            per_session=f"{(without_fake.blocks - before.blocks) / total:+.1f} blocks, "
            f"{(without_fake.heap - before.heap) / total:+.0f} B heap",
            checkpoints=f"writes {core.store.stats.writes}, deletes {core.store.stats.deletes}, "
            f"batches {core.store.stats.batches}",
            redaction=f"{len(logsetup._registry._lru)} handles still registered for redaction",
        )

        # Nothing left on disk: every checkpoint was deleted, no temp files.
        assert os.listdir(state_dir) == []
        assert core.store.stats.deletes >= total
        assert without_fake.tasks <= before.tasks and without_fake.fds <= before.fds
        assert core.metrics.crashes == 0
        # Generous sanity bounds (measured: a few hundred KiB and a few thousand blocks, flat with
        # the number of sessions, mostly trio's lazily pruned deadline heap); a leak of even a
        # few objects per session breaks the block bound at scale.
        assert without_fake.blocks - before.blocks < 20_000 + 5 * total, without_fake.blocks - before.blocks
        if TRACEMALLOC:
            bound = 2 * 1024 * 1024 + 1024 * total
            assert without_fake.heap - before.heap < bound, without_fake.heap - before.heap
