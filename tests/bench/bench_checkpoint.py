"""Checkpoint cost: fsyncs/s under load, and whether checkpointing stalls the relay loop.

Load: ``--load`` sessions each sending turns (clientContent) in a closed loop; every turn is
acknowledged only once its checkpoint is fsync'd (group commit: one worker-thread batch, one
directory fsync per batch), and every reply brings a new resumption handle (another checkpoint).
Probe: realtimeInput text round trips on another session (no checkpoint on its send path),
alternating with a direct client to the same fake, first without load, then with it.

If checkpoint I/O ran on the event loop, the probe would wait for fsyncs (milliseconds each);
it runs in a worker thread, so what remains is CPU contention (2 cores shared by the daemon,
its checkpoint thread, the load clients and the fake): compare "added ms" with and without load.

Usage: ``.venv/bin/python tests/bench/bench_checkpoint.py [-n 300] [--load 20]``
"""

from __future__ import annotations

import argparse
import time

import trio
from _common import TEXT_SETUP, header, pct, running_daemon, start_fake, table
from bench_relay_latency import measure_pair, open_session

from geminid.protocol import live
from geminid.protocol.client import open_client


async def turn_load(client, name: str, counter: list[int]) -> None:
    i = 0
    while True:
        i += 1
        await client.send(name, live.client_content(f"load {i}"))
        counter[0] += 1


async def main(n: int, load: int) -> None:
    header("Checkpoint cost under load")
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        async with running_daemon(fake.url()) as daemon:
            async with open_client(daemon.socket) as client:
                await open_session(client, "probe")
                quiet = await measure_pair(fake, client, "probe", "realtime", n)
                st0 = (await client.status())["checkpoint"]
                async with open_client(daemon.socket) as loader:
                    for i in range(load):
                        await loader.open(f"load{i}", TEXT_SETUP)
                    acks = [0]
                    async with trio.open_nursery() as gen:
                        for i in range(load):
                            gen.start_soon(turn_load, loader, f"load{i}", acks)
                        await trio.sleep(0.5)
                        st1 = (await client.status())["checkpoint"]
                        a1, t1 = acks[0], time.perf_counter()
                        loaded = await measure_pair(fake, client, "probe", "realtime", n, warmup=5)
                        st2 = (await client.status())["checkpoint"]
                        a2, t2 = acks[0], time.perf_counter()
                        gen.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    secs = t2 - t1
    fsyncs = (st2["fsyncs"] - st1["fsyncs"]) / secs
    writes = (st2["writes"] - st1["writes"]) / secs
    batches = (st2["batches"] - st1["batches"]) / secs
    table(
        f"checkpoint store under load ({load} sessions sending turns, {secs:.1f} s window)",
        ["durable turn acks/s", "checkpoint writes/s", "batches/s", "fsyncs/s (file + dir)", "writes per batch"],
        [[(a2 - a1) / secs, writes, batches, fsyncs, writes / batches if batches else 0]],
        digits=1,
    )
    print(f"\nbefore load: {st0}\n")
    rows = []
    for label, (direct, _, through) in (("no load", quiet), (f"{load} sessions checkpointing", loaded)):
        rows.append([label, "direct (baseline)", pct(direct, 50), pct(direct, 99), "", ""])
        rows.append([label, "through geminid", pct(through, 50), pct(through, 99),
                     pct(through, 50) - pct(direct, 50), pct(through, 99) - pct(direct, 99)])
    table(
        f"probe: realtimeInput text round trip, n={n} per row (ms)",
        ["condition", "path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"],
        rows,
        digits=3,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="probe round trips per condition")
    ap.add_argument("--load", type=int, default=20, help="sessions sending turns")
    args = ap.parse_args()
    trio.run(main, args.n, args.load)
