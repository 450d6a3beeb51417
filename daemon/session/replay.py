"""The zero-loss replay buffer: client messages the server may not have consumed yet.

Pure (no I/O, no clock of its own: callers pass ``now``), so that trimming and replay can be
property-tested.

Every message accepted for a session is appended with its ``seq`` and stays here until a
resumable handle provably covers it. The buffer *is* the send queue: a cursor marks how many
entries have been written to the current connection. A new connection rewinds the cursor, so
whatever the server had not consumed is replayed first, in order, before anything new.

**When is a message covered by a handle?**

- *Transparent mode* (Vertex): the update names ``lastConsumedClientMessageIndex``, the index of
  the last consumed non-setup message; its base and scope are detected from the updates
  (:mod:`geminid.daemon.session.consumed`), trimming only what every possible reading covers.
- *Developer API* (no index): the server only issues ``resumable: true`` handles at quiet points,
  when it is neither generating nor waiting for a tool response. So a handle covers every message
  written up to the latest-written *eliciting* message (a turn with ``turnComplete``, text input,
  ``audioStreamEnd``/``activityEnd``, or a NON_BLOCKING tool response that is not SILENT) whose
  response has ended on this connection (one response per eliciting message, counted by the ends
  of the model's *interactions*: ``interactionStatus: IDLE``, or ``turnComplete`` for models that
  send no status; an extended-thinking filler ending in ``turnComplete`` + ``IN_PROGRESS``
  answers nothing, see :func:`geminid.daemon.session.activity.reply_facts`; responses end in
  write order, but for a WHEN_IDLE result the server keeps behind a reply that input then
  interrupts, see :class:`~geminid.daemon.session.activity.Replies`), plus the tool responses
  at the head. The trim goes by write position, not by seq (a tool response written ahead of a
  held replay has a higher seq than the turns written after it). Anything written after that
  may still have been in flight when the handle was issued: non-eliciting content (audio,
  ``turnComplete: false`` turns) is kept and replayed. Replaying it risks a duplicate, dropping
  it risks a loss, and geminid never loses an acknowledged turn.

**Replay one reply at a time.** A reconnection's *backlog* is what the buffer holds when it
opens: messages an earlier connection (or, restored, the previous daemon) wrote and no handle
covered, and messages queued while there was no connection. (A session's first connection has
none: what a client queues before it is live goes as sent, as on a live connection.) Written
back to back, each eliciting message of the backlog would interrupt the reply to the one before
it (the server stops a reply when new input arrives: the user would get ``interrupted`` and an
empty ``turnComplete`` for all but the last). So while the reply to a
backlog message is due on this connection (the activity model's count,
:class:`~geminid.daemon.session.activity.Replies`: it ends at ``interactionStatus: IDLE``, or
``turnComplete`` for models that send no status), nothing more is written, and a client message
that arrives meanwhile queues behind the backlog in order; :meth:`ReplayBuffer.next_to_write` is
the rule. Two exceptions, both for a reply that called a tool: a tool response goes ahead of what
is held (the reply cannot end without it); and while a BLOCKING call is pending the hold is
lifted, since the server then waits for the client, not the client for the server: what is
queued goes in order, as on a live connection (a turn then interrupts the call, as the client
would expect; holding it could hang the session for good with a client that answers no call).
Once the last backlog reply has ended, messages are written as they come, and a new message sent
mid-reply interrupts it, as the client asked.

**A fresh start replays no answered turn.** When the context is lost (a stale handle, a fresh
dial), the messages up to the last eliciting message whose reply ended on an earlier connection
are dropped from the backlog instead of being asked again as new questions (the user saw those
replies; re-asking them would answer them twice). Context updates among them are kept (they
describe the session, not the conversation). Their text is in the transcript, which is what a
re-seed (:mod:`geminid.daemon.session.reseed`) gives the fresh session as history.

Staleness: audio older than the staleness window is not worth replaying (stale audio confuses
voice activity detection), so it is dropped at replay time and counted. Turns, tool responses and
control messages are never dropped. The buffer is bounded in bytes: when full, the oldest audio
goes first; when no audio is left to drop, the new message is refused with ``BufferFull``.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from geminid.daemon.session.activity import Replies
from geminid.daemon.session.consumed import ConsumedIndex
from geminid.protocol.errors import BufferFull


class Kind(enum.Enum):
    TURN = "clientContent"
    TOOL_RESPONSE = "toolResponse"
    CONTEXT = "contextUpdate"
    AUDIO = "audio"  # realtimeInput media: audio, video, mediaChunks
    REALTIME = "realtime"  # realtimeInput control: text, activityStart/End, audioStreamEnd

    @property
    def durable(self) -> bool:
        """Acknowledged only once on disk, checkpointed, never dropped."""
        return self in (Kind.TURN, Kind.TOOL_RESPONSE, Kind.CONTEXT)


def classify_message(kind: str, canonical: dict[str, Any]) -> tuple[Kind, bool]:
    """Map a validated client message to its replay :class:`Kind` and whether it elicits a reply."""
    if kind == "clientContent":
        body = canonical["clientContent"]
        return Kind.TURN, bool(body.get("turnComplete", False))
    if kind == "toolResponse":
        return Kind.TOOL_RESPONSE, False
    if kind == "contextUpdate":
        return Kind.CONTEXT, False
    body = canonical.get("realtimeInput", {})
    if any(k in body for k in ("audio", "video", "mediaChunks")):
        return Kind.AUDIO, False
    elicits = "text" in body or "activityEnd" in body or bool(body.get("audioStreamEnd"))
    return Kind.REALTIME, elicits


@attrs.define(slots=True)
class Entry:
    seq: int
    kind: Kind
    message: dict[str, Any]
    #: The encoded frame, computed once at accept time (the relay path only copies bytes).
    wire: str
    at: float
    elicits: bool = False
    #: Checkpoint generation that must be durable before this entry may be sent (0: none).
    gen: int = 0
    #: A tool response: how many replies it elicits of its own (its NON_BLOCKING, not SILENT
    #: responses; see :class:`~geminid.daemon.session.activity.Replies`), and whether it asks
    #: for nothing at all (every response in it NON_BLOCKING and SILENT).
    replies_owed: int = 0
    silent: bool = False

    @property
    def size(self) -> int:
        return len(self.wire)

    @property
    def blocking_response(self) -> bool:
        """A tool response to BLOCKING calls only: it owes no reply of its own and is not SILENT
        (either marks a NON_BLOCKING response, see :meth:`ToolCalls.responded`)."""
        return self.kind is Kind.TOOL_RESPONSE and not self.replies_owed and not self.silent

    @property
    def may_stop_the_model(self) -> bool:
        """Written, it may stop the model mid-reply: anything but a tool response whose results
        are not scheduled INTERRUPT (a WHEN_IDLE or SILENT result, or a BLOCKING response, lets
        the model go on). Audio included: a server detecting speech stops the model too."""
        if self.kind is not Kind.TOOL_RESPONSE:
            return True
        responses = self.message["toolResponse"].get("functionResponses") or []
        return any(isinstance(r, dict) and r.get("scheduling") == "INTERRUPT" for r in responses)

    @property
    def asks_reply(self) -> bool:
        """Written, it makes the server owe us frames (a reply, or the rest of a tool round trip).
        A SILENT tool response goes into the model's context and asks for nothing."""
        return self.elicits or (self.kind is Kind.TOOL_RESPONSE and not self.silent)


@attrs.define
class ReplayStats:
    replayed: int = 0
    dropped_stale: int = 0
    dropped_full: int = 0
    refused: int = 0
    trimmed: int = 0
    #: Dropped at a fresh start: answered on an earlier connection (see the module docstring).
    dropped_answered: int = 0


class ReplayBuffer:
    def __init__(self, *, max_bytes: int, staleness: float, consumed_index: str = "auto") -> None:
        self.max_bytes = max_bytes
        self.staleness = staleness
        self._entries: collections.deque[Entry] = collections.deque()
        self.bytes = 0
        #: How many entries from the left have been written to the current connection.
        self.cursor = 0
        self.stats = ReplayStats()
        # Per-connection bookkeeping for coverage.
        self._conn_seqs: list[int] = []  # seq of every message written on this connection
        self._conn_base = 0  # index (on this connection) of _conn_seqs[0]
        #: Eliciting messages written on this connection and replies ended: the activity
        #: model's count (geminid.daemon.session.activity), which coverage asks.
        self.replies = Replies()
        #: The transparent index's convention, detected from the updates (geminid.daemon.session.consumed).
        self.consumed = ConsumedIndex.for_convention(consumed_index)
        #: The highest seq in this connection's backlog (None: no backlog): the replies to the
        #: backlog's eliciting messages are awaited one at a time (see :meth:`next_to_write`).
        self.backlog_through: int | None = None
        #: The seq of the last eliciting message whose reply ended on an earlier connection
        #: (what a fresh start drops, see :meth:`new_connection`).
        self._answered_before: int | None = None
        #: A resume was tried since the connection that answered them ended (see
        #: :meth:`resume_tried`): what it answered may have been rolled back.
        self._rolled_back = False
        #: Written audio at the head was forgotten as stale (see :meth:`drop_sent_stale_audio`).
        self._head_audio_dropped = False
        #: The backlog message whose reply the last connection ended waiting for (the pace's
        #: valve, see :meth:`new_connection`).
        self._held_on: int | None = None

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    @property
    def unsent(self) -> int:
        return len(self._entries) - self.cursor

    def durable_entries(self) -> list[Entry]:
        """What a checkpoint must hold: the unconsumed turns, tool responses and updates."""
        return [e for e in self._entries if e.kind.durable]

    def restarting(self, before: Iterable[int], restored_through: int) -> set[int]:
        """A new connection is about to replay the buffer: the eliciting messages whose replies
        start again from their beginning (marked ``replayed``, so that a voice client does not
        speak the first half twice). Those written on the connection that ended (by position:
        seqs need not be in write order, a tool response can go ahead of a held replay turn,
        which then was never sent), those marked so before (``before``: written on an earlier
        one), and, restored, any the previous daemon may have sent (``restored_through``)."""
        marked = set(before)
        written = {e.seq for e in itertools.islice(self._entries, self.cursor)}
        return {
            e.seq for e in self._entries
            if e.elicits and (e.seq in written or e.seq in marked or e.seq <= restored_through)
        }

    def awaiting_reply(self) -> bool:
        """An eliciting message was sent on this connection and its response has not ended."""
        return self.replies.awaiting()

    def peek(self) -> Entry | None:
        """The entry at the cursor (the next one in order), or None."""
        if self.cursor < len(self._entries):
            return self._entries[self.cursor]
        return None

    def replaying(self) -> bool:
        """The reply to a backlog message is due on this connection: hold what comes next."""
        answering = self.replies.answering()
        return answering is not None and self.backlog_through is not None and answering <= self.backlog_through

    def next_to_write(self, *, client_turn: bool = False) -> Entry | None:
        """The next entry to write to the connection, or None (nothing, or held by the replay).

        The entry at the cursor, except while :meth:`replaying`: then only a tool response may
        go, the first one queued (moved to the cursor, ahead of the held messages, whose order
        among themselves is kept). ``client_turn``: the server waits for the client (a BLOCKING
        tool call is pending): nothing is held. See the module docstring.
        """
        if client_turn or not self.replaying():
            return self.peek()
        for i in range(self.cursor, len(self._entries)):
            e = self._entries[i]
            if e.kind is Kind.TOOL_RESPONSE:
                if i != self.cursor:
                    del self._entries[i]
                    self._entries.insert(self.cursor, e)
                return e
        return None

    def unanswered(self) -> list[Entry]:
        """What a fresh start will ask again: the entries after the last answered message (the
        same before and after :meth:`new_connection` drops the answered ones). A re-seed leaves
        their text out of the history it gives (:func:`geminid.daemon.session.reseed.seed_turns`)."""
        return list(self._entries)[self._answered_index() + 1:]

    def _answered_index(self) -> int:
        """Where the last answered message is in the buffer (-1: none there): the later, in
        write order, of the last one answered on this connection and on the one before it (a
        fresh start drops what it covers, see :meth:`new_connection`). Everything before it was
        written before it, so the server consumed all of it. Positions, not seqs: a tool
        response can go ahead of a held replay, so seqs need not be in write order."""
        wanted = {s for s in (self.replies.answered_through(), self._answered_before) if s is not None}
        last = -1
        for i, e in enumerate(self._entries):
            if e.seq in wanted:
                last = i
        return last

    # -- mutation --------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Queue a newly accepted message; evict old audio or refuse when over the byte bound."""
        need = self.bytes + entry.size - self.max_bytes
        if need > 0:
            freed = self._evictable_audio_bytes()
            if freed < need:
                self.stats.refused += 1
                raise BufferFull(
                    f"replay buffer full ({self.bytes} of {self.max_bytes} bytes held by turns and "
                    "tool responses the server has not consumed yet); retry when the session is live",
                    data={"bytes": self.bytes, "limit": self.max_bytes},
                )
            self._evict_audio(need)
        self._entries.append(entry)
        self.bytes += entry.size

    def mark_sent(self) -> Entry:
        """The entry at the cursor was written to the connection."""
        entry = self._entries[self.cursor]
        self.cursor += 1
        self._conn_seqs.append(entry.seq)
        if entry.elicits:
            self.replies.sent(entry.seq)
        elif entry.replies_owed:
            self.replies.sent_tool_response(entry.seq, entry.replies_owed, deferrable=not entry.may_stop_the_model)
        elif entry.may_stop_the_model:
            self.replies.barrier()
        return entry

    def new_connection(self, now: float, *, replaying: bool = True, fresh: bool = False) -> list[Entry]:
        """Rewind for a new connection: drop stale audio, reset per-connection counters.

        ``fresh``: the connection does not resume the conversation (the context is lost): what
        was answered on an earlier connection is dropped too (counted in
        ``stats.dropped_answered``; see the module docstring). Returns the entries dropped as
        stale (counted in ``stats.dropped_stale``). Everything left is the connection's
        backlog, replayed from the cursor, which now sits at 0.
        """
        # Answered on the connection that just ended only: what an earlier one answered and no
        # handle covered is not in the conversation a resume went back to (a rollback), so after
        # a resume it is replayed, and a fresh start after that must ask it again, not drop it
        # (dropped, it was in no conversation at all: the 3.8-extended soak's lost turns).
        # The backlog reply the connection that just ended was held on, twice in a row: see below.
        held_on = self.replies.answering() if self.replaying() else None
        held_twice = held_on is not None and held_on == self._held_on
        self._held_on = held_on
        self._answered_before = None if self._rolled_back else self.replies.answered_through()
        if self._rolled_back:
            self.replies.reset()  # (nothing it answered is known to be in the conversation)
            self._rolled_back = False
        last = self._answered_index()
        if fresh and last >= 0:
            kept = collections.deque(e for i, e in enumerate(self._entries) if i > last or e.kind is Kind.CONTEXT)
            self.stats.dropped_answered += len(self._entries) - len(kept)
            self._entries = kept
        dropped: list[Entry] = []
        keep: collections.deque[Entry] = collections.deque()
        # (since the last eliciting message kept; the audio at the head may have gone already)
        lost_audio, kept_audio = self._head_audio_dropped, False
        self._head_audio_dropped = False
        for e in self._entries:
            if e.kind is Kind.AUDIO:
                if now - e.at > self.staleness:
                    dropped.append(e)
                    lost_audio = True
                    continue
                kept_audio = True
            elif e.elicits:
                body = e.message.get("realtimeInput") or {}
                if body.get("audioStreamEnd") and lost_audio and not kept_audio:
                    # Its audio is gone: replayed alone it would elicit no reply, and every
                    # later reply would be counted against the wrong message (and, paced, the
                    # replay would wait for that reply for good: the 3.8-extended soak's stuck
                    # session, whose audio drop_sent_stale_audio had already forgotten).
                    dropped.append(e)
                    continue
                lost_audio = kept_audio = False
            keep.append(e)
        self._entries = keep
        self.bytes = sum(e.size for e in keep)
        self.stats.dropped_stale += len(dropped)
        # (the first connection of a session has no backlog: what was queued before it was
        # live is sent as the client sent it, as on a live connection)
        # Paced, unless the last two connections both ended waiting for the reply to the same
        # backlog message: one the server does not answer (a model that declines it, input it
        # cannot use) would hold everything behind it for good, each stall reconnect replaying
        # it again. Unpaced, the next message interrupts what the server did not say (at worst a
        # reply cut short), and the queue moves on.
        paced = replaying and not held_twice
        self.backlog_through = max((e.seq for e in keep), default=None) if paced else None
        if replaying:  # (the first connection of a session replays nothing: it sends)
            self.stats.replayed += len(self._entries)
        self.cursor = 0
        self.consumed.new_connection(self._conn_base + len(self._conn_seqs))
        self._conn_seqs = []
        self._conn_base = 0
        self.replies.reset()
        return dropped

    def resume_tried(self) -> None:
        """A resume attempt ended before it went live, after the setup may have reached the
        server. The server restores the handle's conversation when it reads the setup, so the
        attempt may have rolled the conversation back to before what the last live connection
        answered: a fresh start must then ask those messages again, not drop them as answered
        (dropped, they were in no conversation: a lost turn in the 3.8-extended soak, under
        load, where a resume got ``setupComplete`` and was cut before the daemon read it)."""
        self._rolled_back = True

    def note_extra_sent(self) -> None:
        """A message that is not in the buffer (a re-seed) was written: it still counts for the
        server's transparent-mode index."""
        self._conn_seqs.append(0)

    def discard_unsent(self, entry: Entry) -> bool:
        """Remove an entry that must not be sent (its durability failed). False if already sent."""
        for i, e in enumerate(self._entries):
            if e is entry:
                if i < self.cursor:
                    return False
                del self._entries[i]
                self.bytes -= e.size
                return True
        return False

    def sent_uncovered(self) -> bool:
        """A message that asks for a reply, or a tool response, was written on this connection
        and no handle covers it yet: rotating now would replay it (and lose a tool round trip)."""
        return any(self._entries[i].asks_reply for i in range(self.cursor))

    def response_ended(self) -> None:
        """A model response ended on this connection (the actor learns that from
        :meth:`geminid.daemon.session.activity.Activity.server_message`)."""
        self.replies.reply_ended()

    def index_seen(self, last_consumed_index: int | None) -> None:
        """An update without a handle (``resumable: false``, sent while the model speaks) named
        the index: it trims nothing (no handle to resume with holds it) but tells the
        convention apart early. The first turn's update settles the base (index 0 is 0-based;
        an index equal to the count written is 1-based), which the first handle often cannot:
        it comes at the reply's end, after audio written meanwhile, so both bases fit it and
        trimming by the smaller would replay a consumed chunk (tests/session/
        test_consumed_index_daemon.py). No reply bound is passed: only the index is used.
        None (no index, or not transparent): nothing to read."""
        if last_consumed_index is not None:
            self.consumed.observe(last_consumed_index, self._conn_base + len(self._conn_seqs))

    def covered_by_handle(self, last_consumed_index: int | None, *, transparent: bool = False) -> int:
        """A resumable handle arrived: trim what it covers. Returns the number of entries trimmed.

        ``last_consumed_index`` is the transparent-mode index (None on the Developer API, or in
        transparent mode before anything was consumed, which the convention detection uses).
        """
        if transparent and last_consumed_index is None:
            self.consumed.observe(None, self._conn_base + len(self._conn_seqs))
            return 0
        if last_consumed_index is not None:
            # How many written on this connection are surely consumed, whatever the convention.
            answered = self.replies.answered_through()
            # (by write position: what was written up to the answered message, not seqs below it)
            known = self._conn_seqs.index(answered) + 1 if answered in self._conn_seqs else 0
            sent = self._conn_base + len(self._conn_seqs)
            count = self.consumed.observe(last_consumed_index, sent, self._conn_base + known)
            pos = count - 1 - self._conn_base
            if pos < 0:
                return 0
            # Covered: the first pos + 1 messages written on this connection (write order, which
            # is buffer order; seqs need not be in order, see _answered_index).
            covered = frozenset(self._conn_seqs[: pos + 1])
            del self._conn_seqs[: pos + 1]
            self._conn_base = count
            self.replies.consumed_through(covered)
            return self._trim(covered.__contains__)
        # Developer API: the handle holds what the server had consumed when it issued it. That
        # is everything written up to the latest-written message whose reply has ended, and the
        # responses to BLOCKING calls at the head (no handle is issued while a BLOCKING call is
        # pending). Not a NON_BLOCKING call's: whether a pending one holds handles back is
        # UNCONFIRMED, and where it does not (FakeOptions.resumable_pending_calls, the 3.8-audio
        # soak's form), a handle issued before the response arrived may reach us after it was
        # written; trimmed, a drop then lost it unreported (K1; SILENT ones too). One that owes a
        # reply is trimmed once its reply is matched, as an eliciting message; any goes with the
        # next answered message, or is reported lost on a reconnect (ToolCalls.connection_lost).
        # Whatever was written after the last answered message may still have been in flight:
        # it is kept and replayed (a possible duplicate of non-eliciting content, never a loss).
        # By write position, not by seq: a tool response written ahead of a held replay has a
        # higher seq than the turn written after it, which the handle does not cover (trimmed
        # as "seq <= the last answered", that turn was in no conversation after the next
        # reconnect: the 3.8-extended soak's lost turns); and once that turn's reply has ended
        # it is covered, though the response before it has the higher seq (trimmed by seq, it
        # was kept and replayed: the 3.8-text soak's duplicate, seed 210).
        last_answered = self.replies.covered_through()
        n = 0 if last_answered is None else self._trim_through(last_answered)
        while self.cursor and self._entries and self._entries[0].blocking_response:
            n += self._trim(self._entries[0].seq.__eq__)
        return n

    def remove_tool_responses(self, ids: Iterable[str]) -> list[Entry]:
        """Drop queued tool responses for calls the server no longer knows (lost to a resume)."""
        lost = set(ids)
        if not lost:
            return []
        removed: list[Entry] = []
        keep: collections.deque[Entry] = collections.deque()
        for i, e in enumerate(self._entries):
            if e.kind is Kind.TOOL_RESPONSE and i >= self.cursor:
                responses = e.message["toolResponse"].get("functionResponses", [])
                if responses and all(r.get("id") in lost for r in responses):
                    removed.append(e)
                    self.bytes -= e.size
                    continue
            keep.append(e)
        self._entries = keep
        return removed

    def drop_sent_stale_audio(self, now: float) -> None:
        """Forget audio already written and older than the staleness window: a replay would drop
        it anyway, so holding it only costs memory. The stream's end, if still held, then lost
        audio as surely as if :meth:`new_connection` had dropped it (``_head_audio_dropped``)."""
        while self.cursor and self._entries:
            head = self._entries[0]
            if head.kind is not Kind.AUDIO or now - head.at <= self.staleness:
                break
            self._entries.popleft()
            self.bytes -= head.size
            self.cursor -= 1
            self._head_audio_dropped = True

    # -- internals -------------------------------------------------------------------------

    def _trim_through(self, seq: int) -> int:
        """Trim the written entries up to and including the one with ``seq`` (write order).
        Not among them (already trimmed, from the head): nothing written after it is covered."""
        for i in range(self.cursor):
            if self._entries[i].seq == seq:
                return self._trim_head(i + 1)
        return 0

    def _trim(self, covered: Callable[[int], bool]) -> int:
        n = 0
        while n < self.cursor and covered(self._entries[n].seq):
            n += 1
        return self._trim_head(n)

    def _trim_head(self, n: int) -> int:
        """Trim the first ``n`` entries (all written: ``n <= cursor``)."""
        for _ in range(n):
            e = self._entries.popleft()
            self.bytes -= e.size
            if e.elicits:
                self._head_audio_dropped = False  # (the stream that lost it is covered)
        self.cursor -= n
        self.stats.trimmed += n
        return n

    def _evictable_audio_bytes(self) -> int:
        return sum(e.size for e in self._entries if e.kind is Kind.AUDIO)

    def _evict_audio(self, need: int) -> None:
        freed = 0
        keep: collections.deque[Entry] = collections.deque()
        for i, e in enumerate(self._entries):
            if freed < need and e.kind is Kind.AUDIO:
                freed += e.size
                self.stats.dropped_full += 1
                if i < self.cursor:
                    self.cursor -= 1
                continue
            keep.append(e)
        self._entries = keep
        self.bytes -= freed
