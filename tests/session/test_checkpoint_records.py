"""Checkpoint records at restore time, starting from a REAL record (``SessionActor.snapshot()``
as written by the store):

- hypothesis: truncations and bit flips of the real file never decode to anything but the exact
  record (or CheckpointCorrupt);
- a record that passes the checksum but is unusable (a bug, a version skew, a hand edit) costs
  that session alone: found by this file, such a record used to crash its actor on every restart
  until the supervisor escalated, taking the daemon (and every other session) down again on each
  start, a crash loop; and a non-number ``last_alive_at`` failed the daemon's start outright.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from session_harness import TOOL_SETUP, Recorder, open_core

from geminid.daemon.checkpoint import decode_record, encode_record
from geminid.daemon.errors import CheckpointCorrupt
from geminid.daemon.session import HANDLE_CHECKPOINT_DELAY
from geminid.daemon.session.record import SessionRecord


async def _make_real_record(state_dir: Path) -> tuple[bytes, dict]:
    """A session with history, a pending tool call and an unconsumed turn, as written to disk."""
    async with open_core(state_dir) as core:
        rec = await core.open("kitchen", TOOL_SETUP)
        await core.say("kitchen", "remember: the door code is 4711")
        await rec.wait(lambda r: r.turn_ends() == 1)
        # Its reply never ends (the call stays pending), so the turn stays unconsumed too. (A
        # later turn would interrupt the model and cancel the call.)
        await core.say("kitchen", "what is the weather in Rome? \u00e9\U0001f600")
        await rec.wait(lambda r: any("toolCall" in m for m in r.messages()))
        await core.fake.stall_all()
        await trio.sleep(HANDLE_CHECKPOINT_DELAY + 0.2)  # the pending call is written lazily
        await core.store.flush()
        blob = (state_dir / "kitchen.ckpt").read_bytes()
        core.nursery.cancel_scope.cancel()
    return blob, decode_record(blob, "kitchen")


_REAL: dict[str, Any] = {}


def real_record() -> tuple[bytes, dict]:
    """Built once per test run (a sync helper: hypothesis tests are not trio tests)."""
    if not _REAL:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _REAL["blob"], _REAL["record"] = trio.run(_make_real_record, Path(d) / "state")
    return _REAL["blob"], copy.deepcopy(_REAL["record"])


async def areal_record(tmp_path: Path) -> tuple[bytes, dict]:
    """The same, from inside a trio test (where trio.run is not allowed)."""
    if not _REAL:
        _REAL["blob"], _REAL["record"] = await _make_real_record(tmp_path / "real")
    return _REAL["blob"], copy.deepcopy(_REAL["record"])


def test_the_real_record_has_everything_worth_fuzzing():
    _, record = real_record()
    assert record["handle"] and record["pending"] and record["pending_tools"] and record["transcript"]


@settings(max_examples=200)
@given(data=st.data())
def test_truncated_or_bit_flipped_real_checkpoint_is_corrupt(data):
    blob, record = real_record()
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    with pytest.raises(CheckpointCorrupt):
        decode_record(blob[:cut], "kitchen")
    bit = data.draw(st.integers(0, len(blob) * 8 - 1), label="bit")
    flipped = bytearray(blob)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CheckpointCorrupt):
        decode_record(bytes(flipped), "kitchen")
    for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=8), label="positions"):
        flipped[pos] ^= data.draw(st.integers(1, 255))
    try:
        assert decode_record(bytes(flipped), "kitchen") == record
    except CheckpointCorrupt:
        pass


# ---- checksum-valid but unusable records ----------------------------------------------------

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2**40), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.dictionaries(st.sampled_from(["seq", "message", "role", "text"]), st.text(max_size=3), max_size=2), max_size=2),
)
FIELDS = ["setup", "handle", "handle_issued_at", "last_alive_at", "created_at", "seq_reserved", "event_reserved",
          "pending", "pending_tools", "lost_tools", "transcript", "reconnects", "context_lost", "version"]


@settings(max_examples=150)
@given(field=st.sampled_from(FIELDS), value=junk, drop=st.booleans())
@example(field="seq_reserved", value="x", drop=False)
@example(field="pending", value=[{"seq": "1"}], drop=False)
@example(field="handle", value=7, drop=False)
def test_a_mangled_real_record_restores_or_is_refused_cleanly(field, value, drop):
    """Either the record schema takes it (and its own record of it is a valid checkpoint again),
    or the registry's pre-check refuses it: never an exception of another kind later. The actor
    restores from the same ``SessionRecord.from_dict``, so no actor is needed to show it."""
    _, record = real_record()
    if drop:
        record.pop(field, None)
    else:
        record[field] = value
    json.dumps(record)  # still a JSON document: the checksum would pass
    trio.run(_restore_or_refuse, record)


async def _restore_or_refuse(record: dict) -> None:
    from geminid.daemon.registry import unusable_record

    problem = unusable_record(record)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    parsed = SessionRecord.from_dict(record, name="kitchen")
    assert SessionRecord.from_dict(parsed.to_dict(), name="kitchen") == parsed
    encode_record("kitchen", parsed.to_dict())


@pytest.mark.parametrize(
    "field, value",
    [("seq_reserved", "x"), ("pending", [{"seq": 1}]), ("transcript", 5), ("pending_tools", [[1]]),
     ("reconnects", "z"), ("handle", 7), ("created_at", "t"), ("last_alive_at", "yesterday")],
)
async def test_an_unusable_record_costs_its_session_alone(tmp_path, field, value):
    _, good = await areal_record(tmp_path)
    bad = copy.deepcopy(good)
    bad[field] = value
    bad["session"] = "poisoned"
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    for name, record in (("kitchen", good), ("poisoned", bad)):
        (state_dir / f"{name}.ckpt").write_bytes(encode_record(name, record))
    with trio.fail_after(30):
        async with open_core(state_dir) as core:  # loads both files from disk
            # The healthy neighbour restores and talks; the poisoned one is gone, with its file.
            rec = Recorder()
            core.registry.attach("kitchen", rec, None)
            assert "poisoned" not in core.registry
            await core.say("kitchen", "still there?")
            await rec.wait(lambda r: r.turn_ends() >= 1)
            await trio.sleep(0.5)  # (long enough for a crash loop to show)
            assert core.metrics.crashes == 0
            assert not (state_dir / "poisoned.ckpt").exists()
            core.nursery.cancel_scope.cancel()


async def test_unusable_record_reasons(tmp_path):
    from geminid.daemon.registry import unusable_record

    _, good = await areal_record(tmp_path)
    assert unusable_record(good) is None
    assert "setup" in unusable_record({**good, "setup": []})
    assert unusable_record({**good, "seq_reserved": "x"}) == "TypeError: checkpoint field 'seq_reserved' is a str"
    assert unusable_record({**good, "pending": [{"seq": 1, "message": {"bogus": {}}}]}) is not None
