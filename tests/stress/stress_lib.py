"""Shared helpers of the stress tests: scale, resource counters, settling, and the report.

``GEMINID_STRESS_SCALE`` (default 1) multiplies every size, e.g. ``GEMINID_STRESS_SCALE=10`` for
the long form. The counters are the ones a leak shows in: trio tasks alive
(``trio.lowlevel.current_statistics().tasks_living``), open file descriptors (``/proc/self/fd``),
resident memory (``VmRSS``) and Python heap (``tracemalloc``). Figures are printed (``-s`` shows
them, and they are in the captured output of a failure); the assertions on them are generous
sanity bounds, never tight timing or memory limits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import structlog
import trio

# The in-process session harness (fake upstream + store + registry) lives with the session tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "session"))

SCALE = float(os.environ.get("GEMINID_STRESS_SCALE", "1") or "1")
#: tracemalloc makes the churn 4-5x slower: on request only (GEMINID_STRESS_TRACEMALLOC=1).
TRACEMALLOC = os.environ.get("GEMINID_STRESS_TRACEMALLOC", "") not in ("", "0")


def scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, int(n * SCALE))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks_living() -> int:
    return trio.lowlevel.current_statistics().tasks_living


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@attrs.define
class Usage:
    tasks: int
    fds: int
    rss_kib: int
    blocks: int  # sys.getallocatedblocks(): Python objects alive, cheap to read
    heap: int  # tracemalloc current bytes (0 when not tracing)

    @classmethod
    def now(cls) -> Usage:
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        return cls(tasks_living(), fd_count(), rss_kib(), sys.getallocatedblocks(), heap)


def report(title: str, before: Usage, after: Usage, **extra: object) -> str:
    lines = [
        f"[stress] {title}",
        f"  tasks alive   {before.tasks:>8} -> {after.tasks:<8}",
        f"  open fds      {before.fds:>8} -> {after.fds:<8}",
        f"  RSS KiB       {before.rss_kib:>8} -> {after.rss_kib:<8} ({after.rss_kib - before.rss_kib:+d})",
    ]
    lines.append(
        f"  alloc blocks  {before.blocks:>8} -> {after.blocks:<8} ({after.blocks - before.blocks:+d})"
    )
    if before.heap or after.heap:
        lines.append(
            f"  heap KiB      {before.heap // 1024:>8} -> {after.heap // 1024:<8} "
            f"({(after.heap - before.heap) // 1024:+d}, tracemalloc)"
        )
    for key, value in extra.items():
        lines.append(f"  {key.replace('_', ' '):<13} {value}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


async def settle(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (real time, polling) until ``pred()`` holds; tasks and fds take a few ticks to go."""
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.01)
    assert pred(), f"timed out after {timeout} s waiting for: {what}"


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.t0:.2f} s"


@contextlib.contextmanager
def quiet_logs(level: int = logging.WARNING) -> Iterator[None]:
    """Log only warnings and errors for the duration (tens of thousands of info lines would
    dominate the run time and say nothing); the previous structlog configuration is restored."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.configure(**old)
