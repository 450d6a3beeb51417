"""A minimal Gemini Live *sink* for throughput benchmarks, run as a subprocess.

The fake upstream is a full model (validation, records, replies) and takes ~3,500-5,000 frames/s
here: measuring the daemon against it measures the fake. This sink does only what a relay of
audio needs from the server: the WebSocket handshake, ``setupComplete`` after the first frame,
pongs for pings, an answer to a close; every other frame's header is parsed and its payload
skipped, and counted. It runs in its own process so that its CPU is nobody else's.

Control on stdin/stdout: it prints its port, then answers each line ``count`` with the number of
data frames received after setup, over all connections.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys

import trio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SETUP_COMPLETE = b'{"setupComplete":{}}'
_count = [0]


def _frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x80 | opcode, n]) + payload
    if n < 65536:
        return bytes([0x80 | opcode, 126]) + struct.pack("!H", n) + payload
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", n) + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


async def _handshake(stream: trio.SocketStream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    key = next(ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    await stream.send_all(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    return rest


async def _serve(stream: trio.SocketStream) -> None:
    try:
        buf = bytearray(await _handshake(stream))
        set_up = False
        while True:
            pos = 0
            replies: list[bytes] = []
            while len(buf) - pos >= 2:
                op = buf[pos] & 0x0F
                n = buf[pos + 1] & 0x7F
                hl = 2
                if n == 126:
                    if len(buf) - pos < 4:
                        break
                    n = struct.unpack_from("!H", buf, pos + 2)[0]
                    hl = 4
                elif n == 127:
                    if len(buf) - pos < 10:
                        break
                    n = struct.unpack_from("!Q", buf, pos + 2)[0]
                    hl = 10
                total = hl + 4 + n  # client frames are masked
                if len(buf) - pos < total:
                    break
                if op in (1, 2):
                    if not set_up:
                        set_up = True
                        replies.append(_frame(SETUP_COMPLETE))
                    else:
                        _count[0] += 1
                elif op == 9:  # ping -> pong, same payload
                    mask = bytes(buf[pos + hl : pos + hl + 4])
                    replies.append(_frame(_unmask(bytes(buf[pos + hl + 4 : pos + total]), mask), opcode=10))
                elif op == 8:
                    await stream.send_all(b"".join(replies) + _frame(b"\x03\xe8", opcode=8))
                    return
                pos += total
            del buf[:pos]
            if replies:
                await stream.send_all(b"".join(replies))
            data = await stream.receive_some(1 << 18)
            if not data:
                return
            buf += data
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _control() -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buf = b""
    while True:
        data = await stdin.receive_some(4096)
        if not data:
            raise SystemExit(0)
        buf += data
        while b"\n" in buf:
            _, buf = buf.split(b"\n", 1)
            sys.stdout.write(f"{_count[0]}\n")
            sys.stdout.flush()


async def main() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_control)
        await trio.serve_listeners(_serve, listeners)


if __name__ == "__main__":
    try:
        trio.run(main)
    except (SystemExit, KeyboardInterrupt):
        pass
