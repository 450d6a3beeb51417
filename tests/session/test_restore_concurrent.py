"""Start-up restores checkpointed sessions concurrently (bounded), not one after another.

Each restored session waits for its own durable seq reservation before the registry reports
ready. Restored one after another, N sessions cost at least N group-commit batches of the store
before READY=1 (~9 ms each on this disk); restored together, the store's group commit folds
their reservations into a few batches. The batch count is what this test checks (no timing).
"""

from __future__ import annotations

import trio
from session_harness import TEXT_SETUP, open_core

N = 20


async def _checkpointed_sessions(state_dir) -> None:
    async with open_core(state_dir) as core:
        for i in range(N):
            await core.registry.open(f"s{i:02}", TEXT_SETUP)  # returns once its record is durable
        core.nursery.cancel_scope.cancel()


async def test_restore_folds_the_reservations_into_few_batches(tmp_path):
    state_dir = tmp_path / "state"
    with trio.fail_after(60):
        await _checkpointed_sessions(state_dir)
        assert len(list(state_dir.glob("*.ckpt"))) == N
        async with open_core(state_dir) as core:
            # open_core returns once the registry reported ready: every session restored.
            assert all(core.actor(f"s{i:02}") is not None for i in range(N))
            assert core.store.stats.batches < N // 2, core.store.stats
            core.nursery.cancel_scope.cancel()

