"""The orjson fast paths (protocol/jsoncodec.py) answer exactly what the stdlib rules answer.

Each check runs the public function twice, with the fast path and with it switched off
(``jsoncodec._orjson = None``, as on a machine without orjson), on generated JSON and on the
texts where orjson and the stdlib are known to differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from geminid.daemon.events import Event
from geminid.protocol import jsoncodec, jsonrpc, live
from geminid.protocol.errors import FrameError, LiveMessageError

pytestmark = pytest.mark.skipif(not jsoncodec.FAST, reason="orjson is not installed")


@contextmanager
def stdlib_only() -> Iterator[None]:
    saved = jsoncodec._orjson
    jsoncodec._orjson = None
    try:
        yield
    finally:
        jsoncodec._orjson = saved


def both(fn: Any, *args: Any) -> tuple[Any, Any]:
    """(fast result, stdlib result); an exception is returned as ``(type, str)``."""

    def run() -> Any:
        try:
            value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - compared, not swallowed
            return ("raised", type(exc).__name__, str(exc))
        return ("value", type(value).__name__, value)

    fast = run()
    with stdlib_only():
        slow = run()
    return fast, slow


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)

#: Texts on which orjson alone would answer differently from the strict rules.
TRICKY = [
    b'{"a":1,"a":2}',  # duplicate key: orjson keeps the last silently
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"k":1,"k":1}}',
    b'{"id":123456789012345678901234567890}',  # orjson: a float
    b'{"x":"a:b","y":1}',  # a colon inside a string
    b'{"x":NaN}',
    b'{"x":Infinity}',
    b'[1e400]',
    b'"\\ud800"',  # lone surrogate escape: the stdlib accepts it
    b'\xef\xbb\xbf{}',
    b'{"x":"\xff"}',
    b'[' * 100 + b']' * 100,
    b'[' * 5000 + b']' * 5000,
    b'{"a":' * 80 + b'1' + b'}' * 80,
    b'{"x":"\x01"}',
    b" {} ",
    b"null",
    b"{}",
    b'{"a":-0,"b":1.5,"c":[true,false,null]}',
]


@pytest.mark.parametrize("text", TRICKY)
def test_strict_loads_agrees_on_the_known_differences(text: bytes) -> None:
    fast, slow = both(jsonrpc.loads, text)
    assert fast == slow


@given(json_values, st.sampled_from([", ", ":", ","]))
@example({"a": [1, {"b": "c"}]}, ", ")
def test_strict_loads_agrees_on_generated_json(value: Any, sep: str) -> None:
    text = json.dumps(value, separators=(sep if sep != ":" else ",", ":"), ensure_ascii=False)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate cannot be a UTF-8 line
    fast, slow = both(jsonrpc.loads, raw)
    assert fast == slow


@given(st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=4), st.data())
def test_a_repeated_key_is_always_refused(obj: dict[str, int], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    body = json.dumps(obj)[1:-1] + ", " + json.dumps(key) + ": 0"
    fast, slow = both(jsonrpc.loads, ("{" + body + "}").encode("utf-8", "surrogatepass"))
    assert fast == slow
    assert fast[0] == "raised"


@pytest.mark.parametrize(
    "obj",
    [
        {"a": float("nan")},
        {"a": math.inf},
        {"a": "\ud800"},
        {"a": 2**70},
        {1: "int key"},
        {"a": None, "b": [1, 2.5, "é"]},
        {"jsonrpc": "2.0", "id": 3, "result": {"seq": 7}},
    ],
)
def test_dumps_agrees(obj: Any) -> None:
    fast, slow = both(jsonrpc.dumps, obj)
    if fast[0] == "value":
        assert json.loads(fast[2]) == json.loads(slow[2])
    else:
        assert fast == slow


@given(json_values)
def test_dumps_and_live_encode_agree_on_generated_json(value: Any) -> None:
    for fn in (jsonrpc.dumps, live.encode):
        fast, slow = both(fn, {"v": value})
        assert fast[0] == slow[0]
        if fast[0] == "value":
            assert json.loads(fast[2]) == json.loads(slow[2])


def test_live_encode_still_refuses_nan() -> None:
    for bad in (float("nan"), math.inf):
        with pytest.raises(LiveMessageError):
            live.encode({"x": bad})


def test_live_encode_of_an_audio_chunk_is_fast_and_equal() -> None:
    msg = live.realtime_audio(bytes(range(256)) * 4)
    assert jsoncodec.dumps_fast(msg) is not None  # the hot path really takes orjson
    fast, slow = both(live.encode, msg)
    assert fast == slow


def test_strict_loads_of_an_audio_line_takes_the_fast_path() -> None:
    line = jsonrpc.encode_request(1, "session.send", {"session": "s", "message": live.realtime_audio(b"\0" * 976)})
    assert jsoncodec.loads_strict_fast(line.rstrip(b"\n")) is not None


@pytest.mark.parametrize(
    "frame",
    [
        b'{"serverContent":{"turnComplete":true}}',
        b'{"setupComplete":{}}',
        b'{"serverContent":{"modelTurn":{"parts":[{"text":"a:b"}]}},"x":NaN}',
        b"[]",
        b"{}",
        b"not json",
        '{"serverContent":{"modelTurn":{"parts":[{"text":"\ud800"}]}}}',
    ],
)
def test_server_frames_parse_the_same(frame: bytes | str) -> None:
    def parse(f: bytes | str) -> Any:
        try:
            m = live.parse_server_frame(f)
        except FrameError as exc:
            return ("FrameError", str(exc)[:40])
        return None if m is None else (m.kind, m.raw)

    fast, slow = both(parse, frame)
    assert fast == slow


def test_event_lines_are_equal_json() -> None:
    params = {"session": "s", "seq": 1, "message": {"serverContent": {"modelTurn": {"parts": [{"text": "é:\ud800"}]}}}}
    for p in (params, {"session": "s", "seq": 2, "message": {"x": None}}):
        fast = Event.build(1, "session.message", p).line
        with stdlib_only():
            slow = Event.build(1, "session.message", p).line
        assert fast.endswith(b"\n")
        assert json.loads(fast) == json.loads(slow)


def test_encoded_lines_hold_only_their_own_bytes() -> None:
    """orjson's output object keeps its whole buffer (4 KiB or more for a 90 B line); event
    lines are kept in every session's ring, so the fast path must hand back a compact copy."""
    import tracemalloc

    params = {"session": "s1", "status": "live", "seq": 3}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lines = [Event.build(i, "session.status", params).line for i in range(2000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(lines[0]) < 120
    assert held / len(lines) < 600  # the Event itself, and a line of under 120 bytes


def _record_both(record: Any) -> tuple[Any, Any]:
    from geminid.daemon.checkpoint import decode_record, encode_record

    def enc() -> Any:
        return decode_record(encode_record("s", record), "s")

    return both(enc)


@given(json_values)
def test_checkpoint_records_read_back_the_same_on_both_paths(value: Any) -> None:
    record = {"handle": None, "v": value, "t": 1765051234.25}
    fast, slow = _record_both(record)
    assert fast == slow
    if fast[0] == "value":
        assert fast[2] == record


@pytest.mark.parametrize(
    "value",
    [float("nan"), math.inf, -math.inf, [1, {"x": math.inf}], {1: "int key"}, 2**70, "\ud800", 1e16, "é"],
)
def test_checkpoint_records_agree_where_orjson_differs(value: Any) -> None:
    fast, slow = _record_both({"context_lost": None, "v": value})
    assert fast == slow


def test_a_non_finite_float_is_refused_as_before() -> None:
    assert jsoncodec.dumps_finite_fast({"a": None, "b": [math.nan]}) is None
    assert jsoncodec.dumps_finite_fast({"a": 1, "b": [math.inf]}) is None  # no null: orjson wrote one
    out = jsoncodec.dumps_finite_fast({"a": None, "b": [1.5, "ü"]})
    assert out == '{"a":null,"b":[1.5,"ü"]}'.encode()  # the fast path is taken
