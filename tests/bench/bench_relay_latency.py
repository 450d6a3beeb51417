"""Relay latency: client -> daemon -> fake (reply_pace 0) -> first reply event -> client.

Baseline, same run: a client talking Gemini Live to the same fake directly over WebSocket, with
the setup the daemon itself sends upstream (``UPSTREAM_SETUP``: session resumption on, so the fake
does the same work on both paths, a handle with every turn). Beside it, for reference, a direct
client with no resumption at all (the lighter workload the benchmark used as its baseline before
2026-12-06; the fake's handle costs it ~0.2 ms a turn here). Iterations alternate (direct, direct
without resumption, daemon, ...) so that load from elsewhere on the machine hits all alike. Two
kinds of client message:

- ``realtimeInput`` text: acknowledged on enqueue and sent upstream at once;
- a turn (``clientContent``, turnComplete): sent upstream at once and acknowledged once its
  checkpoint is fsync'd (the write runs beside the network round trip).

Usage: ``.venv/bin/python tests/bench/bench_relay_latency.py [-n 500] [--cpu 0]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio
from _common import (
    TEXT_SETUP,
    UPSTREAM_SETUP,
    cpu_seconds,
    direct_next,
    direct_session,
    header,
    is_end,
    is_reply,
    make_message,
    pct,
    pinned_note,
    rpc_round_trip,
    running_daemon,
    start_fake,
    table,
    verdict,
)

from geminid.protocol import live
from geminid.protocol.client import Client, open_client


async def daemon_round_trip(client: Client, name: str, message: dict) -> float:
    """Seconds from sending ``message`` to the first reply event; drains to turnComplete."""
    first, _ = await rpc_round_trip(client, name, message)
    return first


async def direct_round_trip(ws: Any, message: dict) -> float:
    t0 = time.perf_counter()
    await ws.send_message(live.encode(message))
    first = None
    while True:
        msg = await direct_next(ws)
        if first is None and is_reply(msg.raw):
            first = time.perf_counter() - t0
        if is_end(msg.raw):
            break
    assert first is not None
    return first


async def measure_pair(
    fake: Any, client: Client, name: str, kind: str, n: int, warmup: int = 20
) -> tuple[list[float], list[float], list[float]]:
    """(direct, direct without resumption, daemon) latencies in ms for ``n`` alternating
    iterations of ``kind``."""
    direct: list[float] = []
    bare: list[float] = []
    daemon: list[float] = []
    async with direct_session(fake, UPSTREAM_SETUP) as ws, direct_session(fake) as ws_bare:
        for i in range(n + warmup):
            msg = make_message(kind, i)
            d = await direct_round_trip(ws, msg)
            b = await direct_round_trip(ws_bare, msg)
            g = await daemon_round_trip(client, name, msg)
            if i >= warmup:
                direct.append(d * 1000)
                bare.append(b * 1000)
                daemon.append(g * 1000)
    return direct, bare, daemon


async def open_session(client: Client, name: str) -> None:
    await client.open(name, TEXT_SETUP)
    await client.attach(name)


def rows_for(kind: str, direct: list[float], bare: list[float], daemon: list[float]) -> list[list[Any]]:
    return [
        [kind, "direct (baseline)", len(direct), pct(direct, 50), pct(direct, 90), pct(direct, 99), "", ""],
        [kind, "direct, no resumption", len(bare), pct(bare, 50), pct(bare, 90), pct(bare, 99),
         pct(daemon, 50) / pct(bare, 50), pct(daemon, 99) - pct(bare, 99)],
        [kind, "through geminid", len(daemon), pct(daemon, 50), pct(daemon, 90), pct(daemon, 99),
         pct(daemon, 50) / pct(direct, 50), pct(daemon, 99) - pct(direct, 99)],
    ]


async def main(n: int, cpu: int | None, kinds: list[str]) -> None:
    header("Relay latency (first reply event after a send; ms)")
    results: dict[str, tuple[list[float], list[float], list[float]]] = {}
    cpu_ms: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        async with running_daemon(fake.url(), cpu=cpu) as daemon:
            async with open_client(daemon.socket) as client:
                for kind in kinds:
                    name = f"lat-{kind}"
                    await open_session(client, name)
                    cpu0 = cpu_seconds(daemon.pid)
                    results[kind] = await measure_pair(fake, client, name, kind, n)
                    cpu_ms[kind] = (cpu_seconds(daemon.pid) - cpu0) * 1000 / (n + 20)
        nursery.cancel_scope.cancel()
    rows: list[list[Any]] = []
    for kind in kinds:
        rows += rows_for(kind, *results[kind])
    table(
        f"relay latency, n={n} per row ({pinned_note(cpu)}; fake in-process, reply_pace=0)",
        ["message", "path", "n", "p50 ms", "p90 ms", "p99 ms", "p50 ratio", "p99 added ms"],
        rows,
        digits=3,
    )
    print()
    goal_rows = []
    for kind in kinds:
        direct, _, daemon = results[kind]
        ratio = pct(daemon, 50) / pct(direct, 50)
        added = pct(daemon, 99) - pct(direct, 99)
        goal_rows.append([kind, "p50 <= 1.5x direct", f"{ratio:.2f}x", verdict(ratio <= 1.5)])
        goal_rows.append([kind, "p99 added <= 1 ms", f"{added:.3f} ms", verdict(added <= 1.0)])
    table("goals", ["message", "goal", "measured", "verdict"], goal_rows)
    print()
    table(
        "daemon CPU per round trip (user+sys, includes its checkpoint thread)",
        ["message", "daemon CPU ms / round trip"],
        [[k, cpu_ms[k]] for k in kinds],
        digits=3,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="iterations per message kind")
    ap.add_argument("--cpu", type=int, default=None, help="pin the daemon to this cpu (taskset)")
    ap.add_argument("--kinds", default="realtime,turn", help="comma list of realtime,turn")
    args = ap.parse_args()
    trio.run(main, args.n, args.cpu, args.kinds.split(","))
