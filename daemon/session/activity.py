"""The ONE activity model of a session: is a reply due, is this a quiet point, how idle is it.

Pure (no I/O, no clock: callers pass ``now``). Before this module the same facts had four
owners (the actor's ``_quiet`` and ``_expecting_reply``, the replay buffer's "one response per
eliciting message" count, and the registry writing ``last_activity``); one of them decides how far
the replay buffer is trimmed, so a rule change that missed one lost messages. Now:

- :meth:`Activity.server_message` is the only place that reads a server message for what it says
  about the reply in progress (:class:`ReplyFacts`). Which messages start a reply, which end it,
  and whether an ended reply answers an eliciting message are decided in :func:`reply_facts`.
  Issue #10 (``serverContent.interactionStatus``: a turn boundary with ``IN_PROGRESS`` does not
  end the interaction) is a change to that one function.
- :class:`Replies` counts, per connection, the eliciting messages written and the replies that
  ended. The replay buffer asks it which client messages a Developer-API handle covers
  (:meth:`Replies.covered_through`); responses end in order, one per eliciting message.
- :meth:`Activity.written` ends an interaction that the server will not end on its own (a
  NON_BLOCKING call keeping it IN_PROGRESS; see there).
- :meth:`Activity.pong` tells an input the model declined to answer (proactive audio, 3.8) from a
  stall, with a ping; a bare ``turnComplete`` answers the input it follows.
- :meth:`Activity.expecting_reply` (the stall timer), :meth:`Activity.quiet` (the goAway
  rotation), :meth:`Activity.holds` (what the writer keeps back while draining) and
  :meth:`Activity.idle_for` (the inactivity timeout; the registry calls :meth:`Activity.touch`).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from geminid.protocol import live, models

if TYPE_CHECKING:
    from geminid.daemon.session.replay import Entry, ReplayBuffer
    from geminid.daemon.session.toolcalls import ToolCalls


#: How long before the stall deadline a probe ping goes out (:meth:`Activity.pong`; at most half
#: of ``stall_timeout``): a live server answers it in a round trip, so the decision is still made
#: at the deadline.
PROBE_LEAD = 5.0
#: No decline is assumed below this much silence (a ``stall_timeout`` shorter than this has no
#: probe: the silence is a stall, as before): a model that has not begun to answer an input it
#: took after that long has declined it; sooner it may be slow, and its late reply, counted for
#: the next input, could let a handle trim that input before the server took it (a lost turn).
DECLINE_AFTER = 10.0
#: :meth:`Activity.overdue`: send a probe ping.
PROBE = "probe"


@attrs.frozen
class ReplyFacts:
    """What one server message says about the reply in progress."""

    #: The model started producing (content, or a tool call): the server is now mid-reply.
    started: bool = False
    #: The reply (the model's interaction) ended here: the transcript flushes, the tool round
    #: trip closes, the session may be quiet.
    boundary: bool = False
    #: ...and that end answers the oldest unanswered eliciting message (counted for coverage).
    answers: bool = False


def reply_facts(msg: live.ServerMessage, *, in_response: bool) -> ReplyFacts:
    """Read ``msg`` for the reply model. The only function that decides what ends a reply.

    A reply (the model's *interaction*) ends:

    - at ``turnComplete`` with ``interactionStatus: IDLE`` (``REQUIRES_ACTION`` is its
      deprecated alias), or at a ``turnComplete`` with no (or an unknown) status, for models
      that send none; a ``turnComplete`` with ``IN_PROGRESS`` (an extended-thinking filler,
      background reasoning, an asynchronous call still running) is **not** an end: the server
      is still mid-interaction, so the session is not quiet and the filler answers nothing;
    - at ``interrupted`` (the server's way to end a reply, even one it had not started
      streaming yet): it answers the message it was replying to.

    ``generationComplete`` is the end of one utterance, always followed by ``turnComplete``
    (GEMINI_LIVE.md §2), so it ends nothing; ``waitingForInput: true`` (the model waits for the
    user to go on) is not a turn end either.
    """
    if msg.kind == "toolCall":
        return ReplyFacts(started=True)
    if msg.kind != "serverContent":
        return ReplyFacts()
    producing = bool(msg.content.get("modelTurn") or msg.text or msg.output_transcription or msg.audio_chunks)
    if msg.interrupted:
        return ReplyFacts(boundary=True, answers=True)
    if msg.turn_complete:
        if msg.interaction_status is live.InteractionStatus.IN_PROGRESS:
            return ReplyFacts(started=not in_response)  # mid-interaction, whatever came before
        return ReplyFacts(boundary=True, answers=in_response or producing)
    return ReplyFacts(started=producing and not in_response)


class Replies:
    """Per connection: the eliciting messages written, in the order their replies come, and how
    many replies ended.

    Coverage on the Developer API rests on this count: the server issues ``resumable: true``
    handles only at quiet points, so a handle covers every message up to the last eliciting
    message whose reply has ended on this connection. Besides the client's turns, a response to
    a NON_BLOCKING call that is not SILENT elicits a reply of its own (WHEN_IDLE: spoken once the
    model is idle, after the end of what it was saying). A reply that ends with no eliciting
    message left unanswered (the model spoke on its own) is not counted.

    The asymmetry is the point: an eliciting message counted whose reply never ends on its own
    only delays coverage (a possible duplicate on a replay, which :class:`Activity` resolves
    where the server merges two interactions into one), while an end counted for a message
    the server has not consumed lets a handle trim a turn it does not cover (a lost turn). So a
    tool response is counted wherever it is written: before the chaos soak's 2026 forms, one
    written while the model was talking was not, and its spoken result, which ends with an IDLE
    of its own, was counted as the answer to the next turn.

    **Replies come in write order but for one case: a result kept for later.** Input is
    answered as the server reads it (a turn stops the reply in progress with ``interrupted`` and
    starts its own), but a WHEN_IDLE result that reaches the server while the model speaks waits
    in a queue for the model's next *natural* end (an IDLE, not an ``interrupted``). If the reply
    it waits behind is interrupted instead, by input written after the result, the reply to that
    input comes first, and the result is spoken only once a reply ends on its own. So, when the
    reply now due ends with ``interrupted`` (:meth:`reply_ended`), the WHEN_IDLE results written
    right after its message and before anything that could have stopped the model (a *barrier*:
    any other write but a tool response that is not INTERRUPT, see :meth:`barrier`) are set
    aside (*deferred*): the next replies are matched to the messages after them; at the next
    natural end they are due again, first. Matched in write order instead, the reply to the
    input was counted for the result and the handle issued after it taken to cover one turn
    fewer than it did: the next reconnect replayed that turn (the chaos soak's 3.8 forms, a
    duplicated turn in about one run in four). Any other end (an IN_PROGRESS ``turnComplete``,
    a merge counted by :class:`Activity`) puts the deferred results back first too, which is
    the write order: the reading that can only delay coverage.

    Since replies need not end in write order, what an end proves consumed is everything written
    up to the latest-*written* message answered (:meth:`answered_through`,
    :meth:`covered_through`), not the last one matched.
    """

    def __init__(self) -> None:
        self._eliciting: collections.deque[int] = collections.deque()  # unanswered, in order
        self._answered = 0  # replies ended on this connection not yet matched to a handle
        #: The tool responses among ``_eliciting`` (their reply may be spoken inside another).
        self._results: set[int] = set()
        #: Write position of every message counted (seq -> its rank among the writes).
        self._order: dict[int, int] = {}
        self._writes = 0
        #: Results whose reply the server may keep until the model is idle (WHEN_IDLE), written
        #: with no barrier since the message before them: set aside if that message's reply is
        #: interrupted (see the class docstring).
        self._deferrable: set[int] = set()
        #: Deferred results (their replies owed, in order), due again at the next natural end.
        self._deferred: list[int] = []
        self._barrier = False  # something that may stop the model was written since the last count

    def reset(self) -> None:
        """A new connection: nothing written on it yet, nothing answered."""
        self._eliciting.clear()
        self._answered = 0
        self._results.clear()
        self._order.clear()
        self._writes = 0
        self._deferrable.clear()
        self._deferred.clear()
        self._barrier = False

    def _written(self, seq: int) -> None:
        self._writes += 1
        self._order[seq] = self._writes
        self._barrier = False

    def sent(self, seq: int) -> None:
        """An eliciting message was written on this connection."""
        self._eliciting.append(seq)
        self._written(seq)

    def sent_tool_response(self, seq: int, replies: int, *, deferrable: bool = False) -> None:
        """A tool response eliciting ``replies`` replies was written (see the class docstring).
        ``deferrable``: the server keeps its result until the model is idle (WHEN_IDLE)."""
        if not replies:
            return
        self._eliciting.extend([seq] * replies)
        self._results.add(seq)
        if deferrable and not self._barrier:
            self._deferrable.add(seq)
        self._written(seq)

    def barrier(self) -> None:
        """A message that may stop the model (any but a non-INTERRUPT tool response, counted or
        not) was written: a result written after it was not kept behind the reply before it."""
        self._barrier = True

    def reply_ended(self, *, interrupted: bool = False) -> None:
        """The reply now due ended; ``interrupted``: stopped by input (``interrupted``), not on
        its own (see the class docstring for what each does to the results kept for later)."""
        if self._answered >= len(self._eliciting):
            self._undefer()  # nothing else owed: it was a deferred result's
        if self._answered < len(self._eliciting):
            self._answered += 1
        if not interrupted:
            self._undefer()
            return
        while self._answered < len(self._eliciting) and self._eliciting[self._answered] in self._deferrable:
            self._deferred.append(self._eliciting[self._answered])
            del self._eliciting[self._answered]

    def reply_ended_for(self, seq: int) -> None:
        """The reply to eliciting message ``seq`` ended (if it is still owed), wherever it is
        in the order: an interaction that ended at a call's pause, with a kept result made due
        before it (:meth:`Activity._kept_result_due`). Matched to the head instead, the result's
        own reply, spoken next, was taken for the interaction's."""
        for i in range(self._answered, len(self._eliciting)):
            if self._eliciting[i] == seq:
                del self._eliciting[i]
                self._eliciting.insert(self._answered, seq)
                self._answered += 1
                return

    def idle_point(self) -> None:
        """The server may have started a result it kept (a ``turnComplete`` that ends no reply
        we count, extended thinking's IN_PROGRESS): the deferred results are due first again."""
        self._undefer()

    def _undefer(self) -> None:
        for seq in reversed(self._deferred):
            self._eliciting.insert(self._answered, seq)
        self._deferred.clear()

    def answering(self) -> int | None:
        """The seq of the eliciting message the reply now streaming answers, or None when none
        is owed."""
        return self._eliciting[self._answered] if len(self._eliciting) > self._answered else None

    def awaiting(self) -> bool:
        """An eliciting message was written on this connection and its reply has not ended."""
        return len(self._eliciting) > self._answered or bool(self._deferred)

    def forgive(self, seq: int) -> None:
        """The reply owed for tool response ``seq`` was spoken inside another interaction
        (:meth:`Activity.written`): it is owed no more."""
        if seq in self._deferred:
            self._deferred.remove(seq)
            return
        for i in range(self._answered, len(self._eliciting)):
            if self._eliciting[i] == seq:
                del self._eliciting[i]
                return

    def owes(self, seq: int) -> bool:
        """Eliciting message ``seq`` was written on this connection and its reply has not ended
        (it is due now or later, not set aside)."""
        return seq in itertools.islice(self._eliciting, self._answered, None)

    def is_result(self, seq: int) -> bool:
        """Eliciting message ``seq`` is a tool response (its reply speaks a result)."""
        return seq in self._results

    def awaiting_input_reply(self) -> bool:
        """:meth:`awaiting`, for an eliciting message that is not a tool response. A result's
        reply may have been spoken inside another interaction (so no end of its own comes):
        owed, it still holds coverage back (the safe side), but it is no reason to expect
        frames (a stall) or to put off a rotation; its round trip is ``ToolCalls.answered``
        until the next interaction end."""
        return any(seq not in self._results for seq in itertools.islice(self._eliciting, self._answered, None))

    def _latest(self, seqs: Iterable[int]) -> int | None:
        """The latest written of ``seqs`` (None if empty)."""
        return max(seqs, key=lambda s: self._order.get(s, 0), default=None)

    def answered_through(self) -> int | None:
        """The seq of the latest-written eliciting message whose reply ended (not consumed,
        unlike :meth:`covered_through`): the server surely consumed it and all written before."""
        answered = min(self._answered, len(self._eliciting))
        return self._latest(itertools.islice(self._eliciting, answered))

    def covered_through(self) -> int | None:
        """A resumable handle arrived (Developer API): the seq of the latest-written eliciting
        message it covers (its reply ended), or None. Consumes the matched replies."""
        answered = min(self._answered, len(self._eliciting))
        matched = [self._eliciting.popleft() for _ in range(answered)]
        last = self._latest(matched)
        pending = {*self._eliciting, *self._deferred}
        for seq in matched:
            if seq not in pending:
                self._results.discard(seq)
                self._deferrable.discard(seq)
                self._order.pop(seq, None)
        self._answered = 0
        return last

    def consumed_through(self, covered: Collection[int]) -> None:
        """Transparent mode: the server consumed the messages ``covered`` (seqs), the first ones
        written on this connection. By write position, not by seq: a tool response written ahead
        of a held replay has a higher seq than the turns written after it, which it does not
        cover (counted as consumed, their replies would be matched to the wrong messages, and a
        later trim would take a turn the server never had)."""
        while self._eliciting and self._eliciting[0] in covered:
            self._results.discard(self._eliciting.popleft())
            self._answered = max(0, self._answered - 1)


def _produces(msg: live.ServerMessage) -> bool:
    """Model output (speech, text, a tool call), not a bare turn boundary."""
    return msg.kind == "toolCall" or bool(
        msg.content.get("modelTurn") or msg.text or msg.output_transcription or msg.audio_chunks
    )


def _says_something(msg: live.ServerMessage) -> bool:
    """Model output or a turn boundary (not input transcription, not bookkeeping)."""
    return bool(
        msg.turn_complete
        or msg.content.get("modelTurn")
        or msg.text
        or msg.output_transcription
        or msg.audio_chunks
    )


@attrs.define
class Activity:
    """The session's activity facts; asked by the writer, the timers, the rotation, the registry."""

    buffer: ReplayBuffer
    tools: ToolCalls
    #: Trio time of the last client or server activity (the inactivity timeout).
    last_activity: float
    connected: bool = False
    #: The server is mid-reply on this connection.
    in_response: bool = False
    #: Trio time of the last frame received, and of the last message written that asks for a
    #: reply: silence is measured from the later of the two (a tool that took minutes is not a stall).
    last_frame_at: float = 0.0
    asked_at: float = 0.0
    #: The server is between two utterances of an open interaction: its last word was a
    #: ``turnComplete`` with IN_PROGRESS (a filler, background reasoning, a call running).
    paused: bool = False
    #: The open interaction said something, and how many times it paused (IN_PROGRESS) after
    #: saying something: its first such pause may be a filler's (:meth:`_is_filler`).
    spoke: bool = False
    content_pauses: int = 0
    #: The eliciting message the open interaction answers (``Replies.answering`` when it began).
    open_for: int | None = None
    #: The open interaction made a NON_BLOCKING call: paused, it waits for the result, and has
    #: nothing more to say until a response (or new input) arrives.
    call_wait: bool = False
    #: Something eliciting was written while that interaction was open (see :meth:`written`),
    #: and then something that may stop the model (an ``interrupted`` at a call's pause, see
    #: :meth:`server_message`).
    merge_pending: bool = False
    cut_after_merge: bool = False
    #: The open interaction was counted as over before the server ended it (a SILENT response
    #: closed its call): the ``interrupted`` or IDLE that may still end it answers nothing more.
    precounted: bool = False
    #: The tool responses written at pauses of an interaction that did not make the call (so
    #: not told from background reasoning): their seqs, and whether that interaction has ended
    #: since. Their results were spoken inside it if nothing starts before the next input. All
    #: of them, not only the last: a willContinue partial and the final result can both be
    #: written at pauses of one interaction and both be spoken inside it (the soak's seed 11).
    results_at_pause: tuple[int, ...] = ()
    result_pause_ended: bool = False
    #: A SILENT response closed the last call at such a pause, and the server said nothing since.
    silent_at_pause: bool = False
    #: The model may answer an input with nothing at all (proactive audio, ``ModelRules.may_decline``).
    may_decline: bool = False
    #: The last word was an ``interrupted`` without its ``turnComplete``: the next one is its
    #: tail (it closes the interruption: no natural end, so the server starts no result it kept,
    #: see :class:`Replies`, and it is no declined input's bare ``turnComplete``).
    interrupted_tail: bool = False
    #: Trio time a probe ping was asked for: a reply that may have been declined is nearly
    #: overdue (:meth:`pong` decides; no pong by the stall deadline is a stall).
    probe_at: float | None = None

    @property
    def replies(self) -> Replies:
        return self.buffer.replies

    # -- events --------------------------------------------------------------------------

    def touch(self, now: float) -> None:
        """A client did something (sent, opened, attached): the session is not idle."""
        self.last_activity = now

    def connection_opened(self, now: float) -> None:
        self.connected = True
        self._no_interaction()
        self.interrupted_tail = False
        self.results_at_pause, self.result_pause_ended = (), False
        self.last_frame_at = now
        self.asked_at = 0.0

    def connection_closed(self) -> None:
        self.connected = False
        self._no_interaction()

    def _no_interaction(self) -> None:
        self.in_response = False
        self.probe_at = None
        self.silent_at_pause = False
        self.paused = False
        self.open_for = None
        self.call_wait = False
        self.merge_pending = False
        self.precounted = False
        self.spoke = False
        self.content_pauses = 0
        self.cut_after_merge = False

    def declare(self, setup: Mapping[str, Any]) -> None:
        """The session's setup: its function behaviours, and whether its model may decline."""
        self.tools.declare(setup)
        self.may_decline = models.rules_for(str(setup.get("model") or "")).may_decline

    def frame_received(self, now: float) -> None:
        self.last_frame_at = now
        self.probe_at = None  # the server speaks: silence counts afresh

    def written(self, entry: Entry, now: float) -> bool:
        """``entry`` was written; True if it asks for a reply (the stall clock starts, unless
        a reply was already due: silence counts from the first ask since the last frame, so a
        client that keeps sending into a stalled connection does not push the stall on).

        An interaction that made a NON_BLOCKING call pauses at an IN_PROGRESS ``turnComplete``
        while the call runs (extended thinking), and has no end of its own when

        - new input arrives at the pause (a turn, a spoken result): the model answers it within
          the same interaction, and one IDLE later ends both; the merge is detected when the
          model speaks after the pause (:meth:`server_message`): an ``interrupted`` instead
          means the input cut the interaction, which is an end as usual;
        - its last call is answered SILENT: the model says nothing more for it, so it is over
          now (an IDLE or ``interrupted`` that still ends it is not counted again).

        Counted as one end for two eliciting messages, every later handle was taken to cover one
        turn fewer than it did, and the next reconnect replayed a turn the resumed conversation
        already held (the chaos soak's extended-thinking form), and the session, still "in a
        reply" after the SILENT response, was declared stalled.

        A tool response written at the pause of an interaction that did not make the call
        cannot be placed at once: the pause may be background reasoning (the result is spoken
        after the IDLE, an end of its own) or only the call (the result is spoken inside, one
        IDLE for both). If the interaction ended and nothing started before the client's next
        input, no result came after the IDLE: its owed reply is forgiven (``Replies.forgive``).
        Had the result's speech been about to start, that input reaches the server during it
        (and interrupts it, an end counted for a message the server has consumed) unless it
        travels longer than the whole spoken result takes. A SILENT response closing the last
        call at such a pause is placed the same way: if the server says nothing more before the
        client's next input, the interaction was over (counted then; no stall meanwhile).
        """
        if entry.elicits and self.silent_at_pause and self._open_for_pending():
            # Nothing came after the SILENT response that closed the last call: the interaction
            # was over (had it been reasoning, its answer would have come).
            self.replies.reply_ended()
            self._no_interaction()
            self.precounted = True
        if entry.elicits and self.result_pause_ended and self.results_at_pause:
            # The interaction ended and nothing started since: the results were spoken in it.
            for seq in self.results_at_pause:
                self.replies.forgive(seq)
            self.results_at_pause, self.result_pause_ended = (), False
        if entry.replies_owed and self.in_response and self.paused and not self.call_wait:
            self.results_at_pause, self.result_pause_ended = (*self.results_at_pause, entry.seq), False
        asks = bool(entry.elicits or entry.replies_owed)
        if self.in_response and self.merge_pending and entry.may_stop_the_model:
            self.cut_after_merge = True  # (see server_message)
        if self.in_response and asks:
            # Whether it is answered inside this interaction shows if the interaction pauses for
            # a call (call_wait) and then speaks again (server_message). Marked only once the
            # pause was known to be the call's, input written a moment earlier (the frames that
            # say so still on their way) or a result the server kept until the pause came was
            # answered there with no end counted for the interaction (the 3.8-extended soak).
            self.merge_pending = True
        if self.in_response and self.call_wait:
            if not asks and entry.silent and self.paused and not self.tools.open and self._open_for_pending():
                self.replies.reply_ended()
                self._no_interaction()
                self.precounted = True
        elif entry.silent and self.in_response and self.paused and not self.tools.open:
            self.silent_at_pause = True
        if entry.asks_reply:
            if not self.expecting_reply() or self.asked_at <= self.last_frame_at:
                self.asked_at = now
            return True
        return False

    def _open_for_pending(self) -> bool:
        """The open interaction began for an eliciting message that is still unanswered. Not
        only when its reply is the one now due: a kept result made due again at the call's pause
        (:meth:`Replies.idle_point`) goes before it, and the end counted then is matched to that
        result, which was written before it (the reading that can only delay coverage). Asked
        only whether the reply now due is the open one's, the end of an interaction the call
        held was not counted when the server spoke a kept result at its pause, and every later
        handle covered one turn fewer (the 3.8-extended soak, seed 80111)."""
        return self.open_for is not None and self.replies.owes(self.open_for)

    def _kept_result_due(self) -> bool:
        """At a call's pause, the reply now due is a result's, not the open interaction's (a
        result kept behind an interrupted reply, made due again there): what the model says next
        is that result, which the server speaks at such a pause (the fake does), so the open
        interaction is over as when input written at the pause is answered. Not so, the end later
        counted for the open interaction (its SILENT response, its IDLE) went to the result, and
        every later handle covered one turn fewer (the 3.8-extended soak, seed 80152)."""
        due = self.replies.answering()
        return (
            due is not None
            and due != self.open_for
            and self.replies.is_result(due)
            and self._open_for_pending()
        )

    def server_message(self, msg: live.ServerMessage) -> ReplyFacts:
        """Account for one server message's effect on the reply in progress."""
        says = msg.kind == "toolCall" or (msg.kind == "serverContent" and _says_something(msg))
        cut = msg.interrupted and self.cut_after_merge
        merged = self.merge_pending or (says and self._kept_result_due())
        if (says or cut) and self.in_response and self.paused and self.call_wait and merged:
            # The interaction that waited for its call took new input at its pause and speaks
            # again: this is the reply to that input (see :meth:`written`); the waiting one is over.
            if self.open_for is not None:
                self.replies.reply_ended_for(self.open_for)
            # An `interrupted` there, before any frame of that reply came, ends that reply (input
            # written after what it answers cut it: counted next, as any `interrupted`): the
            # server was not generating at the pause, so it cut no reply but one begun after it.
            # Counted for the interaction that waited for its call only, the cut reply stayed
            # owed and every later handle covered one message fewer (the 3.8-extended soak,
            # seeds 80112, 80142, 80143).
            # The reply goes on inside the same interaction, which the call still holds: input at
            # its later pauses is merged too (_is_filler marks them). Not so, a second input at a
            # pause (the user spoke twice while the call ran) was answered inside it with no end
            # counted, and the reconnect replayed it (a duplicate).
            self._no_interaction()
        filler = self._is_filler(msg)
        facts = reply_facts(msg, in_response=self.in_response)
        if self.precounted and facts.answers and not says:
            facts = attrs.evolve(facts, answers=False)  # it ended what was counted as over
        if facts.boundary and not facts.answers and self._declined_by_turn_complete(msg):
            facts = attrs.evolve(facts, answers=True)
        if (
            msg.turn_complete and not msg.interrupted and not facts.answers and not self.interrupted_tail
            and not filler
        ):
            # An end we count for nobody (a call's pause, a bare IDLE): the server may have
            # started a result it kept for an idle model (Replies.idle_point). Not at a filler's
            # pause (see _is_filler).
            self.replies.idle_point()
        if facts.started:
            if self.result_pause_ended:
                self.results_at_pause, self.result_pause_ended = (), False  # its own reply
            self.in_response = True
            self.open_for = self.replies.answering()
        if facts.boundary:
            if facts.answers:
                self.replies.reply_ended(interrupted=msg.interrupted)
            self._no_interaction()
            self.result_pause_ended = bool(self.results_at_pause)
        if msg.kind == "toolCall" and self.in_response and self.tools.non_blocking_pending:
            self.call_wait = True
        if msg.interrupted or says:
            self.interrupted_tail = msg.interrupted and not msg.turn_complete
        if says:
            self.precounted = False
            self.silent_at_pause = False
            self.spoke = self.spoke or _produces(msg)
            self.paused = (
                msg.kind == "serverContent"
                and msg.turn_complete
                and msg.interaction_status is live.InteractionStatus.IN_PROGRESS
                and self.in_response
            )
            if self.paused and self.spoke:
                if not filler and self.tools.open:
                    # A call holds it (see _is_filler): one still running, or answered by a
                    # response the server may not have read when it paused.
                    self.call_wait = True
                self.content_pauses += 1
            if self.paused and self._result_reply_waits_for_a_call():
                self.call_wait = True
        return facts

    def _is_filler(self, msg: live.ServerMessage) -> bool:
        """``msg`` is the first pause (IN_PROGRESS) after speech in the reply to an input, in an
        interaction that made no call: extended thinking's filler, the answer still to come.

        - The model is not idle there, so a WHEN_IDLE result kept behind an interrupted reply is
          not started: it waits for the end of the answer (a call still running or not), so the
          deferred results stay deferred (no :meth:`Replies.idle_point`). Made due at the filler,
          the result took the answer's IDLE, the turn stayed owed, every later handle covered one
          turn fewer, and the next reconnect replayed a turn (the 3.8-extended soak, seeds 61004
          and, a willContinue call still running, 80153). A server that speaks the kept result
          at the filler's pause instead (UNCONFIRMED; ``FakeOptions.when_idle_at_pause``) gets the
          turn replayed (a duplicate), never lost: the end is then counted for a message the
          server has consumed.
        - Any later pause after speech while a NON_BLOCKING call runs (the answer's end, a
          result's) is one the call holds, as at the pause of the interaction that made the call
          (``call_wait``): the model has said all it has, and input written there is answered
          inside the same interaction (:meth:`written`). Not marked so, a turn written after an
          answer that ended IN_PROGRESS (the call of a turn it had interrupted still running)
          was answered with no end counted for the answer, and every later handle covered one
          turn fewer (the 3.8-extended soak, seeds 80111 and 80112). A filler's pause is not
          held: input there interrupts the answer to come (an end, counted as usual).
        """
        return (
            msg.turn_complete
            and msg.interaction_status is live.InteractionStatus.IN_PROGRESS
            and self.in_response
            and self.spoke
            and not self.content_pauses
            and not self.call_wait
            and self.open_for is not None
            and not self.replies.is_result(self.open_for)
        )

    def _declined_by_turn_complete(self, msg: live.ServerMessage) -> bool:
        """A bare ``turnComplete`` (nothing started) answers the input it follows: proactive
        audio declined to reply (one UNCONFIRMED way the server says so; ``FakeOptions.decline``).
        Not the tail of an ``interrupted`` (that end was counted), not the IDLE that ends an
        interaction counted as over already (``precounted``), not for a tool result (its reply
        may have been spoken inside another interaction). Left owed, the turn took the next
        turn's end: every later handle covered one turn fewer, and a reconnect replayed a turn
        the resumed conversation held (a duplicate), after a needless stall."""
        if not (self.may_decline and msg.turn_complete) or self.interrupted_tail or self.precounted:
            return False
        seq = self.replies.answering()
        return seq is not None and not self.replies.is_result(seq)

    def pong(self, sent_at: float) -> bool:
        """A ping written at ``sent_at`` was answered. While :attr:`probing`, a ping written after
        the last message that asks for a reply proves the server read that message: the model
        chose to say nothing (proactive audio; the other UNCONFIRMED way, ``FakeOptions.decline
        = "nothing"``). The owed replies are counted as ended (a later handle covers those
        inputs: the server took them before it issued it), so no stall is declared and no
        reconnect replays an input the server has (a duplicate, declined again: a reconnect
        loop). True if so."""
        probing, self.probe_at = self.probe_at is not None, None
        if not (probing and sent_at > self.asked_at and self.declinable()):
            return False
        while self.replies.awaiting():
            self.replies.reply_ended()
        return True

    def declinable(self) -> bool:
        """What is overdue may be a declined input: the model may decline, nothing started, no
        tool round trip is open, and a reply to an input (not only to a result) is owed."""
        return (
            self.may_decline
            and self.connected
            and not self.in_response
            and not self.tools.open
            and self.replies.awaiting_input_reply()
        )

    def _result_reply_waits_for_a_call(self) -> bool:
        """The open interaction speaks a tool result and paused while a NON_BLOCKING call still
        runs (a ``willContinue`` partial, or another call): like the interaction that made a
        call, it has nothing more to say until a response or new input comes, so what is written
        at this pause is answered inside it (:meth:`written`). A reply to a result has no filler
        of its own; before this rule, the final result written at a partial's pause stayed owed
        a reply of its own after it was spoken inside, and the next turn's end was counted for
        it (the extended-thinking soak's duplicated turns)."""
        return (
            self.open_for is not None
            and self.replies.is_result(self.open_for)
            and self.tools.non_blocking_pending
        )

    # -- questions -----------------------------------------------------------------------

    def expecting_reply(self) -> bool:
        """The server owes us frames (a silence now is a stall). Not while a tool call waits for
        the client: then the server is rightly silent for as long as the tool takes."""
        if not self.connected or self.tools.pending or self.silent_at_pause:
            return False
        return self.in_response or self.replies.awaiting_input_reply() or bool(self.tools.answered)

    def overdue(self, now: float, timeout: float) -> str | None:
        """The timers woke at ``now``: None (nothing due), :data:`PROBE` (a reply that may have
        been declined is nearly overdue: ping, and :meth:`pong` decides), or why this is a stall."""
        at = self.stall_at(timeout)
        if at is None or now < at:
            return None
        if self._probe_due(timeout):
            self.probe_at = now
            return PROBE
        return f"no frame for {timeout:g} s while a reply was expected"

    def _probe_due(self, timeout: float) -> bool:
        return timeout >= DECLINE_AFTER and self.probe_at is None and self.declinable()

    def stall_at(self, timeout: float) -> float | None:
        """When the timers must look at the silence: the stall deadline (None: no reply due, or
        stall detection off), or :data:`PROBE_LEAD` before it when a probe ping is due first."""
        if timeout <= 0 or not self.expecting_reply():
            return None
        at = max(self.last_frame_at, self.asked_at) + timeout
        return at - min(PROBE_LEAD, timeout / 2) if self._probe_due(timeout) else at

    def quiet(self) -> bool:
        """A quiet point, where a goAway rotation loses nothing: no generation in flight, no
        unanswered message, no tool round trip open, nothing written that no handle covers."""
        return (
            self.connected
            and not self.in_response
            and not self.replies.awaiting_input_reply()
            and not self.tools.open
            and not self.buffer.sent_uncovered()
        )

    @staticmethod
    def holds(entry: Entry, *, draining: bool) -> bool:
        """While draining, hold new eliciting messages for the next connection so that a quiet
        point can come; tool responses and audio still flow (they complete the round trip)."""
        return draining and entry.elicits

    def idle_for(self, now: float) -> float:
        return now - self.last_activity
