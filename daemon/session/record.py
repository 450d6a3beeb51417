"""The checkpoint record of one session: its schema, and its validation, in one place.

A record is everything needed to resume a session after kill -9: the setup, the resumption
handle, the messages no handle covers yet, the open tool calls, the transcript tail and the seq
reservations. It holds no secret but the handle (the file is 0600; the API key is never part of a
session).

Why a module of its own: the registry must decide whether a checksum-valid record can be restored
*before* it starts an actor for it (a record the actor cannot use would crash it on every restart,
escalate, and take every other session down with it). :meth:`SessionRecord.from_dict` is that
decision; the actor restores from the same object, so the pre-check and the restore cannot
disagree. The keys read and written are those of checkpoint version 1; ``ids``, ``event_last`` and
``clean`` were added later, optional (a record without them reads as before, and an older
daemon ignores them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from geminid.protocol import live

CHECKPOINT_VERSION = 1

JSONObject = dict[str, Any]

_NUMBER = (int, float)


def fingerprint(setup: JSONObject) -> str:
    """Stable identity of a setup: opening a session again must present the same one."""
    blob = json.dumps(setup, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@attrs.frozen
class PendingMessage:
    """A client message no resumable handle covers yet, as validated (canonical) JSON."""

    seq: int
    message: JSONObject


@attrs.frozen
class SessionRecord:
    """One checkpoint record (version 1). ``to_dict``/``from_dict`` read and write its keys."""

    session: str
    setup: JSONObject
    handle: str | None = None
    #: Wall-clock times (seconds since the epoch): they must survive a restart of the daemon.
    handle_issued_at: float | None = None
    last_alive_at: float = 0.0
    created_at: float | None = None
    seq_reserved: int = 0
    event_reserved: int = 0
    pending: tuple[PendingMessage, ...] = ()
    pending_tools: tuple[str, ...] = ()
    lost_tools: tuple[str, ...] = ()
    transcript: tuple[JSONObject, ...] = ()
    reconnects: int = 0
    context_lost: str | None = None
    #: The reason of a failed session (None unless it failed).
    failed: str | None = None
    #: Ids of the last idempotent sends with their seqs, oldest first (see session/sendids.py).
    ids: tuple[tuple[str, int], ...] = ()
    #: The last event seq published when this record was taken (events after it, up to
    #: ``event_reserved``, were published only if the daemon died before its next write).
    event_last: int = 0
    #: Written by a clean stop (SIGTERM): then ``event_last`` is the last event seq, exactly.
    clean: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.setup)

    def to_dict(self) -> JSONObject:
        """The JSON object the store writes (same keys, same order as ever)."""
        return {
            "version": CHECKPOINT_VERSION,
            "session": self.session,
            "setup": self.setup,
            "fingerprint": self.fingerprint,
            "handle": self.handle,
            "handle_issued_at": self.handle_issued_at,
            "last_alive_at": self.last_alive_at,
            "created_at": self.created_at,
            "seq_reserved": self.seq_reserved,
            "event_reserved": self.event_reserved,
            "pending": [{"seq": p.seq, "message": p.message} for p in self.pending],
            "pending_tools": list(self.pending_tools),
            "lost_tools": list(self.lost_tools),
            "transcript": list(self.transcript),
            "reconnects": self.reconnects,
            "context_lost": self.context_lost,
            "failed": self.failed,
            "ids": [[msg_id, seq] for msg_id, seq in self.ids],
            "event_last": self.event_last,
            "clean": self.clean,
        }

    @classmethod
    def from_dict(cls, record: JSONObject, *, name: str | None = None) -> SessionRecord:
        """Validate ``record`` (already checksum-verified) and build the typed record.

        Every field is type-checked here, so that a record this code cannot use (a bug, a
        version skew, a hand edit) raises now (``TypeError``, or the live validator's error for
        a setup or message that no longer validates), and not later in the actor's run. A missing
        or null field takes its default. Fields the session never reads back (``version``,
        ``fingerprint``, ``failed``) are not held against the record.
        """
        if not isinstance(record, dict):
            raise TypeError(f"a checkpoint record is an object, not a {type(record).__name__}")
        r = _Reader(record)
        setup = record.get("setup")
        if not isinstance(setup, dict):
            raise TypeError("setup is not an object")
        live.validate_client_message({"setup": setup})
        pending: list[PendingMessage] = []
        for item in r.items("pending", dict):
            seq = item.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(item.get("message"), dict):
                raise TypeError("checkpoint field 'pending' holds an entry without an int seq and a message")
            _, canonical = live.validate_client_message(item["message"])
            pending.append(PendingMessage(seq, canonical))
        ids: list[tuple[str, int]] = []
        for item in r.items("ids", list):
            if (len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], int)
                    or isinstance(item[1], bool)):
                raise TypeError("checkpoint field 'ids' holds an entry that is not [id, seq]")
            ids.append((item[0], item[1]))
        transcript = r.items("transcript", dict)
        for turn in transcript:
            if not (isinstance(turn.get("role"), str) and isinstance(turn.get("text"), str)):
                raise TypeError("checkpoint field 'transcript' holds an entry without a role and a text")
        session = record.get("session")
        failed = record.get("failed")
        created_at = r.get("created_at", _NUMBER)
        issued = r.get("handle_issued_at", _NUMBER)
        return cls(
            session=name if name is not None else (session if isinstance(session, str) else ""),
            setup=setup,
            handle=r.get("handle", str) or None,
            handle_issued_at=float(issued) if issued is not None else None,
            last_alive_at=float(r.get("last_alive_at", _NUMBER) or 0.0),
            created_at=float(created_at) if created_at else None,
            seq_reserved=r.get("seq_reserved", int) or 0,
            event_reserved=r.get("event_reserved", int) or 0,
            pending=tuple(pending),
            pending_tools=tuple(r.items("pending_tools", str)),
            lost_tools=tuple(r.items("lost_tools", str)),
            transcript=tuple(transcript),
            reconnects=r.get("reconnects", int) or 0,
            context_lost=r.get("context_lost", str),
            failed=failed if isinstance(failed, str) else None,
            ids=tuple(ids),
            event_last=r.get("event_last", int) or 0,
            clean=record.get("clean") is True,
        )

    def pending_bytes(self) -> int:
        """The encoded size of the pending messages (what the replay buffer must hold)."""
        return sum(len(live.encode(p.message)) for p in self.pending)


class _Reader:
    """Typed access to a record's fields: a missing or null field is None, a field of another
    type (bool is not a number here) raises TypeError naming it."""

    def __init__(self, record: JSONObject) -> None:
        self.record = record

    def get(self, key: str, kinds: type | tuple[type, ...]) -> Any:
        value = self.record.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise TypeError(f"checkpoint field {key!r} is a {type(value).__name__}")
        return value

    def items(self, key: str, kind: type) -> list[Any]:
        values = self.get(key, list) or []
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise TypeError(f"checkpoint field {key!r} holds a value that is not a {kind.__name__}")
        return list(values)
