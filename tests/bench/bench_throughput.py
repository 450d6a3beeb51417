"""Throughput: 1.3 KB audio chunks (realtimeInput audio) up through the daemon, messages/s.

The daemon runs as a subprocess pinned to one core (taskset, when there are >= 2 cores); the
clients run in this process, on the other core(s). ``--sessions`` sessions (default 4), each
with its own lean pipelined JSON-RPC client (pre-encoded lines, a window of outstanding
``session.send`` requests) so that the daemon, not the clients, is the bottleneck.

The upstream is a **sink** (``_live_sink.py``, its own process): handshake, ``setupComplete``,
pongs, and every other frame counted with its payload skipped. The fake upstream is a model
(validation, records, replies) and tops out near the daemon's own rate, so it would measure
itself. Rate = messages / (time until the sink has counted the last one; every ack arrived too).
Daemon CPU per chunk = user + sys of the daemon process over the run / chunks.

Baselines, same run: the same chunks sent by a trio-websocket client straight to the sink, and
straight to the fake (what the fake alone takes).

Usage: ``.venv/bin/python tests/bench/bench_throughput.py [-n 40000] [--sessions 4] [--window 256]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import trio
from _common import (
    TEXT_SETUP,
    cpu_seconds,
    direct_session,
    header,
    median,
    pinned_note,
    running_daemon,
    start_fake,
    table,
    trim_fake_records,
    verdict,
)

from geminid.daemon.fake.connection import FakeConnection
from geminid.protocol import live
from geminid.protocol.client import open_client

#: 976 bytes of 16 kHz PCM -> 1,304 base64 characters: a 1.3 KB chunk.
PCM = bytes(range(256)) * 3 + bytes(208)
GOAL = 15_000
GOAL_CPU_US = 60.0

_received = [0]
_orig_handle_raw = FakeConnection._handle_raw


def _counting_handle_raw(self: FakeConnection, raw: str | bytes) -> None:
    _received[0] += 1
    _orig_handle_raw(self, raw)


FakeConnection._handle_raw = _counting_handle_raw  # count what the fake consumed


def audio_message() -> dict:
    return live.realtime_audio(PCM)


async def wait_received(target: int, fake) -> None:
    while _received[0] < target:
        trim_fake_records(fake)
        await trio.sleep(0.002)


async def run_direct(fake, n: int) -> float:
    wire = live.encode(audio_message())
    async with direct_session(fake) as ws:
        base = _received[0]
        t0 = time.perf_counter()
        for _ in range(n):
            await ws.send_message(wire)
        await wait_received(base + n, fake)
        return n / (time.perf_counter() - t0)


class Sink:
    """The ``_live_sink.py`` subprocess: its URL, and the frames it has counted."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_live_sink.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def url(self, fake) -> str:
        path = fake.url().split("/", 3)[3]
        return f"ws://127.0.0.1:{self.port}/{path}"

    def _count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    async def count(self) -> int:
        return await trio.to_thread.run_sync(self._count)

    async def wait_for(self, target: int) -> None:
        while await self.count() < target:
            await trio.sleep(0.002)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def run_direct_sink(sink: Sink, fake, n: int) -> float:
    from trio_websocket import open_websocket_url

    wire = live.encode(audio_message())
    async with open_websocket_url(sink.url(fake), message_queue_size=64) as ws:
        await ws.send_message(live.encode({"setup": TEXT_SETUP}))
        await ws.get_message()
        base = await sink.count()
        t0 = time.perf_counter()
        for _ in range(n):
            await ws.send_message(wire)
        await sink.wait_for(base + n)
        return n / (time.perf_counter() - t0)


async def run_sessions(sink: Sink, socket_path: str, names: list[str], n: int, window: int) -> tuple[float, int]:
    """n chunks split over the sessions, all sending at once; returns (msgs/s, error replies)."""
    per = n // len(names)
    errors = [0]
    base = await sink.count()
    t0 = time.perf_counter()

    async def one(name: str) -> None:
        _, errs = await run_daemon(None, socket_path, name, per, window, wait=False)
        errors[0] += errs

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)
    await sink.wait_for(base + per * len(names) - errors[0])
    return (per * len(names) - errors[0]) / (time.perf_counter() - t0), errors[0]


async def run_daemon(
    fake, socket_path: str, name: str, n: int, window: int, *, wait: bool = True
) -> tuple[float, int]:
    """Pipelined raw JSON-RPC over the Unix socket; returns (msgs/s, error replies)."""
    message = audio_message()
    prefix = b'{"jsonrpc":"2.0","method":"session.send","params":{"session":"%s","message":' % name.encode()
    body = json.dumps(message, separators=(",", ":")).encode()
    lines = [prefix + body + b'},"id":%d}\n' % i for i in range(1, n + 1)]
    stream = await trio.open_unix_socket(socket_path)
    acked = 0
    errors = 0
    room = trio.Semaphore(window)
    done = trio.Event()

    async def reader() -> None:
        nonlocal acked, errors
        buf = b""
        while acked < n:
            data = await stream.receive_some(1 << 16)
            if not data:
                raise RuntimeError("daemon closed the connection")
            buf += data
            *complete, buf = buf.split(b"\n")
            for line in complete:
                if b'"id"' not in line:
                    continue  # a notification
                if b'"error"' in line:
                    errors += 1
                acked += 1
                room.release()
        done.set()

    base = _received[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        t0 = time.perf_counter()
        i = 0
        while i < n:
            await room.acquire()
            batch = [lines[i]]
            i += 1
            while i < n and room.value > 0:
                room.acquire_nowait()
                batch.append(lines[i])
                i += 1
            await stream.send_all(b"".join(batch))
        await done.wait()
        if wait:
            await wait_received(base + n - errors, fake)
        elapsed = time.perf_counter() - t0
    await stream.aclose()
    return (n - errors) / elapsed, errors


async def main(n: int, window: int, cpu: int | None, repeats: int, sessions: int) -> None:
    header("Throughput: 1.3 KB realtimeInput audio chunks, clients -> daemon -> sink")
    direct: list[float] = []
    fake_rates: list[float] = []
    through: list[float] = []
    errors = 0
    cpu_per_msg: list[float] = []
    names = [f"tp{i}" for i in range(sessions)]
    sink = Sink()
    try:
        async with trio.open_nursery() as nursery:
            fake = await start_fake(nursery)
            async with running_daemon(sink.url(fake), cpu=cpu) as daemon:
                async with open_client(daemon.socket) as client:
                    for name in names:
                        await client.open(name, TEXT_SETUP)
                for _ in range(repeats):
                    direct.append(await run_direct_sink(sink, fake, n))
                    fake_rates.append(await run_direct(fake, min(n, 10_000)))
                    c0 = cpu_seconds(daemon.pid)
                    rate, errs = await run_sessions(sink, str(daemon.socket), names, n, window)
                    cpu_per_msg.append((cpu_seconds(daemon.pid) - c0) / n * 1e6)
                    through.append(rate)
                    errors += errs
            nursery.cancel_scope.cancel()
    finally:
        sink.close()
    rows = [
        ["direct to the sink (baseline)", repeats, n, median(direct), min(direct), max(direct), ""],
        ["direct to the fake (baseline)", repeats, min(n, 10_000), median(fake_rates), min(fake_rates),
         max(fake_rates), ""],
        [f"through geminid, {sessions} sessions", repeats, n, median(through), min(through), max(through),
         median(cpu_per_msg)],
    ]
    table(
        f"audio chunk throughput ({pinned_note(cpu)}; window {window} per session; {os.cpu_count()} cpus)",
        ["path", "runs", "msgs/run", "median msg/s", "min msg/s", "max msg/s", "daemon CPU us/msg"],
        rows,
        digits=0,
    )
    print()
    m = median(through)
    c = median(cpu_per_msg)
    # On a shared machine the pinned core is not the daemon's alone: how much of it the daemon
    # got (rate x CPU per chunk), and the rate its CPU per chunk allows on a core of its own.
    busy = [r * u / 1e6 for r, u in zip(through, cpu_per_msg, strict=True)]
    print(
        f"daemon core use during the runs: {median(busy):.0%} median ({min(busy):.0%}-{max(busy):.0%}); "
        f"1 / CPU per chunk = {1e6 / c:,.0f} msg/s on a core of its own (derived, not measured)\n"
    )
    table(
        "goals",
        ["goal", "measured", "verdict"],
        [
            [f">= {GOAL:,} msg/s through the daemon", f"{m:,.0f} msg/s", verdict(m >= GOAL)],
            [f"<= {GOAL_CPU_US:.0f} us daemon CPU per chunk", f"{c:.0f} us", verdict(c <= GOAL_CPU_US)],
            ["no refused sends", f"{errors} error replies", verdict(errors == 0)],
        ],
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40_000, help="messages per run")
    ap.add_argument("--window", type=int, default=256, help="outstanding session.send requests")
    ap.add_argument("--cpu", type=int, default=0, help="pin the daemon to this cpu (-1: no pin)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=4)
    args = ap.parse_args()
    trio.run(main, args.n, args.window, None if args.cpu < 0 else args.cpu, args.repeats, args.sessions)
