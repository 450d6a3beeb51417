"""Line framing of the local protocol: one UTF-8 JSON object per ``\\n``-terminated line.

Pure and I/O-free. :class:`LineFramer` is fed byte chunks as they arrive and returns the complete
lines it found. Policy (also in PROTOCOL.md, "Framing"):

- A line ends at ``\\n``. One ``\\r`` right before it is stripped, so CRLF senders (telnet,
  ``socat CRLF``) work; the daemon itself always writes bare ``\\n``.
- The limit ``max_line_bytes`` counts the bytes of a line without its ``\\n``. A longer line is
  reported **once** as :class:`Oversize` and then skipped up to its ``\\n``; memory stays bounded
  (the buffer never holds more than ``max_line_bytes`` bytes) and the stream stays usable after it.
- Bytes after the last ``\\n`` at end of stream are a truncated line: :meth:`LineFramer.eof`
  reports them as :class:`Truncated`; they are never treated as a request.
- Blank lines are returned as ``b""``; the caller decides (the server ignores them).
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Oversize:
    """A line exceeded the limit; ``length`` is how many bytes it had when that was noticed."""

    length: int


@attrs.frozen(slots=True)
class Truncated:
    """The stream ended in the middle of a line of ``length`` bytes (or of a skipped oversize line)."""

    length: int
    oversize: bool = False


class LineFramer:
    """Incremental ``\\n`` line splitter with a hard per-line size limit."""

    __slots__ = ("max_line_bytes", "_buf", "_skipping", "_skipped")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._skipping = False
        self._skipped = 0

    @property
    def buffered(self) -> int:
        """Bytes currently held (for tests and metrics); never above ``max_line_bytes``."""
        return len(self._buf)

    @property
    def skipping(self) -> bool:
        return self._skipping

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | Oversize]:
        """Consume ``data``; return the lines (without terminator) and Oversize markers, in order."""
        out: list[bytes | Oversize] = []
        if isinstance(data, memoryview):
            data = data.tobytes()
        view = memoryview(data)
        n = len(view)
        start = 0
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            seg_len = end - start
            if self._skipping:
                self._skipped += seg_len
            elif len(self._buf) + seg_len > self.max_line_bytes:
                out.append(Oversize(len(self._buf) + seg_len))
                self._skipped = len(self._buf) + seg_len
                self._buf = bytearray()
                self._skipping = True
            else:
                self._buf += view[start:end]
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
                self._skipped = 0
            else:
                line = bytes(self._buf)
                self._buf.clear()
                if line.endswith(b"\r"):
                    line = line[:-1]
                out.append(line)
            start = nl + 1
        return out

    def eof(self) -> Truncated | None:
        """The stream ended: report a partial last line, if any, and reset."""
        result: Truncated | None = None
        if self._skipping:
            result = Truncated(self._skipped, oversize=True)
        elif self._buf:
            result = Truncated(len(self._buf))
        self._buf = bytearray()
        self._skipping = False
        self._skipped = 0
        return result
