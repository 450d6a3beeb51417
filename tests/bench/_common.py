"""Shared helpers of the benchmarks in tests/bench (not a test module, not a benchmark).

Every benchmark runs the same way: the fake upstream **in the benchmark process** (so that it can
drop / goAway connections on cue), ``geminid run`` as a **subprocess** (optionally pinned to one
core with ``taskset``), and the client in the benchmark process. The baseline of each benchmark
is measured in the same run, against the same fake.

Timings use ``time.perf_counter`` (wall clock), never trio's clock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import trio
from trio_websocket import open_websocket_url

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.protocol import live

# The fake runs in this process: keep its info logs out of the tables.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GEMINID = str(VENV_BIN / "geminid")
MODEL = "gemini-3.8-live"
TEXT_SETUP = live.setup(MODEL, response_modalities=["TEXT"])["setup"]
#: What the daemon sends upstream for TEXT_SETUP: the same setup with session resumption on (the
#: daemon always asks for it; the fake then sends a handle with every turn). A direct baseline
#: that measures the relay, not a lighter server workload, uses this one.
UPSTREAM_SETUP = {**TEXT_SETUP, "sessionResumption": {}}
KEY = "bench-key"


# -- statistics and output ----------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no data."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    cells = [[str(h) for h in header]] + [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc={os.cpu_count()} cpu={model!r} python={platform.python_version()} "
        f"trio={trio.__version__} load={os.getloadavg()[0]:.2f}"
    )


def header(name: str) -> None:
    print(f"# {name}\n\nmachine: {machine()}\n", flush=True)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


# -- the fake upstream (in process) -------------------------------------------------------------


def fake_options(**kw: Any) -> FakeOptions:
    kw.setdefault("reply_pace", 0.0)
    kw.setdefault("host", "127.0.0.1")
    # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
    # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
    kw.setdefault("catalogue", text_catalogue())
    return FakeOptions(**kw)


async def start_fake(nursery: trio.Nursery, **kw: Any) -> FakeUpstream:
    return await nursery.start(FakeUpstream(fake_options(**kw)).serve)


def trim_fake_records(fake: FakeUpstream) -> None:
    """The fake keeps every message it saw (for tests); a long benchmark must not grow it."""
    for rec in fake.connections:
        rec.messages.clear()
        rec.sent.clear()


# -- the daemon (subprocess) --------------------------------------------------------------------


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


class Daemon:
    """``geminid run`` as a subprocess against ``endpoint``; socket and state in a temp dir."""

    def __init__(
        self,
        endpoint: str,
        *,
        cpu: int | None = None,
        config: str | None = None,
        log_level: str = os.environ.get("BENCH_DAEMON_LOG", "warning"),
        notify_socket: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cpu = cpu
        self.config_text = config
        self.log_level = log_level
        self.notify_socket = notify_socket
        self._own_dir = workdir is None
        # Under the repo's filesystem (not tmpfs), so fsync costs what it costs on a real disk.
        base = REPO / ".bench-tmp"
        base.mkdir(exist_ok=True)
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="d-", dir=base))
        self.socket = self.dir / "run" / "geminid.sock"
        self.state = self.dir / "state"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.log_path = self.dir / "daemon.log"

    def argv(self) -> list[str]:
        argv = [
            GEMINID, "run", "--endpoint", self.endpoint, "--socket", str(self.socket),
            "--state-dir", str(self.state), "--log-level", self.log_level, "--log-format", "json",
        ]
        if self.config_text is not None:
            cfg = self.dir / "geminid.toml"
            cfg.write_text(self.config_text)
            argv[2:2] = ["--config", str(cfg)]
        if self.cpu is not None and can_pin():
            argv = ["taskset", "-c", str(self.cpu), *argv]
        # Profiling hook: BENCH_PYSPY=out.svg (or .txt with --format raw) records the daemon.
        if spy := os.environ.get("BENCH_PYSPY"):
            fmt_args = ["--format", "raw"] if spy.endswith(".txt") else []
            extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. "--gil" for CPU only
            argv = [str(VENV_BIN / "py-spy"), "record", "-r", "500", "-o", spy, *fmt_args, *extra, "--", *argv]
        return argv

    def spawn(self) -> None:
        env = dict(os.environ, GEMINI_API_KEY=KEY, PYTHONUNBUFFERED="1")
        env.pop("GEMINID_SOCKET", None)
        if self.notify_socket:
            env["NOTIFY_SOCKET"] = self.notify_socket
        else:
            env.pop("NOTIFY_SOCKET", None)
        self._log = open(self.log_path, "ab")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.argv(), env=env, stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll until the socket accepts; return seconds since spawn."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log_path}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.socket))
                return time.perf_counter() - self.started_at
            except OSError:
                pass
            finally:
                s.close()
            if time.perf_counter() > deadline:
                raise TimeoutError("daemon did not start")
            await trio.sleep(0.002)

    async def start(self) -> Daemon:
        self.spawn()
        await self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        """The daemon's own pid (py-spy's child when profiling)."""
        assert self.proc is not None
        if not os.environ.get("BENCH_PYSPY"):
            return self.proc.pid
        for _ in range(500):
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                if kids:
                    return int(kids[0])
            time.sleep(0.01)
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid) if self.proc else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if os.environ.get("BENCH_PYSPY"):
                os.kill(self.pid, signal.SIGTERM)  # py-spy writes its output when its child exits
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if self._own_dir and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


@asynccontextmanager
async def running_daemon(endpoint: str, **kw: Any) -> AsyncIterator[Daemon]:
    d = Daemon(endpoint, **kw)
    try:
        await d.start()
        yield d
    finally:
        await trio.to_thread.run_sync(d.stop)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# -- a direct Gemini Live client (the baseline) -------------------------------------------------


@asynccontextmanager
async def direct_session(fake: FakeUpstream, setup: dict | None = None) -> AsyncIterator[Any]:
    """A WebSocket to the fake, set up (setupComplete received): the client with no daemon."""
    url = fake.url()
    async with open_websocket_url(
        url, extra_headers=[(b"x-goog-api-key", KEY.encode())], message_queue_size=64
    ) as ws:
        await ws.send_message(live.encode({"setup": setup or TEXT_SETUP}))
        while True:
            msg = live.parse_server_frame(await ws.get_message())
            if msg is not None and msg.kind == "setupComplete":
                break
        yield ws


async def direct_next(ws: Any) -> live.ServerMessage:
    while True:
        msg = live.parse_server_frame(await ws.get_message())
        if msg is not None:
            return msg


def pinned_note(cpu: int | None) -> str:
    if cpu is None:
        return "daemon not pinned"
    return f"daemon pinned to cpu {cpu} with taskset" if can_pin() else "taskset unavailable: not pinned"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# -- a ping and its reply, through the daemon's JSON-RPC socket (latency benches) -------------


def make_message(kind: str, i: int) -> dict[str, Any]:
    """The ping a latency bench sends: a turn (``clientContent``) or realtime text."""
    return live.client_content(f"ping {i}") if kind == "turn" else live.realtime_text(f"ping {i}")


def is_reply(message: dict[str, Any]) -> bool:
    sc = message.get("serverContent")
    return isinstance(sc, dict) and bool(sc.get("modelTurn"))


def is_end(message: dict[str, Any]) -> bool:
    sc = message.get("serverContent")
    return isinstance(sc, dict) and bool(sc.get("turnComplete"))


async def rpc_round_trip(client: Any, name: str, message: dict[str, Any]) -> tuple[float, float]:
    """Seconds from sending ``message`` through the JSON-RPC client to the first reply event,
    and to its ``turnComplete`` (drained); the send's ack is awaited too."""
    acked = trio.Event()

    async def send() -> None:
        await client.send(name, message)
        acked.set()

    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        nursery.start_soon(send)
        first: float | None = None
        while True:
            method, params = await client.next_event()
            if method != "session.message":
                continue
            msg = params["message"]
            if first is None and is_reply(msg):
                first = time.perf_counter() - t0
            if is_end(msg):
                done = time.perf_counter() - t0
                break
        await acked.wait()
    assert first is not None
    return first, done
