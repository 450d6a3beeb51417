"""Telling a configuration error from an outage, where the dial failures allow it.

The classifier (:mod:`.classify`) looks at one ending and picks the next step; a refused TCP
connection is then simply "network, retry with backoff", because one refusal cannot tell a typo
in ``upstream.endpoint`` from a service that is restarting. A *history* can: when every attempt
since the session started failed the same way before reaching the server at all (the host does
not resolve, every address refuses, the TLS handshake fails or gets no answer), the endpoint is
most likely wrong, and the status should say so instead of "network" or "timeout" every 10 s.

This is a diagnosis, not a decision: the session keeps retrying on the backoff's schedule
(a real outage that looks like this at first recovers on its own), only the ``reason`` it reports
changes. Once any attempt reaches the server (an HTTP answer, a close frame, setupComplete), the
endpoint is proven right and no suspicion is raised again for the session's life. Pure and
immutable, like :class:`.backoff.Backoff`: the caller feeds each ending and keeps the new value.
"""

from __future__ import annotations

import attrs

from .endings import DialFault, Ending, EndingKind

#: What each fault suggests, as (cause slug, reason text). The slug is for logs and metrics; the
#: reason is what ``session.status`` shows.
_SUSPICIONS: dict[DialFault, tuple[str, str]] = {
    DialFault.DNS: (
        "endpoint_unresolved",
        "the upstream host name does not resolve on any attempt; check upstream.endpoint",
    ),
    DialFault.REFUSED: (
        "endpoint_refused",
        "every connection to the upstream host and port is refused; check upstream.endpoint",
    ),
    DialFault.TLS: (
        "endpoint_not_tls",
        "the TLS handshake with the upstream fails on every attempt; a wss:// endpoint that "
        "serves plain ws://? check upstream.endpoint",
    ),
    DialFault.TLS_SILENT: (
        "endpoint_not_tls",
        "the upstream never answers the TLS handshake; a wss:// endpoint that serves plain "
        "ws://? check upstream.endpoint",
    ),
}


@attrs.frozen
class Suspicion:
    """The endpoint is probably misconfigured: ``cause`` (slug) and ``reason`` (for the status)."""

    cause: str
    reason: str
    attempts: int


@attrs.frozen
class DialHistory:
    """Dial failures of one session since it started, as far as they bear on the endpoint."""

    #: Attempts alike in the same fault before the suspicion is raised. One DNS failure or one
    #: refusal is an ordinary blip; three in a row from the start, with nothing in between, is not.
    threshold: int = 3
    #: Some attempt got an answer from the server: the endpoint is right, for good.
    reached_server: bool = False
    #: The fault every attempt so far had, while they all agree (None: none yet, or they differ).
    fault: DialFault | None = None
    #: How many attempts in a row had ``fault``.
    attempts: int = 0
    #: The attempts disagreed (e.g. a refusal, then a timeout): no clear evidence, no suspicion.
    mixed: bool = False

    def after(self, ending: Ending) -> DialHistory:
        """The history with one more ended attempt."""
        if self.reached_server:
            return self
        if _answered(ending):
            # An HTTP status, a close frame, a setup that started...: the endpoint is right.
            return DialHistory(self.threshold, reached_server=True)
        fault = ending.fault
        if (
            fault is None  # e.g. a TCP connect that timed out: no evidence either way
            or self.mixed
            or (self.fault is not None and _family(self.fault) is not _family(fault))
        ):
            return attrs.evolve(self, mixed=True, fault=None, attempts=0)
        return attrs.evolve(self, fault=fault, attempts=self.attempts + 1)

    def suspicion(self) -> Suspicion | None:
        """What to say in the status instead of a generic cause; None when the evidence is short."""
        if self.reached_server or self.mixed or self.fault is None or self.attempts < self.threshold:
            return None
        cause, reason = _SUSPICIONS[self.fault]
        return Suspicion(cause, reason, self.attempts)


def _family(fault: DialFault) -> DialFault:
    """TLS failures count together: a plain server may answer garbage once and stay silent next."""
    return DialFault.TLS if fault in (DialFault.TLS, DialFault.TLS_SILENT) else fault


def _answered(ending: Ending) -> bool:
    return ending.kind in (EndingKind.REJECTED, EndingKind.CLOSED, EndingKind.SETUP_TIMEOUT,
                           EndingKind.STALL, EndingKind.LOCAL)


#: Connections in a row closed 1011 "Internal error" before any server content, at which the
#: setup itself is taken to be refused (GEMINI_LIVE_2026.md §6: TEXT on 3.1 is refused so).
INTERNAL_BEFORE_CONTENT_LIMIT = 3


@attrs.frozen
class SetupHistory:
    """Evidence that the server refuses the *setup* while saying "Internal error".

    The service reports some configuration errors (a response modality the model does not
    support, on 3.1) as a 1011 "Internal error encountered" close right after the setup, before
    any content, on every attempt. One such close is an ordinary server error; the same close
    :data:`INTERNAL_BEFORE_CONTENT_LIMIT` times in a row, with not a frame of content on any of
    those connections, is a configuration error, and retrying it for minutes helps no one. A
    real outage that looks like this recovers on the next session open. Pure and immutable.

    Once any connection of the session has had content, the setup is proven acceptable: a run of
    1011s after that is an outage, never a configuration error (the loaded chaos soak failed a
    session that had answered 50 turns when three resumes in a row were cut with 1011).
    """

    limit: int = INTERNAL_BEFORE_CONTENT_LIMIT
    #: How many endings in a row were 1011 "internal" with no server content.
    internal_before_content: int = 0
    #: A connection of this session had server content: the server takes the setup.
    proven: bool = False

    def after(self, ending: Ending, *, content_seen: bool) -> SetupHistory:
        internal = (
            ending.kind is EndingKind.CLOSED and ending.code == 1011 and "internal" in ending.reason.lower()
        )
        if internal and not content_seen:
            return attrs.evolve(self, internal_before_content=self.internal_before_content + 1)
        return SetupHistory(self.limit, proven=self.proven or content_seen)

    def refused(self) -> str | None:
        """The failure reason once the evidence suffices, else None."""
        if self.proven or self.internal_before_content < self.limit:
            return None
        return (
            f"invalid config?: the server closed 1011 'Internal error' before any content on "
            f"{self.internal_before_content} attempts in a row; it reports a setup it refuses this "
            "way (e.g. a response modality the model does not support: the 3.x Live models answer "
            "AUDIO only, with outputAudioTranscription for text)"
        )
