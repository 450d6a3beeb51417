"""A disk that stops taking writes while a client sends (issue #11 point 9, the session side).

Audio is acknowledged on enqueue, but only for seqs covered by a durable reservation (a restart
must never reuse a seq a client has seen). Once the reservation's write fails, the ack used to
wait forever, re-marking the checkpoint and logging ``checkpoint.failed`` every second; now it is
refused with ``NotDurable`` (-32007) at once, and the message is not sent either.

The store's writes fail for real: the real ``write_batch`` is pointed at a regular file instead
of the state directory, so every write fails in the kernel (ENOTDIR) as on a broken mount.
"""

from __future__ import annotations

import pytest
import trio
from session_harness import open_core
from structlog.testing import capture_logs

from geminid.daemon import checkpoint
from geminid.daemon.session import durability
from geminid.protocol import live
from geminid.protocol.errors import NotDurable

BLOCK = 8


async def test_an_ack_past_the_reserved_seqs_on_a_failing_disk_is_refused_at_once(
    state_dir, monkeypatch, autojump_clock
):
    monkeypatch.setattr(durability, "SEQ_BLOCK", BLOCK)  # reach the end of a block in a few sends
    not_a_dir = state_dir.parent / "not-a-directory"
    not_a_dir.write_text("")
    broken = [False]

    def batch(directory, items):
        return checkpoint.write_batch(not_a_dir if broken[0] else directory, items)

    audio = live.realtime_audio(b"\0" * 320)
    with capture_logs() as logs:
        async with open_core(state_dir, memory=True, write_batch=batch) as core:
            rec = await core.open()
            await rec.wait(lambda r: "live" in r.statuses())
            broken[0] = True
            acked: list[int] = []
            start = trio.current_time()
            with trio.fail_after(60), pytest.raises(NotDurable) as info:  # (virtual seconds)
                for _ in range(4 * BLOCK):
                    acked.append(await core.registry.send("s", audio))
            elapsed = trio.current_time() - start
            assert not core.store.healthy
            await trio.sleep(0.5)
            unsent = [e.seq for e in core.actor().buffer if e.seq == info.value.data["seq"]]
            core.nursery.cancel_scope.cancel()
    refused = info.value.data["seq"]
    assert acked and acked == list(range(1, len(acked) + 1)) and refused == acked[-1] + 1
    assert "could not be written" in info.value.message and "Not a directory" in info.value.message
    # Promptly: before the store's first retry (virtual time), not after a wait that never ends.
    assert elapsed < core.store.retry_interval
    assert unsent == []  # refused, so not queued for the upstream either
    assert core.metrics.not_durable == 1
    assert len([e for e in logs if e["event"] == "checkpoint.failed"]) <= 2
