"""Close classification: how a connection ended -> what the session does next.

A pure function of (how it ended, what we knew at the time), following the close-code table in
shared/GEMINI_LIVE.md §6. It decides only the *kind* of next step; how long to wait, and when
to give up, is :mod:`.backoff`'s job, so that both stay small and testable.

Reasons are matched case-insensitively as substrings, because the real service prefixes them
with "Request trace id ..." and cuts them at 123 bytes (a reason cut before its keyword falls
through to the code's default, which is always a bounded retry, never a hot loop or a resume
with a handle the server called unknown).

Decisions beyond the table, and why:

* A 1008 whose reason says "not found" is checked *first*: a stale handle must never be
  resumed again, whatever else the reason says. "not found" together with "model" is the
  fatal model-not-found case; any other "not found" is treated as a stale handle.
* A 1011 "deadline expired/exceeded" is a transient server error, not quota, even though
  "exceeded" is a quota keyword.
* A 1006 (or a network error) after a goAway was announced is the planned end of the
  connection: resume at once ("Treating a normal 1000 at the lifetime cap as a failure burns
  the retry budget", §7). The backoff's quick-failure guard still applies.
* Codes the table does not list (1001, 1002, 1009, 1012, 1013, 4xxx...), 1008 reasons it does
  not list, and HTTP statuses other than 400/401/403/404/429/5xx are retried with backoff:
  the retry budget bounds them, and being fatal on a reason we do not understand would turn a
  transient oddity into an outage. If the failing attempt carried a handle, the backoff's
  failed-resume counter drops the handle after a few tries (§6 1011 row).
* A 401 at the upgrade is fatal (``bad_key``) unless the context says the credential can be
  refreshed and was not refreshed yet: then it is one immediate retry with a fresh credential
  (``credential_refresh``); an API key is never refreshable, so its 401 stays fatal.
* FRESH_SESSION when no handle was sent simply means "connect fresh" (there was nothing to
  drop).
"""

from __future__ import annotations

import enum

import attrs

from .ending import Ending, EndingKind


class Action(enum.Enum):
    """What the session does next."""

    #: Reconnect at once, resuming with the newest handle (not a failure).
    RESUME_NOW = "resume_now"
    #: Wait a jittered, growing delay, then resume with the handle.
    RESUME_AFTER_BACKOFF = "resume_after_backoff"
    #: Drop the handle and start a fresh session (the context is lost: tell the clients).
    FRESH_SESSION = "fresh_session"
    #: Quota or billing: wait minutes, never hot-loop.
    LONG_BACKOFF = "long_backoff"
    #: Configuration error that retrying cannot fix: the session goes to ``failed``.
    FATAL = "fatal"


@attrs.frozen
class Context:
    #: The setup of the ended attempt carried a resumption handle.
    handle_sent: bool
    #: A goAway arrived on this connection before it ended.
    goaway_seen: bool = False
    #: setupComplete arrived on this connection.
    reached_live: bool = False
    #: The dial's credential can be fetched anew (a token, not a key: ``Credentials.refreshable``)
    #: and has not been refreshed after a refusal yet in this incident. The caller sets it.
    credential_refreshable: bool = False


@attrs.frozen
class Verdict:
    action: Action
    #: Short slug for logs, metrics and the session.status notification.
    cause: str


# Keywords, lower case. Order of checks matters; see classify().
_QUOTA_WORDS = ("resource_exhausted", "resource exhausted", "quota", "billing")
_DEADLINE_WORDS = ("deadline expired", "deadline exceeded", "deadline_exceeded")
_STALE_HANDLE_WORDS = ("not found",)
_GOAWAY_WORDS = ("goaway", "go away", "go_away")
_PERMISSION_WORDS = ("permission denied", "permission_denied", "permission")
_NOT_IMPLEMENTED_WORDS = ("not implemented", "not supported", "not enabled")
_API_KEY_WORDS = ("api key", "api_key", "apikey")


def _has(reason: str, words: tuple[str, ...]) -> bool:
    return any(w in reason for w in words)


def classify(ending: Ending, ctx: Context) -> Verdict:
    """Map an ending to the next action (GEMINI_LIVE.md §6). Pure; never raises."""
    kind = ending.kind
    if kind is EndingKind.LOCAL:
        reason = ending.reason.lower()
        return Verdict(Action.RESUME_NOW, "shutdown" if "shutdown" in reason else "rotation")
    if kind is EndingKind.NETWORK:
        if ctx.goaway_seen:
            return Verdict(Action.RESUME_NOW, "lifetime")
        return Verdict(Action.RESUME_AFTER_BACKOFF, "network")
    if kind in (EndingKind.CONNECT_TIMEOUT, EndingKind.SETUP_TIMEOUT):
        return Verdict(Action.RESUME_AFTER_BACKOFF, "timeout")
    if kind is EndingKind.STALL:
        return Verdict(Action.RESUME_AFTER_BACKOFF, "stall")
    if kind is EndingKind.REJECTED:
        if ending.http_status == 401 and ctx.credential_refreshable:
            # An expired or revoked token: the next dial presents a fresh one (once; a second
            # 401 is the fatal bad_key, because the caller clears credential_refreshable).
            return Verdict(Action.RESUME_NOW, "credential_refresh")
        return _classify_http(ending.http_status)
    return _classify_close(ending.code, ending.reason.lower(), ctx)


def _classify_http(status: int | None) -> Verdict:
    if status == 429:
        return Verdict(Action.LONG_BACKOFF, "quota")
    if status is not None and 500 <= status <= 599:
        return Verdict(Action.RESUME_AFTER_BACKOFF, "unavailable")
    if status == 400:
        return Verdict(Action.FATAL, "bad_request")
    if status in (401, 403):
        return Verdict(Action.FATAL, "bad_key")
    if status == 404:
        return Verdict(Action.FATAL, "not_found")
    # 408, 3xx, other 4xx, or no status at all: bounded retries.
    return Verdict(Action.RESUME_AFTER_BACKOFF, "rejected")


_TOOL_RESPONSE_WORDS = ("function response", "functionresponse", "function_response", "tool response")


def _classify_close(code: int | None, reason: str, ctx: Context) -> Verdict:
    if code is None or code == 1006:
        if ctx.goaway_seen:
            return Verdict(Action.RESUME_NOW, "lifetime")
        return Verdict(Action.RESUME_AFTER_BACKOFF, "network")
    if code == 1000:
        return Verdict(Action.RESUME_NOW, "lifetime")
    if code == 1007:
        if ctx.handle_sent and not ctx.reached_live:
            # The server refused the resume setup itself: the handle is the suspect.
            return Verdict(Action.FRESH_SESSION, "handle_rejected")
        if _has(reason, _API_KEY_WORDS):
            return Verdict(Action.FATAL, "bad_key")
        if _has(reason, _TOOL_RESPONSE_WORDS):
            # A tool response crossed the server's cancellation of its call (new input
            # interrupted the model while the client was answering). A race, not a bad config:
            # resume; the session drops the stale response and reports the call lost.
            return Verdict(Action.RESUME_AFTER_BACKOFF, "stale_tool_response")
        return Verdict(Action.FATAL, "invalid_config")
    if code == 1008:
        return _classify_1008(reason)
    if code == 1011:
        if _has(reason, _QUOTA_WORDS):
            return Verdict(Action.LONG_BACKOFF, "quota")
        if _has(reason, _DEADLINE_WORDS):
            return Verdict(Action.RESUME_AFTER_BACKOFF, "deadline")
        if "exceeded" in reason:
            return Verdict(Action.LONG_BACKOFF, "quota")
        if "unavailable" in reason:
            return Verdict(Action.RESUME_AFTER_BACKOFF, "unavailable")
        if "internal" in reason:
            return Verdict(Action.RESUME_AFTER_BACKOFF, "internal")
        if "keepalive" in reason:
            return Verdict(Action.RESUME_AFTER_BACKOFF, "keepalive")
        return Verdict(Action.RESUME_AFTER_BACKOFF, "server_error")
    if code in (1012, 1013):  # service restart / try again later
        return Verdict(Action.RESUME_AFTER_BACKOFF, "unavailable")
    return Verdict(Action.RESUME_AFTER_BACKOFF, "unknown_close")


def _classify_1008(reason: str) -> Verdict:
    if _has(reason, _STALE_HANDLE_WORDS):
        if "model" in reason:
            return Verdict(Action.FATAL, "model_not_found")
        return Verdict(Action.FRESH_SESSION, "stale_handle")
    if _has(reason, _GOAWAY_WORDS):
        return Verdict(Action.RESUME_NOW, "goaway_overdue")
    if _has(reason, _PERMISSION_WORDS):
        return Verdict(Action.FATAL, "permission_denied")
    if _has(reason, _NOT_IMPLEMENTED_WORDS):
        return Verdict(Action.FATAL, "not_implemented")
    return Verdict(Action.RESUME_AFTER_BACKOFF, "policy")


#: Causes for which classify() may return FATAL (tests assert nothing else is fatal).
FATAL_CAUSES = frozenset(
    {
        "bad_request",
        "bad_key",
        "not_found",
        "invalid_config",
        "model_not_found",
        "permission_denied",
        "not_implemented",
    }
)
