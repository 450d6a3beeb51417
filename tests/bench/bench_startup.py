"""Start to ready: exec of ``geminid run`` -> the socket accepts, and -> READY=1 (sd_notify).

NOTIFY_SOCKET points at a datagram socket bound here, so READY=1 is observed exactly as systemd
would see it. Empty state directory, then a state directory holding ``--sessions`` checkpointed
sessions to restore (written by a daemon through the real checkpoint store). Baseline, same run:
exec of the bare interpreter, of ``python -c "import trio"`` (the floor of any trio daemon), and
of the interpreter importing the modules ``geminid run`` imports before its first READY.

Usage: ``.venv/bin/python tests/bench/bench_startup.py [-n 15] [--sessions 50]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio
from _common import REPO, TEXT_SETUP, Daemon, header, pct, start_fake, table, verdict

from geminid.protocol.client import open_client

GOAL_MS = 300.0
GOAL_RESTORE_MS = 400.0
# What ``geminid run`` imports before its first READY (the rest loads on first use).
STARTUP_IMPORTS = "import geminid.daemon.cli, geminid.daemon.app, geminid.daemon.sdnotify"


def exec_ms(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True)
    return (time.perf_counter() - t0) * 1000


async def one_start(endpoint: str, workdir: Path | None = None) -> tuple[float, float]:
    """(ms to socket accept, ms to READY=1) of one daemon start."""
    base = REPO / ".bench-tmp"
    base.mkdir(exist_ok=True)
    nsock_path = base / f"notify-{time.monotonic_ns()}.sock"
    nsock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await nsock.bind(str(nsock_path))
    d = Daemon(endpoint, notify_socket=str(nsock_path), workdir=workdir)
    try:
        ready_at: list[float] = []

        async def watch() -> None:
            while True:
                data = await nsock.recv(4096)
                if b"READY=1" in data.split(b"\n"):
                    ready_at.append(time.perf_counter())
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            d.spawn()
            accept_s = await d.wait_ready()
            with trio.fail_after(30):
                while not ready_at:
                    await trio.sleep(0.001)
        return accept_s * 1000, (ready_at[0] - d.started_at) * 1000
    finally:
        await trio.to_thread.run_sync(d.stop)
        nsock.close()
        nsock_path.unlink(missing_ok=True)


def compile_bytecode() -> None:
    """Write geminid's .pyc files, as ``pip install`` does: an installed daemon never compiles its
    modules at start. Needed here because PYTHONDONTWRITEBYTECODE=1 (set in some shells and CI
    images) stops an editable checkout from ever caching them: ~75 ms of compile per start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "daemon", "protocol"], cwd=REPO, check=True)


async def main(n: int, sessions: int) -> None:
    header("Start to ready (ms from exec)")
    compile_bytecode()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set; geminid's .pyc files were written by compileall\n")
    bare = [exec_ms([sys.executable, "-c", "pass"]) for _ in range(n)]
    floor = [exec_ms([sys.executable, "-c", "import trio"]) for _ in range(n)]
    imports = [exec_ms([sys.executable, "-c", STARTUP_IMPORTS]) for _ in range(n)]
    accept: list[float] = []
    ready: list[float] = []
    r_accept: list[float] = []
    r_ready: list[float] = []
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        for _ in range(n):
            a, r = await one_start(fake.url())
            accept.append(a)
            ready.append(r)
        if sessions:
            # Checkpoint `sessions` sessions once, then time restarts that restore them.
            work = Path(REPO / ".bench-tmp" / f"restore-{time.monotonic_ns()}")
            work.mkdir(parents=True)  # noqa: ASYNC240 - setup, not measured
            try:
                d = Daemon(fake.url(), workdir=work)
                await d.start()
                async with open_client(d.socket) as client:
                    for i in range(sessions):
                        await client.open(f"r{i}", TEXT_SETUP)
                await trio.to_thread.run_sync(d.stop)
                for _ in range(n):
                    a, r = await one_start(fake.url(), workdir=work)
                    r_accept.append(a)
                    r_ready.append(r)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        nursery.cancel_scope.cancel()
    rows = [
        ["python -c pass (baseline)", n, pct(bare, 50), pct(bare, 90), max(bare)],
        ["python -c 'import trio' (baseline: the floor)", n, pct(floor, 50), pct(floor, 90), max(floor)],
        ["python importing what geminid run imports (baseline)", n, pct(imports, 50), pct(imports, 90), max(imports)],
        ["geminid run -> socket accepts", n, pct(accept, 50), pct(accept, 90), max(accept)],
        ["geminid run -> READY=1", n, pct(ready, 50), pct(ready, 90), max(ready)],
    ]
    if sessions:
        rows += [
            [f"-> socket accepts, {sessions} sessions to restore", len(r_accept), pct(r_accept, 50), pct(r_accept, 90), max(r_accept)],
            [f"-> READY=1, {sessions} sessions to restore", len(r_ready), pct(r_ready, 50), pct(r_ready, 90), max(r_ready)],
        ]
    table("start to ready", ["what", "n", "p50 ms", "p90 ms", "max ms"], rows, digits=1)
    print()
    table(
        "goals",
        ["goal", "measured (p50 / max)", "verdict"],
        [
            [f"socket accepting <= {GOAL_MS:g} ms", f"{pct(accept, 50):.0f} / {max(accept):.0f} ms", verdict(pct(accept, 50) <= GOAL_MS)],
            [f"READY=1 <= {GOAL_MS:g} ms", f"{pct(ready, 50):.0f} / {max(ready):.0f} ms", verdict(pct(ready, 50) <= GOAL_MS)],
        ]
        + (
            [
                [
                    f"READY=1 with {sessions} sessions <= {GOAL_RESTORE_MS:g} ms",
                    f"{pct(r_ready, 50):.0f} / {max(r_ready):.0f} ms",
                    verdict(pct(r_ready, 50) <= GOAL_RESTORE_MS),
                ]
            ]
            if sessions
            else []
        ),
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="starts per row")
    ap.add_argument("--sessions", type=int, default=50, help="checkpointed sessions for the restore rows (0: skip)")
    args = ap.parse_args()
    trio.run(main, args.n, args.sessions)
