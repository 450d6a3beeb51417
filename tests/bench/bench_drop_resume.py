"""Unplanned drop to resumed: TCP dropped by the upstream (no close frame, 1006) -> session live.

Default BackoffPolicy (full jitter: a network drop waits uniform [0, 0.5 s) on the first
failure of an incident). Each of ``-n`` sessions is dropped **once**, one at a time, so that
every sample is the first failure of its incident (as a real, rare drop is) and reconnects do
not compete for the CPU. Time = drop issued -> the client sees ``session.status live``.

Baseline, same run: a direct client's reconnect (handshake + setup, no backoff) - what the
drop would cost with zero jitter - and the expected jitter alone (median of U[0, 0.5 s) = 250 ms).

Usage: ``.venv/bin/python tests/bench/bench_drop_resume.py [-n 60]``
"""

from __future__ import annotations

import argparse
import time

import trio
from _common import (
    TEXT_SETUP,
    direct_session,
    header,
    pct,
    running_daemon,
    start_fake,
    table,
    verdict,
)

from geminid.daemon.upstream import BackoffPolicy
from geminid.protocol.client import open_client

GOAL_P50_MS = 250.0


async def main(n: int) -> None:
    header("Unplanned drop (1006) -> resumed (ms)")
    samples: list[float] = []
    daemon_downtime: list[float] = []
    direct: list[float] = []
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        for _ in range(max(5, n // 2)):
            t0 = time.perf_counter()
            async with direct_session(fake):
                direct.append((time.perf_counter() - t0) * 1000)
        async with running_daemon(fake.url()) as daemon:
            async with open_client(daemon.socket) as client:
                names = [f"drop{i}" for i in range(n)]
                for name in names:
                    before = {id(c) for c in fake.open_connections()}
                    await client.open(name, TEXT_SETUP)
                    with trio.fail_after(10):
                        while not (new := [c for c in fake.open_connections() if id(c) not in before]):
                            await trio.sleep(0.002)
                    await client.attach(name)
                    # the session's own connection, to drop it alone
                    conn = new[0]
                    await trio.sleep(0.02)
                    t0 = time.perf_counter()
                    conn.drop_now()
                    with trio.fail_after(30):
                        while True:
                            method, params = await client.next_event()
                            if (
                                method == "session.status"
                                and params.get("session") == name
                                and params.get("status") == "live"
                                and params.get("context") == "restored"
                            ):
                                break
                    samples.append((time.perf_counter() - t0) * 1000)
                    if params.get("downtime_ms") is not None:
                        daemon_downtime.append(float(params["downtime_ms"]))
                    await client.detach(name)
        nursery.cancel_scope.cancel()
    p = BackoffPolicy()
    table(
        f"{n} sessions, each dropped once (BackoffPolicy defaults: initial {p.initial} s, full jitter)",
        ["measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            ["direct reconnect: handshake + setup (baseline)", len(direct), pct(direct, 50), pct(direct, 90), pct(direct, 99), max(direct)],
            ["expected jitter alone: U[0, initial)", "-", p.initial * 500, p.initial * 900, p.initial * 990, p.initial * 1000],
            ["drop -> client sees live (resumed)", len(samples), pct(samples, 50), pct(samples, 90), pct(samples, 99), max(samples)],
            ["daemon-reported downtime_ms", len(daemon_downtime), pct(daemon_downtime, 50), pct(daemon_downtime, 90), pct(daemon_downtime, 99), max(daemon_downtime) if daemon_downtime else "-"],
        ],
        digits=1,
    )
    print()
    m = pct(samples, 50)
    table("goals", ["goal", "measured", "verdict"], [[f"p50 <= {GOAL_P50_MS:g} ms", f"{m:.1f} ms", verdict(m <= GOAL_P50_MS)]])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=60, help="sessions (one drop each)")
    args = ap.parse_args()
    trio.run(main, args.n)
