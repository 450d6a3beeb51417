"""WebSocket layers side by side: 1.3 KB text frames over loopback, client side measured.

The relay is a WebSocket *client* of Gemini, so each candidate library plays the client:

- ``trio-websocket`` (what geminid uses): one ``send_message`` / ``get_message`` per frame;
- ``wsproto direct``: wsproto driven over a trio stream by hand, ``--batch`` frames serialised
  into one ``send_all`` (and one ``receive_some`` parsed in one pass), as a batching relay would;
- ``websockets.trio``: the websockets package's trio implementation (skipped, with a note, when
  the installed websockets has none); permessage-deflate off, as for the others.

Two directions: *send* (the client streams N frames to a sink, as audio goes up) and *receive*
(a source streams N frames to the client, as serverContent audio comes down). The peer is the
same for all and runs in a **subprocess**, a raw-socket server that parses frame headers and skips
the payloads, so the benchmark process's CPU time (user + sys, ``time.process_time``) is the
client library's alone: CPU us per frame = CPU time / frames. Baseline, same run: the transport
floor, raw ``send_all`` / ``receive_some`` of pre-built frames (no WebSocket library).

Usage: ``.venv/bin/python tests/bench/bench_ws_layers.py [-n 20000] [--repeats 3] [--batch 16]``
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import trio
from _common import header, median, table

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# One 20 ms 16 kHz PCM chunk as the relay sends it: ~1.3 KB of JSON text.
FRAME = json.dumps(
    {"realtimeInput": {"audio": {"data": base64.b64encode(bytes(960)).decode(), "mimeType": "audio/pcm;rate=16000"}}},
    separators=(",", ":"),
)


# -- the peer (subprocess): a raw-socket WebSocket sink / source --------------------------------


def _frame(payload: bytes, opcode: int = 1, mask: bytes | None = None) -> bytes:
    n = len(payload)
    first = bytes([0x80 | opcode])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = first + bytes([bit | n])
    elif n < 65536:
        head = first + bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head = first + bytes([bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + _masked(payload, mask)


def _masked(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


async def _handshake(stream: trio.SocketStream) -> str:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    path = head[0].split(" ")[1]
    key = next(line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    await stream.send_all(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    return path


async def _sink(stream: trio.SocketStream, n: int) -> None:
    """Count n client frames (headers parsed, payloads skipped), then answer one ``done``."""
    buf = bytearray()
    pos = 0
    seen = 0
    while seen < n:
        data = await stream.receive_some(1 << 18)
        if not data:
            return
        buf += data
        while True:
            if len(buf) - pos < 2:
                break
            b1 = buf[pos + 1] & 0x7F
            hl = 2
            if b1 == 126:
                if len(buf) - pos < 4:
                    break
                b1 = struct.unpack_from("!H", buf, pos + 2)[0]
                hl = 4
            elif b1 == 127:
                if len(buf) - pos < 10:
                    break
                b1 = struct.unpack_from("!Q", buf, pos + 2)[0]
                hl = 10
            total = hl + 4 + b1  # client frames are masked
            if len(buf) - pos < total:
                break
            if buf[pos] & 0x0F in (1, 2):
                seen += 1
            pos += total
        del buf[:pos]
        pos = 0
    await stream.send_all(_frame(b"done"))
    await _finish(stream)


async def _finish(stream: trio.SocketStream) -> None:
    """Answer the client's close frame (whatever it sends next) with ours, then hang up."""
    with trio.move_on_after(5):
        if await stream.receive_some(65536):
            await stream.send_all(_frame(b"\x03\xe8", opcode=8))


async def _source(stream: trio.SocketStream, n: int) -> None:
    """Send n pre-built frames, 64 per write, then wait for the client to close."""
    one = _frame(FRAME.encode())
    chunk = one * 64
    left = n
    while left:
        k = min(64, left)
        await stream.send_all(chunk if k == 64 else one * k)
        left -= k
    await _finish(stream)


async def _serve_one(stream: trio.SocketStream) -> None:
    try:
        path = await _handshake(stream)
        kind, _, count = path.strip("/").partition("/")
        if kind == "sink":
            await _sink(stream, int(count))
        elif kind == "source":
            await _source(stream, int(count))
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def peer_main() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(_serve_one, listeners)


# -- the clients --------------------------------------------------------------------------------

Run = Callable[[int, int], Awaitable[None]]  # (port, frames)


async def raw_send(port: int, n: int, batch: int) -> None:
    """Floor: pre-built masked frames, ``batch`` per send_all; no WebSocket library."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await _raw_handshake(stream, f"/sink/{n}")
    one = _frame(FRAME.encode(), mask=b"\x01\x02\x03\x04")
    left = n
    while left:
        k = min(batch, left)
        await stream.send_all(one * k)
        left -= k
    await _read_until(stream, b"done")
    await stream.aclose()


async def raw_receive(port: int, n: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = len(await _raw_handshake(stream, f"/source/{n}"))
    want = n * len(_frame(FRAME.encode()))
    while got < want:
        data = await stream.receive_some(1 << 18)
        if not data:
            raise EOFError
        got += len(data)
    await stream.aclose()


async def _raw_handshake(stream: trio.SocketStream, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return await _read_until(stream, b"\r\n\r\n")


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """Read past ``marker``; returns what came after it (frames can follow the 101 at once)."""
    buf = b""
    while marker not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data
    return buf.split(marker, 1)[1]


async def tw_send(port: int, n: int) -> None:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"ws://127.0.0.1:{port}/sink/{n}") as ws:
        for _ in range(n):
            await ws.send_message(FRAME)
        await ws.get_message()


async def tw_receive(port: int, n: int) -> None:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"ws://127.0.0.1:{port}/source/{n}", message_queue_size=64) as ws:
        for _ in range(n):
            await ws.get_message()


async def _wsproto_open(port: int, path: str) -> tuple[trio.SocketStream, object]:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host="127.0.0.1", target=path)))
    while True:
        conn.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, AcceptConnection) for e in conn.events()):
            return stream, conn


async def wsproto_send(port: int, n: int, batch: int) -> None:
    from wsproto.events import TextMessage

    stream, conn = await _wsproto_open(port, f"/sink/{n}")
    send = conn.send  # type: ignore[attr-defined]
    left = n
    while left:
        k = min(batch, left)
        await stream.send_all(b"".join([send(TextMessage(data=FRAME)) for _ in range(k)]))
        left -= k
    while True:
        conn.receive_data(await stream.receive_some(65536))  # type: ignore[attr-defined]
        if any(isinstance(e, TextMessage) for e in conn.events()):  # type: ignore[attr-defined]
            break
    await stream.aclose()


async def wsproto_receive(port: int, n: int) -> None:
    from wsproto.events import TextMessage

    stream, conn = await _wsproto_open(port, f"/source/{n}")
    got = 0
    while got < n:
        data = await stream.receive_some(1 << 18)
        if not data:
            raise EOFError
        conn.receive_data(data)  # type: ignore[attr-defined]
        for e in conn.events():  # type: ignore[attr-defined]
            if isinstance(e, TextMessage) and e.message_finished:
                got += 1
    await stream.aclose()


def websockets_trio_available() -> str | None:
    """None when websockets.trio can be used, else why not."""
    try:
        import websockets
        import websockets.trio.client  # noqa: F401
    except ImportError as exc:
        return f"websockets has no trio implementation here ({exc})"
    return None if websockets else "?"


async def wst_send(port: int, n: int) -> None:
    from websockets.trio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/sink/{n}", compression=None, ping_interval=None) as ws:
        for _ in range(n):
            await ws.send(FRAME)
        await ws.recv()


async def wst_receive(port: int, n: int) -> None:
    from websockets.trio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/source/{n}", compression=None, ping_interval=None, max_queue=64
    ) as ws:
        for _ in range(n):
            await ws.recv()


async def measure(run: Run, port: int, n: int, repeats: int) -> tuple[float, float]:
    """(frames/s, CPU us per frame), medians over ``repeats`` runs."""
    rates: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        await run(port, n)
        c1, t1 = time.process_time(), time.perf_counter()
        rates.append(n / (t1 - t0))
        cpus.append((c1 - c0) / n * 1e6)
    return median(rates), median(cpus)


async def main(n: int, repeats: int, batch: int) -> None:
    header(f"WebSocket layers: {len(FRAME)} B text frames over loopback")
    peer = subprocess.Popen(  # noqa: ASYNC220 - set-up, before anything is measured
        [sys.executable, __file__, "--peer"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert peer.stdout is not None
        port = int(peer.stdout.readline())
        import trio_websocket
        import wsproto

        def version(mod: object) -> str:
            return getattr(mod, "__version__", "?")

        candidates: list[tuple[str, Run, Run]] = [
            ("raw send_all, no library (floor)", lambda p, k: raw_send(p, k, batch), raw_receive),
            (f"trio-websocket {version(trio_websocket)}", tw_send, tw_receive),
            (f"wsproto {version(wsproto)} direct, 1 frame per write", lambda p, k: wsproto_send(p, k, 1), wsproto_receive),
            (f"wsproto direct, {batch} frames per write", lambda p, k: wsproto_send(p, k, batch), wsproto_receive),
        ]
        why_not = websockets_trio_available()
        if why_not is None:
            import websockets

            candidates.append((f"websockets {websockets.__version__} (websockets.trio)", wst_send, wst_receive))
        rows = []
        base: tuple[float, float] | None = None
        for name, send, receive in candidates:
            s_rate, s_cpu = await measure(send, port, n, repeats)
            r_rate, r_cpu = await measure(receive, port, n, repeats)
            if name.startswith("trio-websocket"):
                base = (s_cpu, r_cpu)
            rows.append([name, s_rate, s_cpu, r_rate, r_cpu])
        assert base is not None
        table(
            f"{n} frames per run, median of {repeats} runs",
            ["client", "send frames/s", "send CPU us/frame", "receive frames/s", "receive CPU us/frame"],
            rows,
            digits=1,
        )
        print()
        table(
            "CPU per frame relative to trio-websocket (lower is better)",
            ["client", "send", "receive"],
            [[r[0], f"{r[2] / base[0]:.2f}x", f"{r[4] / base[1]:.2f}x"] for r in rows],
        )
        if why_not is not None:
            print(f"\nnote: {why_not}")
    finally:
        peer.kill()
        peer.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="frames per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="frames per write for the batched wsproto client")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        trio.run(peer_main)
    else:
        trio.run(main, args.n, args.repeats, args.batch)
