"""geminid's local resumption handles: what a Live client gets as ``newHandle``.

A local handle names one session. It is random (``gmdh-`` + 24 random bytes): never derived from
the server's handle, the API key or the session name, so it tells nothing and cannot be guessed.
A client that presents it in ``setup.sessionResumption.handle`` comes back to the session it
names, on the same daemon or after a restart (even after SIGKILL): the mapping is written (0600,
write-fsync-rename) before the handle is handed out. The server's own handles never reach a
local client; geminid resumes upstream with them itself.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import trio

FILE_NAME = "live_handles.json"
PREFIX = "gmdh-"


class LocalHandles:
    """name <-> local handle, persisted in ``<state_dir>/live_handles.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._by_name: dict[str, str] = {}
        self._by_handle: dict[str, str] = {}
        self._lock = trio.Lock()

    def load(self) -> None:
        """Read the file (blocking; a missing or unreadable one starts empty)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            by_name = data.get("handles", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            by_name = {}
        self._by_name = {n: h for n, h in by_name.items() if isinstance(n, str) and isinstance(h, str)}
        self._by_handle = {h: n for n, h in self._by_name.items()}

    def session_of(self, handle: str) -> str | None:
        """The session a local handle names, or None (not ours: unknown, stale or forged)."""
        return self._by_handle.get(handle)

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
            await trio.to_thread.run_sync(self._write, by_name)
            self._by_name = by_name
            self._by_handle = {h: n for n, h in by_name.items()}
            return handle

    def _write(self, by_name: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "handles": by_name}, f)
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
