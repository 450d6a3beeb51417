"""Smoke test: every benchmark in tests/bench runs to completion at a minimal size and prints
its table, so that the benchmarks cannot rot. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

MINIMAL = {
    "bench_relay_latency.py": ["-n", "5"],
    "bench_throughput.py": ["-n", "300", "--repeats", "1", "--window", "32"],
    "bench_goaway.py": ["-r", "1", "--spacing", "0.3"],
    "bench_drop_resume.py": ["-n", "2"],
    "bench_scale.py": ["-n", "5", "-c", "5"],
    "bench_startup.py": ["-n", "1", "--sessions", "2"],
    "bench_checkpoint.py": ["-n", "5", "--load", "2"],
    "bench_ws_layers.py": ["-n", "200", "--repeats", "1"],
    "bench_json.py": ["-n", "200", "--repeats", "1"],
    "bench_live_endpoint.py": ["-n", "5", "--warmup", "2"],
}


def test_every_benchmark_is_covered() -> None:
    assert sorted(p.name for p in HERE.glob("bench_*.py")) == sorted(MINIMAL)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(MINIMAL))
def test_benchmark_runs(script: str) -> None:
    env = dict(os.environ)
    for var in ("BENCH_PYSPY", "BENCH_PYSPY_ARGS", "BENCH_KEEP"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *MINIMAL[script]],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=HERE.parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "## goals" in proc.stdout or "| " in proc.stdout
    assert "|---" in proc.stdout  # a table was printed
