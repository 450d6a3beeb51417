"""The chaos soak (CI form: ~1,000 turns). Long form::

    GEMINID_SOAK_TURNS=10000 .venv/bin/python -m pytest tests/soak/test_soak.py -s
    .venv/bin/python tests/soak/run_soak.py soak --turns 10000 [--seed N]

``GEMINID_SOAK_SEED`` fixes the fault sequence (the seed is printed either way). See
soak_lib.py for the checks and README.md ("Performance and reliability") for the figures.
"""

from __future__ import annotations

import pytest
from soak_lib import SoakParams, env_int, run_soak, soak_seed

pytestmark = pytest.mark.slow


async def test_chaos_soak(tmp_path):
    params = SoakParams(
        turns=env_int("GEMINID_SOAK_TURNS", 1000),
        sessions=env_int("GEMINID_SOAK_SESSIONS", 4),
        seed=soak_seed(),
    )
    result = await run_soak(params, tmp_path)
    assert not result.violations, result.text()
    assert result.report["turns"] >= params.turns
    # The run must actually have been under fire (the drivers go on until it was).
    assert result.report["faults_injected"] >= params.turns // 20
    # Replies must come: a turn whose reply never shows (a tool reply without the turn's token,
    # a session stuck reconnecting) costs reply_timeout each and hides behind a slow pass.
    assert result.report["reply_timeouts"] <= params.turns // 100, result.text()
    assert result.report["resumes"] > 0 and result.report["tool_calls"] > 0


@pytest.mark.parametrize("mode", ["no-replay", "reuse-stale-handle"])
async def test_soak_catches_a_broken_build(tmp_path, mode):
    """A deliberately broken daemon (tests/soak/broken_build.py) must FAIL the soak."""
    params = SoakParams(turns=env_int("GEMINID_SOAK_BREAK_TURNS", 240), sessions=3,
                        seed=soak_seed(), break_mode=mode, time_limit=300, reply_timeout=1.5,
                        quiet_timeout=5.0, fault_gap=(0.05, 0.2))
    result = await run_soak(params, tmp_path)
    # T1 (an acknowledged turn in no conversation) is what these two breaks cause; the known
    # replay-coverage bug (test_soak_findings.py) shows up as T2/A1, never as T1.
    losses = [v for v in result.violations if v.startswith("T1")]
    assert losses, "the soak did not notice the broken build:\n" + result.text()
