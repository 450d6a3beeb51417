"""The checkpoint store, on a real filesystem (tmp_path)."""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from geminid.daemon import checkpoint as ck
from geminid.daemon.checkpoint import (
    HEADER_SIZE,
    BatchResult,
    CheckpointStore,
    WriterThread,
    decode_record,
    encode_record,
    write_batch,
)
from geminid.daemon.errors import CheckpointCorrupt, CheckpointWriteError

# --- codec ------------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
records = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
names = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", fullmatch=True)


@given(name=names, record=records)
def test_codec_round_trip(name: str, record: dict) -> None:
    assert decode_record(encode_record(name, record), name) == record


@given(blob=st.binary(max_size=400))
def test_decoder_on_arbitrary_bytes(blob: bytes) -> None:
    try:
        record = decode_record(blob)
    except CheckpointCorrupt:
        return
    assert isinstance(record, dict)  # only possible if blob is a valid encoding
    assert encode_record(json.loads(blob[HEADER_SIZE:])["session"], record) == blob


@given(record=records, payload=st.binary(max_size=200))
def test_decoder_on_valid_header_with_arbitrary_payload(record: dict, payload: bytes) -> None:
    # Forge a correct header (length and digest) over arbitrary payload bytes: the JSON and
    # structure checks must still only ever raise CheckpointCorrupt.
    import hashlib

    prefix = ck._PREFIX.pack(ck.MAGIC, ck.VERSION, 0, len(payload))
    blob = prefix + hashlib.sha256(prefix + payload).digest() + payload
    try:
        decode_record(blob)
    except CheckpointCorrupt:
        pass


@given(record=records, data=st.data())
def test_truncation_and_bit_flips_never_yield_a_wrong_record(record: dict, data: st.DataObject) -> None:
    blob = encode_record("kitchen", record)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(CheckpointCorrupt):
        decode_record(blob[:cut], "kitchen")
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    flipped = bytearray(blob)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CheckpointCorrupt):
        decode_record(bytes(flipped), "kitchen")
    extra = data.draw(st.binary(min_size=1, max_size=10))
    with pytest.raises(CheckpointCorrupt):
        decode_record(blob + extra, "kitchen")
    # Many random flips at once: exact record or CheckpointCorrupt, never anything else.
    for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=8)):
        flipped[pos] ^= data.draw(st.integers(1, 255))
    try:
        assert decode_record(bytes(flipped), "kitchen") == record
    except CheckpointCorrupt:
        pass


def test_record_under_another_name_is_corrupt() -> None:
    with pytest.raises(CheckpointCorrupt, match="belongs to"):
        decode_record(encode_record("a", {"x": 1}), "b")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "x" * 65, "sp ace", "ü", "..", "a\n"])
def test_invalid_names_refused(tmp_path: Path, bad: str) -> None:
    store = CheckpointStore(tmp_path)
    with pytest.raises(ValueError):
        store.mark_dirty(bad, dict)
    with pytest.raises(ValueError):
        encode_record(bad, {})


# --- store ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _load(directory: Path) -> ck.LoadReport:
    return CheckpointStore(directory).load_all()



async def _poll_until(cond, what: str, real_s: float = 60.0) -> None:
    """Wait until ``cond()`` under the autojump clock, bounded in *real* time: the store's
    writes run in a thread, and under load a thread call takes long enough for the virtual clock
    to run past any virtual bound (``fail_after``) while this loop polls."""
    give_up = time.monotonic() + real_s
    while not cond():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await trio.sleep(0.1)

async def test_round_trip_and_modes(tmp_path: Path, nursery: trio.Nursery) -> None:
    d = tmp_path / "ckpt"
    store = CheckpointStore(d)
    report = await trio.to_thread.run_sync(store.load_all)
    assert report.records == {} and report.quarantined == []
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    await nursery.start(store.run)
    rec = {"handle": "h1", "seq": 7, "turns": [{"text": "hé"}]}
    gen = store.mark_dirty("kitchen", lambda: rec)
    await store.wait_durable("kitchen", gen)
    f = d / "kitchen.ckpt"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert _load(d).records == {"kitchen": rec}
    assert store.stats.writes == 1 and store.stats.batches == 1 and store.stats.fsyncs == 2
    assert store.stats.bytes == f.stat().st_size
    assert [p.name for p in d.iterdir()] == ["kitchen.ckpt"]  # no temp files left


async def test_existing_dir_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "loose"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with capture_logs() as logs:
        await trio.to_thread.run_sync(CheckpointStore(d).load_all)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert any(e["event"] == "checkpoint.dir_mode_fixed" for e in logs)


async def test_group_commit_shares_batches(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = CheckpointStore(tmp_path)
    await nursery.start(store.run)
    n = 60

    async def client(i: int) -> None:
        for round_ in range(3):
            gen = store.mark_dirty(f"s{i}", lambda i=i, r=round_: {"i": i, "round": r})
            await store.wait_durable(f"s{i}", gen)

    async with trio.open_nursery() as clients:
        for i in range(n):
            clients.start_soon(client, i)
    # 180 durable writes; each round of 60 marks lands in one batch (plus at most a straggler).
    assert store.stats.writes <= 3 * n
    assert store.stats.batches <= 6, store.stats
    assert store.stats.fsyncs == store.stats.writes + store.stats.batches  # one dir fsync per batch
    assert _load(tmp_path).records == {f"s{i}": {"i": i, "round": 2} for i in range(n)}


async def test_coalescing_snapshots_latest_state_on_the_loop(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    store = CheckpointStore(tmp_path, coalesce=0.5)
    await nursery.start(store.run)
    state = {"n": 0}
    calls = []

    def snapshot() -> dict[str, Any]:
        trio.lowlevel.current_trio_token()  # raises RuntimeError off the event loop thread
        calls.append(state["n"])
        return dict(state)

    gen = 0
    for _ in range(100):
        state["n"] += 1
        gen = store.mark_dirty("s", snapshot)
        await trio.sleep(0.01)
    await store.wait_durable("s", gen)
    assert calls[-1] == 100
    assert len(calls) <= 4  # 1 s of marks, 0.5 s coalescing: intermediate states skipped
    assert _load(tmp_path).records == {"s": {"n": 100}}


async def test_deletion_is_durable(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = CheckpointStore(tmp_path)
    await nursery.start(store.run)
    await store.wait_durable("a", store.mark_dirty("a", lambda: {"x": 1}))
    await store.wait_durable("b", store.mark_dirty("b", lambda: {"x": 2}))
    gen = store.mark_deleted("a")
    await store.wait_durable("a", gen)
    assert not (tmp_path / "a.ckpt").exists()
    assert _load(tmp_path).records == {"b": {"x": 2}}
    # Deleting what was never written is fine too.
    await store.wait_durable("zz", store.mark_deleted("zz"))
    # A mark after a delete brings it back.
    await store.wait_durable("a", store.mark_dirty("a", lambda: {"x": 3}))
    assert _load(tmp_path).records == {"a": {"x": 3}, "b": {"x": 2}}
    assert store.stats.deletes == 2


async def test_deleted_sessions_leave_no_bookkeeping(tmp_path: Path, nursery: trio.Nursery) -> None:
    # Found by tests/stress: the store kept two dict entries per session name ever used, so a
    # long-running daemon that sees many short-lived names grew without bound.
    batch = _Switch()
    store = CheckpointStore(tmp_path, write_batch=batch)
    await nursery.start(store.run)
    old_gens = {}
    for i in range(50):
        name = f"s{i}"
        await store.wait_durable(name, store.mark_dirty(name, lambda i=i: {"i": i}))
        old_gens[name] = gen = store.mark_deleted(name)
        await store.wait_durable(name, gen)
    assert len(store._marked) == 0 and len(store._durable) == 0
    # Waits on generations of a forgotten session return at once (they are durable: deleted).
    with trio.fail_after(1):
        for name, gen in old_gens.items():
            await store.wait_durable(name, gen)
    # A name used again: its old generations are satisfied, new ones wait for the new write.
    gate = trio.Event()
    batch.fn = _gated(gate)
    new_gen = store.mark_dirty("s3", lambda: {"again": True})
    with trio.fail_after(1):
        await store.wait_durable("s3", old_gens["s3"])
    done = trio.Event()

    async def waiter() -> None:
        await store.wait_durable("s3", new_gen)
        done.set()

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    gate.set()
    await _poll_until(done.is_set, "the gated write")
    assert _load(tmp_path).records == {"s3": {"again": True}}
    # Concurrent waiters on one delete all wake, and the name is forgotten again.
    gen = store.mark_deleted("s3")
    async with trio.open_nursery() as waiters:
        for _ in range(3):
            waiters.start_soon(store.wait_durable, "s3", gen)
    assert "s3" not in store._marked


class _Switch:
    """A ``write_batch`` whose behaviour a test changes midway (the disk fails, recovers)."""

    def __init__(self) -> None:
        self.fn = write_batch

    def __call__(self, directory: Path, items: Any) -> BatchResult:
        return self.fn(directory, items)


def _gated(gate: trio.Event):
    # (the store's thread is not trio's: the loop is named explicitly)
    token = trio.lowlevel.current_trio_token()

    def write(directory: Path, items: Any) -> BatchResult:
        trio.from_thread.run(gate.wait, trio_token=token)
        return write_batch(directory, items)

    return write


async def test_flush_waits_for_everything(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = CheckpointStore(tmp_path, coalesce=0.05)
    await nursery.start(store.run)
    for i in range(10):
        store.mark_dirty(f"s{i}", lambda i=i: {"i": i})
    await store.flush()
    assert len(_load(tmp_path).records) == 10


async def test_cancellation_flushes_what_is_dirty(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, coalesce=60.0)  # would never write before the cancel
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        gens = [store.mark_dirty(f"s{i}", lambda i=i: {"i": i}) for i in range(5)]
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel(reason="SIGTERM")
    assert len(_load(tmp_path).records) == 5
    for i, gen in enumerate(gens):
        await store.wait_durable(f"s{i}", gen)  # already durable: returns
    # After the writer stopped, a new mark can no longer become durable: say so, don't hang.
    gen = store.mark_dirty("late", lambda: {})
    with pytest.raises(CheckpointWriteError, match="stopped"):
        await store.wait_durable("late", gen)


@pytest.mark.parametrize("coalesce", [0.0, 0.05])
async def test_cancel_racing_the_writer_loses_nothing(tmp_path: Path, coalesce: float) -> None:
    # The cancel arrives in the same tick as the marks, so the writer is cancelled right as
    # it hands the batch to its thread: the taken batch must go back to dirty and be flushed.
    for round_ in range(5):
        store = CheckpointStore(tmp_path, coalesce=coalesce)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for i in range(3):
                store.mark_dirty(f"s{i}", lambda i=i, r=round_: {"i": i, "round": r})
            await trio.lowlevel.cancel_shielded_checkpoint()  # let the writer wake up
            nursery.cancel_scope.cancel()
        assert _load(tmp_path).records == {f"s{i}": {"i": i, "round": round_} for i in range(3)}


def _enospc_batch(directory: Path, items: Any) -> BatchResult:
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return BatchResult({name: err for name, _ in items}, 0, 0, 0, 0)


async def test_write_failure_stays_dirty_and_latest_state_wins(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    batch = _Switch()
    store = CheckpointStore(tmp_path, retry_interval=1.0, write_batch=batch)
    await nursery.start(store.run)
    await store.wait_durable("s", store.mark_dirty("s", lambda: {"v": "old"}))

    state = {"v": "new-1"}
    batch.fn = _enospc_batch
    with capture_logs() as logs:
        gen1 = store.mark_dirty("s", lambda: dict(state))
        with pytest.raises(CheckpointWriteError) as info:
            await store.wait_durable("s", gen1)
    assert info.value.data["errno"] == errno.ENOSPC
    assert any(e["event"] == "checkpoint.write_failed" and e["errno"] == "ENOSPC" for e in logs)
    assert store.stats.failures >= 1
    assert _load(tmp_path).records == {"s": {"v": "old"}}  # the old file is intact
    # Still failing after a retry interval: it is retried, not forgotten.
    # (The autojump clock may jump while the worker thread runs, so count, don't time.)
    # (Bounded in real time: the retries run in a thread, and under load its calls take long
    # enough for the virtual clock to run past any virtual bound while the loop polls.)
    t0 = trio.current_time()
    await _poll_until(lambda: store.stats.failures >= 3, "a retry after a write failure")
    assert trio.current_time() - t0 >= 2 * store.retry_interval - 0.11  # spaced, no hot loop

    # The disk recovers; meanwhile the state moved on. The retry writes the latest snapshot.
    state["v"] = "new-2"
    batch.fn = write_batch
    gen2 = store.mark_dirty("s", lambda: dict(state))
    await store.wait_durable("s", gen2)
    await store.wait_durable("s", gen1)  # superseded by the later success
    assert _load(tmp_path).records == {"s": {"v": "new-2"}}


async def test_failure_of_one_session_does_not_hold_back_others(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    def fail_bad(directory: Path, items: Any) -> BatchResult:
        good = [(n, r) for n, r in items if n != "bad"]
        res = write_batch(directory, good)
        errors = dict(res.errors)
        if len(good) != len(items):
            errors["bad"] = OSError(errno.EIO, "I/O error")
        return BatchResult(errors, res.writes, res.deletes, res.fsyncs, res.bytes)

    store = CheckpointStore(tmp_path, retry_interval=30.0, write_batch=fail_bad)
    await nursery.start(store.run)
    bad = store.mark_dirty("bad", lambda: {})
    with capture_logs():
        with pytest.raises(CheckpointWriteError):
            await store.wait_durable("bad", bad)
        t0 = trio.current_time()
        await store.wait_durable("good", store.mark_dirty("good", lambda: {"ok": True}))
    assert trio.current_time() - t0 < 1.0  # not delayed by bad's 30 s hold
    assert _load(tmp_path).records == {"good": {"ok": True}}


async def test_snapshot_errors_are_write_failures(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    store = CheckpointStore(tmp_path)
    await nursery.start(store.run)
    with capture_logs() as logs:
        with pytest.raises(CheckpointWriteError):
            await store.wait_durable("s", store.mark_dirty("s", lambda: 1 / 0))  # type: ignore[arg-type,return-value]
        with pytest.raises(CheckpointWriteError):
            await store.wait_durable("t", store.mark_dirty("t", lambda: {"x": object()}))
    assert {"checkpoint.snapshot_failed", "checkpoint.write_failed"} <= {e["event"] for e in logs}
    # The writer survived both.
    await store.wait_durable("u", store.mark_dirty("u", lambda: {"fine": 1}))


def test_real_fsync_failure_never_retried_on_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch(tmp_path, [("s", {"v": 1})])
    fsynced_fds = []
    real_fsync = os.fsync

    def bad_fsync(fd: int) -> None:
        fsynced_fds.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else fd)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    res = write_batch(tmp_path, [("s", {"v": 2})])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert isinstance(res.errors["s"], OSError) and res.errors["s"].errno == errno.EIO
    assert len(fsynced_fds) == 1  # fsync tried once, never again on that file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ckpt"]  # temp removed
    assert _load(tmp_path).records == {"s": {"v": 1}}
    # The next attempt writes a brand-new temp file.
    assert write_batch(tmp_path, [("s", {"v": 2})]).errors == {}
    assert _load(tmp_path).records == {"s": {"v": 2}}


def test_corrupt_files_are_quarantined_and_the_rest_load(tmp_path: Path) -> None:
    assert write_batch(tmp_path, [(n, {"name": n}) for n in ["ok", "trunc", "flip", "garbage", "empty"]]).errors == {}
    blob = (tmp_path / "trunc.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(blob[:-5])
    flip = bytearray((tmp_path / "flip.ckpt").read_bytes())
    flip[-3] ^= 0x04
    (tmp_path / "flip.ckpt").write_bytes(bytes(flip))
    (tmp_path / "garbage.ckpt").write_bytes(os.urandom(300))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / ".ok.ckpt.tmp-0123456789ab").write_bytes(b"half a write")
    (tmp_path / "notes.txt").write_text("not ours")

    with capture_logs() as logs:
        report = _load(tmp_path)
    assert report.records == {"ok": {"name": "ok"}}
    reasons = {p.name.split(".ckpt")[0]: why for p, why in report.quarantined}
    assert set(reasons) == {"trunc", "flip", "garbage", "empty"}
    assert "checksum" in reasons["flip"] and "length" in reasons["trunc"]
    for p, _ in report.quarantined:
        assert p.exists() and ".ckpt.corrupt-" in p.name
    assert not list(tmp_path.glob(".*tmp*"))
    assert (tmp_path / "notes.txt").exists()
    assert sum(e["event"] == "checkpoint.quarantined" for e in logs) == 4
    # A second load is clean: nothing left to quarantine.
    again = _load(tmp_path)
    assert again.records == {"ok": {"name": "ok"}} and again.quarantined == []


def test_quarantine_names_do_not_collide(tmp_path: Path) -> None:
    for _ in range(3):
        (tmp_path / "x.ckpt").write_bytes(b"junk")
        _load(tmp_path)
    assert len(list(tmp_path.glob("x.ckpt.corrupt-*"))) == 3


# --- process crash (kill -9) -------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    import structlog
    import trio
    from geminid.daemon.checkpoint import CheckpointStore

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    async def main(directory):
        store = CheckpointStore(directory)
        report = await trio.to_thread.run_sync(store.load_all)
        assert not report.quarantined, report.quarantined
        counters = {f"s{i}": report.records.get(f"s{i}", {"n": 0})["n"] for i in range(4)}
        rng = random.Random()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            print("ready", flush=True)
            while True:
                gens = {}
                for name in counters:
                    counters[name] += 1
                    n = counters[name]
                    rec = {"n": n, "check": n * 7, "pad": "x" * rng.randrange(0, 20000)}
                    gens[name] = store.mark_dirty(name, lambda rec=rec: rec)
                for name, gen in gens.items():
                    await store.wait_durable(name, gen)
                print(" ".join(f"{k}={v}" for k, v in counters.items()), flush=True)

    trio.run(main, Path(sys.argv[1]))
    """
)


@pytest.mark.slow
def test_kill_9_leaves_only_loadable_files(tmp_path: Path) -> None:
    """Process crashes (SIGKILL), not power loss: the page cache survives a kill -9.

    Every file left must load, and nothing reported durable may be lost.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    d = tmp_path / "state"
    rng = random.Random(1234)
    durable: dict[str, int] = {}
    temps_seen = 0
    for i in range(20):
        with open(tmp_path / f"child-{i}.err", "w+") as errf:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(d)], stdout=subprocess.PIPE, stderr=errf, text=True
            )
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line != "ready\n":
                    proc.kill()
                    proc.wait()
                    errf.seek(0)
                    pytest.fail(f"child did not start: {line!r}\n{errf.read()}")
                time.sleep(rng.uniform(0.0, 0.3))
                proc.kill()
                out, _ = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            errf.seek(0)
            assert proc.returncode == -9, errf.read()
        for row in out.splitlines():
            for pair in row.split():
                k, _, v = pair.partition("=")
                durable[k] = max(durable.get(k, 0), int(v))
        temps_seen += len(list(d.glob(".*.ckpt.tmp-*")))  # kills that landed mid-write
        report = _load(d)
        assert report.quarantined == []
        assert not list(d.glob(".*.ckpt.tmp-*"))
        for name, rec in report.records.items():
            assert rec["check"] == rec["n"] * 7
            assert rec["n"] >= durable.get(name, 0), (name, rec["n"], durable)
    assert max(durable.values()) > 20  # the child really wrote a lot
    print(f"kill -9 x20: {max(durable.values())} rounds durable, {temps_seen} stray temp files")


# --- health (issue #11.9: a disk that refuses every write is reported at once) ---------------


async def test_store_turns_unhealthy_when_every_write_fails_and_healthy_on_success(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    batch = _Switch()
    store = CheckpointStore(tmp_path, retry_interval=1.0, write_batch=batch)
    await nursery.start(store.run)
    assert store.healthy
    store.check_healthy()  # no error while healthy
    await store.wait_durable("a", store.mark_dirty("a", lambda: {"n": 1}))
    batch.fn = _enospc_batch
    seen: list[CheckpointWriteError] = []

    async def watch() -> None:
        seen.append(await store.wait_unhealthy())

    nursery.start_soon(watch)
    await trio.testing.wait_all_tasks_blocked()
    assert seen == []
    with capture_logs() as logs:
        with pytest.raises(CheckpointWriteError):
            await store.wait_durable("a", store.mark_dirty("a", lambda: {"n": 2}))
        await trio.testing.wait_all_tasks_blocked()
    assert not store.healthy and len(seen) == 1
    assert seen[0].data["errno"] == "ENOSPC"
    with pytest.raises(CheckpointWriteError, match="refuses writes"):
        store.check_healthy()
    assert [e["event"] for e in logs].count("checkpoint.unhealthy") == 1
    # The retries still fail: still unhealthy, logged once only. (The autojump clock may jump
    # while the worker thread runs, so count attempts, don't time them.)
    failures = store.stats.failures
    with capture_logs() as logs:
        await _poll_until(lambda: store.stats.failures >= failures + 2, "two more failed retries")
    assert not store.healthy and "checkpoint.unhealthy" not in [e["event"] for e in logs]
    # The disk recovers: the store's own retry writes the record and says so.
    batch.fn = write_batch
    with capture_logs() as logs:
        await _poll_until(lambda: store.healthy, "the store to turn healthy")
    assert "checkpoint.healthy" in [e["event"] for e in logs]
    assert _load(tmp_path).records == {"a": {"n": 2}}


async def test_one_unencodable_record_does_not_make_the_store_unhealthy(
    tmp_path: Path, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    store = CheckpointStore(tmp_path)
    await nursery.start(store.run)
    with capture_logs():
        with pytest.raises(CheckpointWriteError):
            await store.wait_durable("bad", store.mark_dirty("bad", lambda: {"x": float("nan")}))
    assert store.healthy


async def test_seams_are_constructor_keywords(tmp_path: Path, nursery: trio.Nursery) -> None:
    calls: list[str] = []

    async def inline(fn: Any, *args: Any) -> Any:
        calls.append(getattr(fn, "__name__", "?"))
        return fn(*args)

    store = CheckpointStore(tmp_path, run_sync=inline)
    await nursery.start(store.run)
    await store.wait_durable("s", store.mark_dirty("s", lambda: {"ok": 1}))
    assert calls == ["_ensure_dir", "write_batch"]


# -- the store's worker thread ------------------------------------------------------------------


async def test_the_writer_thread_runs_calls_in_order_and_raises_their_errors() -> None:
    writer = WriterThread(name="t-writer")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    assert [await writer(job, i) for i in range(3)] == [0, 2, 4]
    assert seen == [(0, "t-writer"), (1, "t-writer"), (2, "t-writer")]

    def fails() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        await writer(fails)


async def test_the_writer_thread_is_cancellable_only_before_the_call_starts() -> None:
    writer = WriterThread()
    calls: list[str] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer(calls.append, "never")
    assert calls == []  # cancelled before the hand-over: not run

    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    result: list[str] = []
    with trio.CancelScope() as scope:

        async def cancel_when_running() -> None:
            await trio.to_thread.run_sync(started.wait, 5)
            scope.cancel()
            await trio.sleep(0.05)
            release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_running)
            result.append(await writer(slow))  # waits the call out, as run_sync does
    assert result == ["done"]


async def test_the_writer_thread_exits_when_idle_and_comes_back() -> None:
    writer = WriterThread(name="t-idle", idle_exit=0.05)

    def names() -> list[str]:
        return [t.name for t in threading.enumerate()]

    assert "t-idle" in await writer(names)
    for _ in range(100):
        if "t-idle" not in names():
            break
        await trio.sleep(0.02)
    assert "t-idle" not in names()
    assert "t-idle" in await writer(names)
