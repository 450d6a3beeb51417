"""A session with a large state survives a restart: a long transcript tail and a replay buffer
filled close to its byte limit with turns the server never consumed (the fake is stalled), all
checkpointed, then restored by a new registry from ``store.load_all()``. The restored session
resumes the same conversation and replays every pending turn exactly once, in order; the size of
the checkpoint is reported."""

from __future__ import annotations

from pathlib import Path

import trio
from stress_lib import Stopwatch, quiet_logs, scaled, settle

from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.config import SessionConfig, UpstreamConfig
from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import SessionRegistry, start_core
from geminid.daemon.states import State
from geminid.daemon.upstream import Dial, Endpoint, FixedKey
from geminid.protocol import live

# isort: split
from session_harness import TEXT_SETUP, Recorder, make_config  # (on sys.path via stress_lib)

TURN_BYTES = 8 * 1024


async def _start_registry(nursery: trio.Nursery, cfg, fake: FakeUpstream, records: dict) -> SessionRegistry:
    dial = Dial(Endpoint.parse(fake.url()), FixedKey("k"), 10, 10, cfg.upstream.max_message_size)
    return await start_core(nursery, cfg, dial, Metrics(), upstream_kind="fake", records=records)


async def test_large_state_checkpointed_and_restored_replays_every_turn_once(tmp_path: Path):
    with quiet_logs():
        await _run(tmp_path)


async def _run(tmp_path: Path) -> None:
    answered = scaled(150)  # turns answered before the stall: the transcript
    limit = scaled(2 * 1024 * 1024, minimum=64 * 1024)  # replay buffer bytes
    state_dir = tmp_path / "state"
    cfg = make_config(
        state_dir,
        # No stall detection and no pings: the stalled fake must keep the turns unconsumed.
        upstream=UpstreamConfig(connect_timeout=10, setup_timeout=10, stall_timeout=0, keepalive_interval=0),
        session=SessionConfig(
            inactivity_timeout=0, transcript_tail=4 * answered + 64, replay_buffer_bytes=limit, event_ring=256
        ),
    )
    clock = Stopwatch()
    async with trio.open_nursery() as outer:
        # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
        # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
        fake = await outer.start(FakeUpstream(FakeOptions(catalogue=text_catalogue(), reply_pace=0.0, reply_chunks=1)).serve)

        # ---- first life: a long conversation, then a stall with the buffer filling up
        first: list[str] = []
        pending: list[str] = []
        with trio.CancelScope() as life1:
            async with trio.open_nursery() as nursery:
                registry = await _start_registry(nursery, cfg, fake, {})
                rec = Recorder()
                await registry.open("big", TEXT_SETUP)
                registry.attach("big", rec, 0)
                actor = registry.actor("big")
                for i in range(answered):
                    first.append(f"turn {i:05d} " + "lorem ipsum dolor sit amet " * 8)
                    await registry.send("big", live.client_content(first[-1]))
                    await rec.wait(lambda r, n=i + 1: r.turn_ends() == n, timeout=30)
                await settle(lambda: len(actor.buffer) == 0 and actor.handle is not None, what="all covered")
                await fake.stall_all()  # the server reads nothing from now on

                pad = "x" * TURN_BYTES
                size = len(live.encode(live.client_content(f"pending 00000 {pad}")))
                count = int(limit * 0.95) // size
                pending = [f"pending {i:05d} {pad}" for i in range(count)]

                async def submit(text: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
                    task_status.started()  # the seq is taken before submit's first await: in order
                    await registry.send("big", live.client_content(text))

                async with trio.open_nursery() as senders:
                    for text in pending:
                        await senders.start(submit, text)
                fill = actor.buffer.bytes / limit
                transcript = len(actor.transcript)
                ckpt_bytes = (await trio.Path(state_dir / "big.ckpt").stat()).st_size
                stats = registry.store.stats
                life1.cancel()  # as abrupt as kill -9: only what is on disk counts
        await fake.drop_all()  # end the stalled connection

        # ---- second life: a new store and registry from what is on disk
        report = await trio.to_thread.run_sync(CheckpointStore(state_dir).load_all)
        record = report.records["big"]
        assert [p["message"]["clientContent"]["turns"][0]["parts"][0]["text"] for p in record["pending"]] == pending
        assert len(record["transcript"]) == transcript
        async with trio.open_nursery() as nursery:
            registry = await _start_registry(nursery, cfg, fake, report.records)
            rec = Recorder()
            registry.attach("big", rec, 0)
            actor = registry.actor("big")
            await settle(lambda: actor.state is State.LIVE and len(actor.buffer) == 0, timeout=60,
                         what="restored session replayed and covered everything")
            lives = [p for p in rec.of("session.status") if p["status"] == "live"]
            assert lives[-1]["context"] == "restored"
            # Exactly once, in order, on the same (resumed) conversation.
            assert len(fake.conversations) == 1
            (conversation,) = fake.conversations.values()
            assert list(conversation.user_turns) == first + pending
            replay_conn = fake.accepted[-1]
            assert replay_conn.resumed_handle is not None
            sent = [m["clientContent"]["turns"][0]["parts"][0]["text"] for m in replay_conn.messages[1:]]
            assert sent == pending
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()

    print(
        f"[stress] large state ({clock}): {answered} answered turns, transcript {transcript} entries, "
        f"{len(pending)} pending turns of {size} B = {fill:.0%} of a {limit} B replay buffer\n"
        f"  checkpoint file {ckpt_bytes} B per session "
        f"({ckpt_bytes / max(1, len(pending) * size):.2f} x the pending bytes: the transcript tail "
        f"holds the pending turns' text too)\n"
        f"  first life: {stats.writes} checkpoint writes in {stats.batches} batches, "
        f"{stats.bytes / 2**20:.1f} MiB written",
        flush=True,
    )
    assert fill >= 0.9
