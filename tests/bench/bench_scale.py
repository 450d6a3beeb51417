"""Scale: N concurrent sessions on the fake; daemon RSS, per-session and per-client memory.

Steps (RSS of the daemon process, from /proc/PID/status VmRSS, after a settle pause):

1. idle daemon (no session, no client);
2. N sessions opened and live (each one WebSocket to the fake, one actor, one checkpoint);
3. C idle clients connected, each attached to one session (raw sockets, rpc.hello + attach).

Baseline, same run: the bare interpreter with the daemon's modules imported (what Python
itself costs before geminid holds anything).

Usage: ``.venv/bin/python tests/bench/bench_scale.py [-n 1000] [-c 1000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import trio
from _common import TEXT_SETUP, dumps, header, rss_kib, running_daemon, start_fake, table, verdict

GOAL_TOTAL_MIB = 200
GOAL_IDLE_MIB = 40
GOAL_CLIENT_KIB = 32


def bare_python_kib() -> int:
    code = (
        "import geminid.daemon.app, geminid.daemon.cli, geminid.daemon.fake, sys, pathlib;"
        "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')][0].split()[1])"
    )
    return int(subprocess.check_output([sys.executable, "-c", code]).decode().strip())


async def rpc(stream: trio.SocketStream, rid: int, method: str, params: dict) -> dict:
    await stream.send_all(dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    buf = b""
    while True:
        buf += await stream.receive_some(65536)
        for line in buf.split(b"\n")[:-1]:
            obj = json.loads(line)
            if obj.get("id") == rid:
                if "error" in obj:
                    raise RuntimeError(obj["error"])
                return obj["result"]


async def settled_rss(pid: int, pause: float = 1.0) -> int:
    await trio.sleep(pause)
    return rss_kib(pid)


async def main(n: int, c: int) -> None:
    header(f"Scale: {n} sessions, {c} idle attached clients (daemon RSS)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * (n + c) + 256)), hard))
    bare = bare_python_kib()
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        async with running_daemon(fake.url()) as daemon:
            pid = daemon.pid
            idle = await settled_rss(pid)
            ctl = await trio.open_unix_socket(str(daemon.socket))
            t0 = time.perf_counter()
            for i in range(n):
                await rpc(ctl, i + 1, "session.open", {"session": f"s{i}", "setup": TEXT_SETUP})
            with trio.fail_after(120):
                while fake.live_connections < n:
                    await trio.sleep(0.05)
            open_s = time.perf_counter() - t0
            with_sessions = await settled_rss(pid, 2.0)
            clients = []
            for i in range(c):
                s = await trio.open_unix_socket(str(daemon.socket))
                await rpc(s, 1, "rpc.hello", {"protocol": 1, "client": "bench"})
                await rpc(s, 2, "session.attach", {"session": f"s{i % max(1, n)}"})
                clients.append(s)
            with_clients = await settled_rss(pid, 2.0)
            status = await rpc(ctl, 10**6, "daemon.status", {})
            for s in clients:
                await s.aclose()
            await ctl.aclose()
        nursery.cancel_scope.cancel()
    per_session = (with_sessions - idle) / max(1, n)
    per_client = (with_clients - with_sessions) / max(1, c)
    mib = lambda k: k / 1024  # noqa: E731
    table(
        "daemon memory (VmRSS)",
        ["state", "RSS MiB", "per item KiB"],
        [
            ["bare python + geminid imports (baseline)", mib(bare), ""],
            ["idle daemon", mib(idle), ""],
            [f"+ {n} live sessions (opened in {open_s:.1f} s)", mib(with_sessions), per_session],
            [f"+ {c} idle attached clients", mib(with_clients), per_client],
        ],
        digits=1,
    )
    print(f"\nsessions by state: {status.get('sessions_by_state')}\n")
    table(
        "goals",
        ["goal", "measured", "verdict"],
        [
            [f"total <= {GOAL_TOTAL_MIB} MiB with {n} sessions", f"{mib(with_sessions):.1f} MiB", verdict(mib(with_sessions) <= GOAL_TOTAL_MIB) if n >= 1000 else "n/a (n < 1000)"],
            [f"idle daemon <= {GOAL_IDLE_MIB} MiB", f"{mib(idle):.1f} MiB", verdict(mib(idle) <= GOAL_IDLE_MIB)],
            [f"idle attached client <= {GOAL_CLIENT_KIB} KiB", f"{per_client:.1f} KiB", verdict(per_client <= GOAL_CLIENT_KIB)],
        ],
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="sessions")
    ap.add_argument("-c", type=int, default=1000, help="idle attached clients")
    args = ap.parse_args()
    trio.run(main, args.n, args.c)
