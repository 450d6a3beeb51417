"""JSON libraries for the relay's own operations: stdlib ``json`` vs orjson vs msgspec.

The operations are the ones geminid does per relayed message today:

1. *parse a client line*: a ``session.send`` JSON-RPC line carrying a 1.3 KB
   ``realtimeInput.audio`` chunk. Today: :func:`geminid.protocol.jsonrpc.loads`, strict (no
   duplicate keys, no NaN/Infinity), i.e. ``json.loads`` with an ``object_pairs_hook``;
2. *parse a server frame*: a ``serverContent`` audio frame from Gemini (``live.parse_server_frame``
   uses plain ``json.loads``);
3. *encode a client notification*: that frame wrapped as a ``session.message`` line, as
   ``jsonrpc.dumps`` writes it (compact, UTF-8, ``\\n``).

Baseline, same run: today's functions, and plain stdlib ``json`` without the duplicate-key hook
(what the check itself costs). Each row also says whether that parser refuses duplicate keys and
NaN, checked on real input here: a faster parser that accepts them cannot replace the strict one
as is. orjson and msgspec are optional (``pip install -e '.[bench]'``); a missing one is skipped.

Usage: ``.venv/bin/python tests/bench/bench_json.py [-n 20000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable
from typing import Any

from _common import header, table

from geminid.protocol import jsonrpc, live

CHUNK = base64.b64encode(bytes(960)).decode()  # 20 ms of 16 kHz PCM -> ~1.3 KB of JSON
CLIENT_LINE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 4711,
            "method": "session.send",
            "params": {
                "session": "call-17",
                "message": {"realtimeInput": {"audio": {"data": CHUNK, "mimeType": "audio/pcm;rate=16000"}}},
            },
        },
        separators=(",", ":"),
    ).encode()
    + b"\n"
)
SERVER_MSG = {
    "serverContent": {
        "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": CHUNK}}]}
    }
}
SERVER_FRAME = json.dumps(SERVER_MSG, separators=(",", ":")).encode()
NOTIFICATION = {"jsonrpc": "2.0", "method": "session.message", "params": {"session": "call-17", "seq": 18, "message": SERVER_MSG}}
DUPLICATE = b'{"jsonrpc":"2.0","id":1,"id":2,"method":"session.send"}'
NAN = b'{"jsonrpc":"2.0","id":NaN,"method":"session.send"}'


def per_op_us(fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Best of ``repeats`` runs of ``n`` calls, in microseconds per call (best: least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def refuses(parse: Callable[[bytes], Any], data: bytes) -> str:
    try:
        parse(data)
    except ValueError:  # orjson.JSONDecodeError and msgspec.DecodeError are ValueErrors
        return "yes"
    return "no"


def candidates() -> tuple[list[tuple[str, Callable[[bytes], Any]]], list[tuple[str, Callable[[Any], bytes]]], list[str]]:
    parsers: list[tuple[str, Callable[[bytes], Any]]] = [
        ("stdlib, strict: jsonrpc.loads (today, client lines)", jsonrpc.loads),
        ("stdlib json.loads, no duplicate check (today, server frames)", json.loads),
    ]
    encoders: list[tuple[str, Callable[[Any], bytes]]] = [("stdlib: jsonrpc.dumps (today)", jsonrpc.dumps)]
    missing = []
    try:
        import orjson

        parsers.append((f"orjson {orjson.__version__} loads", orjson.loads))
        encoders.append((f"orjson {orjson.__version__} dumps + newline", lambda o: orjson.dumps(o) + b"\n"))
    except ImportError:
        missing.append("orjson")
    try:
        import msgspec

        decoder = msgspec.json.Decoder()
        encoder = msgspec.json.Encoder()
        parsers.append((f"msgspec {msgspec.__version__} json.Decoder (untyped)", decoder.decode))
        encoders.append((f"msgspec {msgspec.__version__} json.Encoder + newline", lambda o: encoder.encode(o) + b"\n"))
    except ImportError:
        missing.append("msgspec")
    return parsers, encoders, missing


def main(n: int, repeats: int) -> None:
    header("JSON for the relay: stdlib vs orjson vs msgspec (us per operation)")
    parsers, encoders, missing = candidates()
    assert live.parse_server_frame(SERVER_FRAME) is not None  # the frame is a real server message
    timed = [
        (
            name,
            per_op_us(lambda parse=parse: parse(CLIENT_LINE), n, repeats),  # type: ignore[misc]
            per_op_us(lambda parse=parse: parse(SERVER_FRAME), n, repeats),  # type: ignore[misc]
            parse,
        )
        for name, parse in parsers
    ]
    # Today: the strict parser for client lines (row 0), plain json.loads for server frames (row 1).
    base_client, base_server = timed[0][1], timed[1][2]
    rows = [
        [name, c, f"{base_client / c:.1f}x", s, f"{base_server / s:.1f}x", refuses(p, DUPLICATE), refuses(p, NAN)]
        for name, c, s, p in timed
    ]
    table(
        f"parse ({len(CLIENT_LINE)} B session.send line; {len(SERVER_FRAME)} B serverContent frame); best of {repeats} x {n}",
        ["parser", "client line us", "vs today", "server frame us", "vs today", "refuses duplicate keys", "refuses NaN"],
        rows,
    )
    print()
    enc_timed = []
    for name, enc in encoders:
        assert json.loads(enc(NOTIFICATION)) == NOTIFICATION  # same content
        enc_timed.append((name, per_op_us(lambda enc=enc: enc(NOTIFICATION), n, repeats)))  # type: ignore[misc]
    base_enc = enc_timed[0][1]
    rows = [[name, e, f"{base_enc / e:.1f}x"] for name, e in enc_timed]
    table(
        f"encode a session.message notification ({len(jsonrpc.dumps(NOTIFICATION))} B)",
        ["encoder", "us", "vs today"],
        rows,
    )
    if missing:
        print(f"\nskipped (not installed; pip install -e '.[bench]'): {', '.join(missing)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="calls per timing run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    main(args.n, args.repeats)
