"""Throughput: 1.3 KB audio chunks (realtimeInput audio) up through the daemon, messages/s.

The daemon runs as a subprocess pinned to one core (taskset, when there are >= 2 cores); the
client and the fake run in this process, on the other core(s). The client is a lean pipelined
JSON-RPC writer (pre-encoded lines, a window of outstanding ``session.send`` requests) so that
the daemon, not the client, is the bottleneck. Rate = messages / (time until the fake has
received the last one; every ack must have arrived too).

Baseline, same run: the same chunks sent by a WebSocket client straight to the fake.

Usage: ``.venv/bin/python tests/bench/bench_throughput.py [-n 40000] [--window 256]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

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
GOAL = 20_000

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


async def run_daemon(fake, socket_path: str, name: str, n: int, window: int) -> tuple[float, int]:
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
        await wait_received(base + n - errors, fake)
        elapsed = time.perf_counter() - t0
    await stream.aclose()
    return (n - errors) / elapsed, errors


async def main(n: int, window: int, cpu: int | None, repeats: int) -> None:
    header("Throughput: 1.3 KB realtimeInput audio chunks, client -> fake")
    direct: list[float] = []
    through: list[float] = []
    errors = 0
    cpu_per_msg: list[float] = []
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        async with running_daemon(fake.url(), cpu=cpu) as daemon:
            async with open_client(daemon.socket) as client:
                await client.open("tp", TEXT_SETUP)
            for _ in range(repeats):
                direct.append(await run_direct(fake, n))
                c0 = cpu_seconds(daemon.pid)
                rate, errs = await run_daemon(fake, str(daemon.socket), "tp", n, window)
                cpu_per_msg.append((cpu_seconds(daemon.pid) - c0) / n * 1e6)
                through.append(rate)
                errors += errs
        nursery.cancel_scope.cancel()
    rows = [
        ["direct to fake (baseline)", repeats, n, median(direct), min(direct), max(direct), ""],
        ["through geminid", repeats, n, median(through), min(through), max(through), median(cpu_per_msg)],
    ]
    table(
        f"audio chunk throughput ({pinned_note(cpu)}; window {window}; {os.cpu_count()} cpus)",
        ["path", "runs", "msgs/run", "median msg/s", "min msg/s", "max msg/s", "daemon CPU us/msg"],
        rows,
        digits=0,
    )
    print()
    m = median(through)
    table(
        "goals",
        ["goal", "measured", "verdict"],
        [
            [f">= {GOAL:,} msg/s through the daemon", f"{m:,.0f} msg/s", verdict(m >= GOAL)],
            ["no refused sends", f"{errors} error replies", verdict(errors == 0)],
        ],
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40_000, help="messages per run")
    ap.add_argument("--window", type=int, default=256, help="outstanding session.send requests")
    ap.add_argument("--cpu", type=int, default=0, help="pin the daemon to this cpu (-1: no pin)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trio.run(main, args.n, args.window, None if args.cpu < 0 else args.cpu, args.repeats)
