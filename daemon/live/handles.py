"""geminid's local resumption handles: what a Live client gets as ``newHandle``.

A local handle names one session. It is random (``gmdh-`` + 24 random bytes): never derived from
the server's handle, the API key or the session name, so it tells nothing and cannot be guessed.
A client that presents it in ``setup.sessionResumption.handle`` comes back to the session it
names, on the same daemon or after a restart (even after SIGKILL): the mapping is written (0600,
write-fsync-rename) before the handle is handed out. The server's own handles never reach a
local client; geminid resumes upstream with them itself.

The ``newHandle`` a client is given also says what it had seen when it got it: after each reply
end, the update carries ``gmdh-<random>.<answered>`` (:func:`with_seen`), ``answered`` being the
seq of the client message that reply answered. The update follows the reply's ``turnComplete``,
so a client that holds it has seen that reply whole: exact, whatever happened to the daemon.

Beside each handle the file keeps what that session's Live client has **seen**: ``answered``, the
seq of the last client message whose reply it was given whole (up to ``turnComplete``). A restarted
daemon replays what its checkpoint does not show as answered, which may include turns the client
already saw answered (a kill -9 resumes from a handle up to ~1 s old); with ``answered`` the
client coming back is spared those replies, and is given every other one (:class:`Seen`).
It is written off the event loop, coalesced (one write in flight, the latest value wins), at
reply ends only, never per chunk. Its window: a kill after a reply end was handed to the client
and before the write lands means that reply comes again (a repeat), never that one is lost.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import attrs
import structlog
import trio

log = structlog.get_logger("geminid.live")

FILE_NAME = "live_handles.json"
PREFIX = "gmdh-"
#: Between a handle and the seq it was seen at (not in ``secrets.token_urlsafe``'s alphabet).
_SEEN_SEP = "."


def with_seen(handle: str, answered: int) -> str:
    """The ``newHandle`` for session handle ``handle`` once its client saw reply ``answered``."""
    return f"{handle}{_SEEN_SEP}{answered}" if answered else handle


def split_seen(presented: str) -> tuple[str, int]:
    """(the session's handle, the answered seq the client presented with it; 0: none)."""
    base, sep, tail = presented.partition(_SEEN_SEP)
    if sep and tail.isdigit() and len(tail) <= 18:
        return base, int(tail)
    return presented, 0


@attrs.frozen
class Seen:
    """What a session's Live client has seen, as known to a previous daemon."""

    #: The seq of the last client message whose reply the client was given whole (0: none).
    answered: int = 0


class LocalHandles:
    """name <-> local handle, and name -> :class:`Seen`, persisted in
    ``<state_dir>/live_handles.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._by_name: dict[str, str] = {}
        self._by_handle: dict[str, str] = {}
        #: As loaded from the previous daemon's file (what a client came back with).
        self._seen_before: dict[str, Seen] = {}
        #: The latest values (the previous daemon's, updated by :meth:`note_answered`).
        self._seen: dict[str, Seen] = {}
        self._dirty = False
        self._wake = trio.Event()
        self._lock = trio.Lock()
        #: Writes done (for tests and the log).
        self.writes = 0

    def load(self) -> None:
        """Read the file (blocking; a missing or unreadable one starts empty)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        by_name, seen = data.get("handles"), data.get("seen")
        by_name = by_name if isinstance(by_name, dict) else {}
        seen = seen if isinstance(seen, dict) else {}
        self._by_name = {n: h for n, h in by_name.items() if isinstance(n, str) and isinstance(h, str)}
        self._by_handle = {h: n for n, h in self._by_name.items()}
        # Every session with a handle had a Live client on the previous daemon (the handle is made
        # durable before it is handed out), even one whose first reply end was not recorded yet.
        self._seen_before = {}
        for n in self._by_name:
            rec = seen.get(n)
            answered = rec.get("answered") if isinstance(rec, dict) else None
            if not isinstance(answered, int) or isinstance(answered, bool) or answered < 0:
                answered = 0
            self._seen_before[n] = Seen(answered)
        self._seen = dict(self._seen_before)

    def seen_before(self, name: str) -> Seen | None:
        """What session ``name``'s Live client had seen on a previous daemon (None: it had none:
        no handle was issued for it)."""
        return self._seen_before.get(name)

    def answered(self, name: str) -> int:
        """The seq of the last client message whose reply ``name``'s Live client saw whole (0)."""
        seen = self._seen.get(name)
        return 0 if seen is None else seen.answered

    def note_answered(self, name: str, seq: int) -> None:
        """The Live client of ``name`` was given the whole reply to client message ``seq``: made
        durable soon by :meth:`flusher` (never blocks; a lower seq than known is ignored)."""
        old = self._seen.get(name)
        if old is not None and old.answered >= seq:
            return
        self._seen[name] = Seen(seq)
        self._dirty = True
        self._wake.set()

    async def flusher(self) -> None:
        """Write what :meth:`note_answered` noted, coalesced: one write at a time, in a thread."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            try:
                await trio.to_thread.run_sync(self._write, dict(self._by_name), dict(self._seen))
            except OSError as exc:
                # Not fatal: without the record a restarted daemon repeats a reply, never loses one.
                self._dirty = True
                log.warning("live.handles_write_failed", error=exc.strerror)

    def session_of(self, handle: str) -> str | None:
        """The session a local handle (with or without its seen part) names, or None (not ours:
        unknown, stale or forged)."""
        return self._by_handle.get(split_seen(handle)[0])

    def known(self, handle: str) -> bool:
        return handle.startswith(PREFIX)

    async def issue(self, name: str, live: set[str] | None = None) -> str:
        """The handle of session ``name`` (made and made durable on first use). ``live``: the
        sessions that exist, so that handles of sessions that are gone are forgotten."""
        async with self._lock:
            handle = self._by_name.get(name)
            if handle is not None:
                return handle
            handle = PREFIX + secrets.token_urlsafe(24)
            by_name = dict(self._by_name)
            if live is not None:
                by_name = {n: h for n, h in by_name.items() if n in live}
            by_name[name] = handle
            self._dirty = False  # this write carries what was noted too
            await trio.to_thread.run_sync(self._write, by_name, dict(self._seen))
            self._by_name = by_name
            self._by_handle = {h: n for n, h in by_name.items()}
            return handle

    def _write(self, by_name: dict[str, str], seen_now: dict[str, Seen]) -> None:
        seen = {n: {"answered": s.answered} for n, s in seen_now.items() if n in by_name}
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "handles": by_name, "seen": seen}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.writes += 1
