"""Pure tests: LineFramer and the JSON-RPC parser/encoder."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.protocol import jsonrpc as J
from geminid.protocol.errors import INVALID_REQUEST, PARSE_ERROR
from geminid.protocol.framing import LineFramer, Oversize, Truncated


def test_lines_crlf_blank_and_partial():
    f = LineFramer(100)
    assert f.feed(b'a\nb\r\n\n') == [b"a", b"b", b""]
    assert f.feed(b"par") == []
    assert f.feed(b"tial\nrest") == [b"partial"]
    assert f.eof() == Truncated(4)
    assert f.eof() is None


def test_oversize_once_then_resync():
    f = LineFramer(10)
    assert f.feed(b"x" * 8) == []
    assert f.feed(b"y" * 8) == [Oversize(16)]
    assert f.buffered == 0 and f.skipping
    assert f.feed(b"z" * 1000) == []
    assert f.feed(b"zz\nok\n") == [b"ok"]
    assert f.feed(b"0123456789\n") == [b"0123456789"]  # exactly the limit is fine
    assert f.feed(b"0123456789A\n") == [Oversize(11)]


def test_oversize_at_eof_is_truncated():
    f = LineFramer(4)
    f.feed(b"123456")
    assert f.eof() == Truncated(6, oversize=True)


def test_100mib_line_bounded_buffer():
    f = LineFramer(1024)
    chunk = b"a" * 65536
    peak = 0
    marks = []
    for _ in range(1600):  # 100 MiB
        marks += f.feed(chunk)
        peak = max(peak, f.buffered)
    marks += f.feed(b"\n{}\n")
    assert marks == [Oversize(65536), b"{}"]
    assert peak <= 1024


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=20), st.data())
def test_any_chunking_gives_same_lines(lines, data):
    blob = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=10)))
    f = LineFramer(1000)
    out = []
    prev = 0
    for c in [*cuts, len(blob)]:
        out += f.feed(blob[prev:c])
        prev = c
    expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    assert out == expected
    assert f.eof() is None


@given(st.binary(max_size=300), st.integers(1, 50))
def test_framer_never_exceeds_limit(blob, limit):
    f = LineFramer(limit)
    for i in range(0, len(blob), 7):
        for item in f.feed(blob[i : i + 7]):
            assert isinstance(item, Oversize) or len(item) <= limit
        assert f.buffered <= limit


@pytest.mark.parametrize(
    "line, code, rid",
    [
        (b"{", PARSE_ERROR, None),
        (b"\xff\xfe", PARSE_ERROR, None),
        (b'\xef\xbb\xbf{"jsonrpc":"2.0","method":"x","id":1}', PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","method":"x","id":NaN}', PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","method":"x","method":"y","id":1}', PARSE_ERROR, None),
        (b"[" * 100000, PARSE_ERROR, None),
        (b"[]", INVALID_REQUEST, None),
        (b'[{"jsonrpc":"2.0","method":"x","id":1}]', INVALID_REQUEST, None),
        (b"42", INVALID_REQUEST, None),
        (b'{"method":"x","id":1}', INVALID_REQUEST, 1),
        (b'{"jsonrpc":"1.0","method":"x","id":"a"}', INVALID_REQUEST, "a"),
        (b'{"jsonrpc":"2.0","method":"x","id":1.5}', INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"x","id":true}', INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"x","id":null}', INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"x","id":{}}', INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":7,"id":1}', INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","id":1}', INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","method":"x","params":"s","id":1}', INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","method":"x","params":null,"id":1}', INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","method":"x","id":1,"extra":0}', INVALID_REQUEST, 1),
    ],
)
def test_parse_faults(line, code, rid):
    fault = J.parse_line(line)
    assert isinstance(fault, J.RpcFault)
    assert (fault.code, fault.id) == (code, rid)
    reply = json.loads(fault.encode())
    assert reply["id"] == rid and reply["error"]["code"] == code


def test_parse_ok():
    assert J.parse_line(b'{"jsonrpc":"2.0","method":"a.b","params":{"x":1},"id":"q"}') == J.Request(
        "q", "a.b", {"x": 1}
    )
    assert J.parse_line(b'{"jsonrpc":"2.0","method":"a","params":[1]}') == J.Notification("a", [1])


def test_encode_lone_surrogate_falls_back_to_ascii():
    line = J.encode_error(1, -1, "bad \ud800 name")
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line)["error"]["message"] == "bad \ud800 name"
    assert J.encode_response("é", {"t": "ü"}) == '{"jsonrpc":"2.0","id":"é","result":{"t":"ü"}}\n'.encode()


def test_parse_incoming():
    assert J.parse_incoming(b'{"jsonrpc":"2.0","id":3,"result":null}') == J.Response(3, None)
    assert J.parse_incoming(
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m"}}'
    ) == J.ErrorResponse(None, -1, "m")
    assert J.parse_incoming(b'{"jsonrpc":"2.0","method":"n","params":{}}') == J.Notification("n", {})
    for bad in (b"x", b"{}", b'{"jsonrpc":"2.0","id":1}', b'{"jsonrpc":"2.0","method":"n","id":1}'):
        with pytest.raises(J.ProtocolViolation):
            J.parse_incoming(bad)
