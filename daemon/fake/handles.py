"""Resumption handles: each names a snapshot of one conversation. Time is trio's clock.

A handle stays valid while its conversation has an open connection, and for ``ttl`` seconds
after the conversation's last connection ended (GEMINI_LIVE.md §5: "2 hours after the last
connection ends"). ``expire_all`` forgets every handle issued so far (the CLI/test fault).
"""

from __future__ import annotations

import random

import attrs

from .model import Conversation, ConversationState


@attrs.define
class HandleEntry:
    handle: str
    conversation: Conversation
    snapshot: ConversationState
    issued_at: float
    connection_id: int
    expired: bool = False


class HandleStore:
    def __init__(self, ttl: float, seed: int = 0) -> None:
        self.ttl = ttl
        self._rng = random.Random(seed)
        self._entries: dict[str, HandleEntry] = {}

    def issue(self, conversation: Conversation, connection_id: int, now: float) -> str:
        """A new handle for the conversation's current state."""
        while True:
            handle = f"fake-{conversation.id}-{self._rng.getrandbits(64):016x}"
            if handle not in self._entries:
                break
        self._entries[handle] = HandleEntry(
            handle, conversation, conversation.state.copy(), now, connection_id
        )
        conversation.handles.append(handle)
        return handle

    def entry(self, handle: str) -> HandleEntry | None:
        """The entry for ``handle`` whether or not it is still valid."""
        return self._entries.get(handle)

    def valid(self, handle: str, now: float) -> HandleEntry | None:
        """The entry if ``handle`` may be resumed at ``now``, else None."""
        entry = self._entries.get(handle)
        if entry is None or entry.expired:
            return None
        conv = entry.conversation
        if conv.live_connection is not None or conv.last_closed_at is None:
            return entry
        return entry if now < conv.last_closed_at + self.ttl else None

    def expire_all(self) -> int:
        n = 0
        for entry in self._entries.values():
            if not entry.expired:
                entry.expired = True
                n += 1
        return n

    def __len__(self) -> int:
        return len(self._entries)
