"""Turn latency through geminid's Live endpoint vs direct to the fake, same run.

Every path speaks the same thing, so the difference is geminid's: a raw Gemini Live client
(trio-websocket, BidiGenerateContent JSON) sends a message and times the first reply frame and
the ``turnComplete``. Paths, alternated per iteration (direct, endpoint TLS, endpoint Unix,
JSON-RPC, direct, ...) so that load from elsewhere on the machine hits them alike:

- **direct (baseline)**: a WebSocket to the fake (plain ws, in this process);
- **endpoint wss**: geminid's TCP listener (``live.listen = "127.0.0.1:0"``, TLS with the
  self-signed certificate, the local token as ``x-goog-api-key``): what google-genai uses;
- **endpoint unix**: geminid's Live Unix socket (no TLS, no token);
- **JSON-RPC** (reference): ``session.send`` + ``session.message`` notifications, as in
  bench_relay_latency.py.

Two kinds of message: a turn (``clientContent``, turnComplete; acknowledged and sent upstream
only once its checkpoint is fsync'd, so every geminid path includes one group-committed write)
and ``realtimeInput`` text (sent upstream at once).

Usage: ``.venv/bin/python tests/bench/bench_live_endpoint.py [-n 300] [--cpu 0] [--kinds turn,realtime]``
"""

from __future__ import annotations

import argparse
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from _common import (
    TEXT_SETUP,
    cpu_seconds,
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
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream

from geminid.protocol import live
from geminid.protocol.client import Client, open_client

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
CONFIG = '[live]\nlisten = "127.0.0.1:0"\n'
PATHS = ["direct (baseline)", "endpoint wss", "endpoint unix", "JSON-RPC"]
#: (first reply, turnComplete) in seconds
Sample = tuple[float, float]


async def ws_round_trip(ws: WebSocketConnection, message: dict[str, Any]) -> Sample:
    """Send ``message`` as a Live client; seconds to the first reply frame and to turnComplete.
    Other frames (the endpoint's resumption update after each turnComplete) are read past."""
    t0 = time.perf_counter()
    await ws.send_message(live.encode(message))
    first = None
    while True:
        parsed = live.parse_server_frame(await ws.get_message())
        if parsed is None:
            continue
        if first is None and is_reply(parsed.raw):
            first = time.perf_counter() - t0
        if is_end(parsed.raw):
            assert first is not None
            return first, time.perf_counter() - t0


async def set_up(ws: WebSocketConnection) -> WebSocketConnection:
    await ws.send_message(live.encode({"setup": TEXT_SETUP}))
    while True:
        parsed = live.parse_server_frame(await ws.get_message())
        if parsed is not None and parsed.kind == "setupComplete":
            return ws


@asynccontextmanager
async def endpoint_tcp(info: dict[str, Any]) -> AsyncIterator[WebSocketConnection]:
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    token = (await trio.Path(info["token_file"]).read_text()).strip()
    url = info["base_url"].replace("https://", "wss://", 1) + PATH
    async with open_websocket_url(url, ssl_context=ctx, message_queue_size=64,
                                  extra_headers=[(b"x-goog-api-key", token.encode())]) as ws:
        yield await set_up(ws)


@asynccontextmanager
async def endpoint_unix(info: dict[str, Any]) -> AsyncIterator[WebSocketConnection]:
    async with trio.open_nursery() as nursery:
        stream = await trio.open_unix_socket(info["socket"])
        ws = await wrap_client_stream(nursery, stream, "localhost", PATH, message_queue_size=64)
        try:
            yield await set_up(ws)
        finally:
            await ws.aclose()


async def live_info(client: Client) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            info = (await client.status()).get("live") or {}
            if info.get("base_url") and info.get("socket"):
                return info
            await trio.sleep(0.01)


async def measure(fake: Any, daemon: Any, kind: str, n: int, warmup: int,
                  index: int) -> tuple[dict[str, list[Sample]], float]:
    """Samples per path for ``n`` alternating iterations; daemon CPU ms per round trip."""
    out: dict[str, list[Sample]] = {p: [] for p in PATHS}
    async with open_client(daemon.socket) as client:
        info = await live_info(client)
        name = f"lat-{kind}"
        await client.open(name, TEXT_SETUP)
        await client.attach(name)
        async with direct_session(fake) as direct, endpoint_tcp(info) as wss, \
                endpoint_unix(info) as unix:
            trips: dict[str, Callable[[dict[str, Any]], Awaitable[Sample]]] = {
                "direct (baseline)": lambda m: ws_round_trip(direct, m),
                "endpoint wss": lambda m: ws_round_trip(wss, m),
                "endpoint unix": lambda m: ws_round_trip(unix, m),
                "JSON-RPC": lambda m: rpc_round_trip(client, name, m),
            }
            cpu0 = cpu_seconds(daemon.pid)
            for i in range(n + warmup):
                msg = make_message(kind, index * 1_000_000 + i)
                for path in PATHS:
                    sample = await trips[path](msg)
                    if i >= warmup:
                        out[path].append(sample)
            per_trip = (cpu_seconds(daemon.pid) - cpu0) * 1000 / ((n + warmup) * (len(PATHS) - 1))
    return out, per_trip


def rows_for(kind: str, samples: dict[str, list[Sample]]) -> list[list[Any]]:
    base_first = [s[0] * 1000 for s in samples["direct (baseline)"]]
    base_done = [s[1] * 1000 for s in samples["direct (baseline)"]]
    rows: list[list[Any]] = []
    for path in PATHS:
        first = [s[0] * 1000 for s in samples[path]]
        done = [s[1] * 1000 for s in samples[path]]
        baseline = path == "direct (baseline)"
        rows.append([
            kind, path, len(first), pct(first, 50), pct(first, 90), pct(first, 99), pct(done, 50),
            pct(done, 99),
            "" if baseline else pct(first, 50) / pct(base_first, 50),
            "" if baseline else pct(first, 99) / pct(base_first, 99),
            "" if baseline else pct(done, 50) / pct(base_done, 50),
        ])
    return rows


async def main(n: int, cpu: int | None, kinds: list[str], warmup: int) -> None:
    header("Live endpoint turn latency (send -> first reply frame / turnComplete; ms)")
    results: dict[str, dict[str, list[Sample]]] = {}
    cpu_ms: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery)
        async with running_daemon(fake.url(), cpu=cpu, config=CONFIG) as daemon:
            for index, kind in enumerate(kinds):
                results[kind], cpu_ms[kind] = await measure(fake, daemon, kind, n, warmup, index)
        nursery.cancel_scope.cancel()
    rows: list[list[Any]] = []
    for kind in kinds:
        rows += rows_for(kind, results[kind])
    table(
        f"turn latency, n={n} per row, {warmup} warm-up ({pinned_note(cpu)}; fake in-process, "
        "reply_pace=0; ratios against direct in the same run)",
        ["message", "path", "n", "first p50", "first p90", "first p99", "complete p50",
         "complete p99", "p50 ratio", "p99 ratio", "complete p50 ratio"],
        rows,
        digits=3,
    )
    print()
    goal_rows = []
    compare_rows = []
    for kind in kinds:
        first = {path: [s[0] for s in results[kind][path]] for path in PATHS}
        base, rpc = pct(first["direct (baseline)"], 50), pct(first["JSON-RPC"], 50)
        for path in ("endpoint wss", "endpoint unix"):
            ratio = pct(first[path], 50) / base
            goal_rows.append([kind, path, "p50 <= 1.5x direct", f"{ratio:.2f}x", verdict(ratio <= 1.5)])
            compare_rows.append([kind, f"{path} / JSON-RPC", pct(first[path], 50) / rpc])
        compare_rows.append([kind, "endpoint wss / endpoint unix (TLS)",
                             pct(first["endpoint wss"], 50) / pct(first["endpoint unix"], 50)])
    # The relay's own goal (bench_relay_latency.py); the endpoint has none of its own.
    table("goals (the relay latency goal)", ["message", "path", "goal", "measured", "verdict"], goal_rows)
    print()
    table("what the endpoint adds (first-reply p50 ratios, same run)", ["message", "paths", "ratio"],
          compare_rows)
    print()
    table(
        "daemon CPU per round trip through geminid (user+sys, all three geminid paths averaged)",
        ["message", "daemon CPU ms / round trip"],
        [[k, cpu_ms[k]] for k in kinds],
        digits=3,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="iterations per message kind (per path)")
    ap.add_argument("--warmup", type=int, default=20, help="iterations left out of the figures")
    ap.add_argument("--cpu", type=int, default=None, help="pin the daemon to this cpu (taskset)")
    ap.add_argument("--kinds", default="turn,realtime", help="comma list of turn,realtime")
    args = ap.parse_args()
    trio.run(main, args.n, args.cpu, args.kinds.split(","), args.warmup)
