"""FakeOptions: every knob of the fake upstream, with the real service's behaviour as default.

All durations are seconds on **trio's clock** (``trio.current_time``), so that a test under
``trio.testing.MockClock`` drives lifetimes, goAway, reply pace, latency and handle TTLs.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .catalogue import Catalogue, catalogue_2026
from .faults import Planned

#: The lifetime cut after a goAway the client ignored (GEMINI_LIVE.md §5, §6).
GOAWAY_VIOLATION_REASON = (
    "Connection aborted: client failed to close the connection after receiving a GoAway message."
)
#: The other lifetime cut the real service does: a plain 1000.
CANCELLED_REASON = "The operation was cancelled."
#: The values of ``FakeOptions.decline``: what the model sends for an input it declines.
DECLINES = ("turn_complete", "nothing")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class FakeOptions:
    """Configuration of one :class:`~geminid.daemon.fake.FakeUpstream`.

    - ``api_key``: the accepted key; ``None`` accepts any non-empty key (a missing key is
      always refused at the upgrade with HTTP 401, a wrong one with 403).
    - ``lifetime``: connection lifetime from the upgrade; ``goaway_before``: how long before the
      cut the goAway goes out (capped to ``lifetime``); ``goaway=False`` cuts with no goAway.
    - ``cut_mode``: ``"goaway"`` closes 1008 "... client failed to close the connection after
      receiving a GoAway ..." at the deadline; ``"cancelled"`` closes 1000
      "The operation was cancelled." (the real service does both).
    - ``handle_ttl``: how long handles stay valid after the session's last connection ended.
    - ``max_sessions``: concurrent sessions (open connections that have sent their setup; a
      connection still without one is not counted) past which setup is closed with 1011
      ``RESOURCE_EXHAUSTED``; ``None`` is unlimited.
    - ``empty_frames``: send the bare ``{}`` frames the real service sends (two right after
      setupComplete, one after the first chunk of every reply).
    - ``reply_pace``: seconds before each reply chunk and before the end of a reply;
      ``reply_chunks``: how many ``modelTurn`` chunks a reply is split into.
    - ``latency``: every server frame leaves this much later than it was produced (a delay line,
      not a per-frame sleep: frames keep their spacing).
    - ``transparent``: accept ``sessionResumption.transparent`` on the Developer API path too and
      put ``lastConsumedClientMessageIndex`` into every update (on the Vertex path the client
      asks for it with ``transparent: true``).
    - ``tool_trigger_words``: words that trigger a call of the first declared function (besides
      each function's own name).
    - ``seed``: seeds the handle and tool-call-id generator (deterministic runs).
    - ``faults``: faults armed on **every** connection (the CLI's ``--drop-every`` etc.).
    - ``catalogue``: the models served and how each behaves (:mod:`.catalogue`).
    - ``plain_interaction_status``: plain models (3.8) send ``interactionStatus`` with every
      ``turnComplete``; False is the UNCONFIRMED variant where only extended thinking does.
    - ``resumable_in_progress``: issue ``resumable: true`` handles between an IN_PROGRESS
      ``turnComplete`` and IDLE (UNCONFIRMED; False: not resumable until IDLE).
    - ``resumable_pending_calls``: a pending NON_BLOCKING call does not hold handles back
      (UNCONFIRMED; False: no resumable handle while any call is pending).
    - ``idle_after_silent``: on extended thinking, a SILENT response that closes the last pending
      call of an idle model ends its IN_PROGRESS interaction with a bare ``turnComplete`` + IDLE
      (UNCONFIRMED; False: nothing is sent, the interaction stays IN_PROGRESS until new input).
    - ``idle_while_call_pending``: on extended thinking, an interaction ends (``turnComplete`` +
      IDLE) after its filler although a NON_BLOCKING call is still pending; the result is spoken
      later, as its ``scheduling`` says, in an interaction of its own (UNCONFIRMED; False: a
      pending call keeps the interaction IN_PROGRESS until its response). Plain 3.8 always ends
      IDLE while a call is pending.
    - ``when_idle_at_pause``: on extended thinking, a WHEN_IDLE result the model kept while it
      spoke is spoken at the filler's IN_PROGRESS pause, inside the interaction, before the
      answer (UNCONFIRMED; False: it waits for the model to be idle, after the answer's IDLE).
    - ``decline``: proactive audio (models with ``proactive_audio_always``, 3.8) may not answer
      an input at all (GEMINI_LIVE_2026.md §7, UNCONFIRMED what the server sends then). A user
      turn containing any of ``decline_words`` is taken into context and answered with a bare
      ``turnComplete`` (+ status) if ``"turn_complete"``, with nothing if ``"nothing"``; None:
      the model answers every input.
    - ``bearer_check``: on the Vertex path, a bearer token passes only when this says it is
      valid now (a token issuer the test controls: an OAuth endpoint on loopback that
      google-auth calls); an expired or unknown token is refused with HTTP 401 at the upgrade,
      as the real service does. None: the ``api_key`` rule applies to Vertex too.
    - ``consumed_index``: the convention of ``lastConsumedClientMessageIndex`` (UNCONFIRMED for
      the real service): ``"0-connection"`` (0-based, counted per connection; the default),
      ``"1-connection"``, ``"0-session"`` or ``"1-session"`` (counted over the conversation,
      carried by its handles across resumes).
    - ``host``/``port``: where :meth:`FakeUpstream.serve` binds.
    - ``handshake_timeout``/``close_timeout``: bounds on the HTTP upgrade and on the closing
      handshake after the fake sent a close frame.
    """

    api_key: str | None = None
    lifetime: float = attrs.field(default=600.0, validator=_non_negative)
    goaway_before: float = attrs.field(default=60.0, validator=_non_negative)
    goaway: bool = True
    cut_mode: str = attrs.field(
        default="goaway", validator=attrs.validators.in_(("goaway", "cancelled"))
    )
    handle_ttl: float = attrs.field(default=7200.0, validator=_non_negative)
    max_sessions: int | None = None
    empty_frames: bool = True
    reply_pace: float = attrs.field(default=0.01, validator=_non_negative)
    reply_chunks: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    transparent: bool = False
    tool_trigger_words: tuple[str, ...] = ("weather",)
    seed: int = 0
    faults: tuple[Planned, ...] = ()
    catalogue: Catalogue = attrs.field(factory=catalogue_2026)
    plain_interaction_status: bool = True
    resumable_in_progress: bool = False
    resumable_pending_calls: bool = False
    idle_after_silent: bool = False
    idle_while_call_pending: bool = False
    when_idle_at_pause: bool = False
    decline: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(DECLINES))
    )
    decline_words: tuple[str, ...] = ("psst",)
    bearer_check: Callable[[str], bool] | None = None
    consumed_index: str = attrs.field(
        default="0-connection",
        validator=attrs.validators.in_(("0-connection", "1-connection", "0-session", "1-session")),
    )
    host: str = "127.0.0.1"
    port: int = 0
    handshake_timeout: float = 30.0
    close_timeout: float = 5.0
