"""Close classification: the GEMINI_LIVE.md §6 table, row by row, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.upstream import (
    FATAL_CAUSES,
    Action,
    Context,
    Ending,
    EndingKind,
    Verdict,
    classify,
)

A = Action
NO_HANDLE = Context(handle_sent=False)
RESUMING = Context(handle_sent=True)
RESUME_SETUP_REJECTED = Context(handle_sent=True, reached_live=False)
LIVE_RESUMED = Context(handle_sent=True, reached_live=True)
TRACE = "Request trace id: 4f2a9c0e1d7b3a55, "


def closed(code: int | None, reason: str = "") -> Ending:
    return Ending(EndingKind.CLOSED, code=code, reason=reason)


TABLE = [
    # (ending, context, action, cause)
    (closed(1000, "The operation was cancelled."), LIVE_RESUMED, A.RESUME_NOW, "lifetime"),
    (closed(1000), NO_HANDLE, A.RESUME_NOW, "lifetime"),
    (closed(1006), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "network"),
    (closed(None), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "network"),
    (closed(1006), Context(True, goaway_seen=True, reached_live=True), A.RESUME_NOW, "lifetime"),
    (closed(1007, "Invalid JSON payload received. Unknown name \"foo\""), LIVE_RESUMED, A.FATAL, "invalid_config"),
    (closed(1007, "User location is not supported for the API use."), NO_HANDLE, A.FATAL, "invalid_config"),
    (closed(1007, "API key expired. Please renew the API key."), NO_HANDLE, A.FATAL, "bad_key"),
    (closed(1007, "Request contains an invalid argument."), RESUME_SETUP_REJECTED, A.FRESH_SESSION, "handle_rejected"),
    (closed(1008, "Requested entity was not found."), RESUMING, A.FRESH_SESSION, "stale_handle"),
    (closed(1008, "BidiGenerateContent session not found"), RESUMING, A.FRESH_SESSION, "stale_handle"),
    (closed(1008, "client failed to close the connection after receiving a GoAway"), LIVE_RESUMED, A.RESUME_NOW, "goaway_overdue"),
    (closed(1008, "models/gemini-9-live is not found for API version v1beta, or is not supported for bidiGenerateContent"), NO_HANDLE, A.FATAL, "model_not_found"),
    (closed(1008, "Permission denied on resource project x."), NO_HANDLE, A.FATAL, "permission_denied"),
    (closed(1008, "Operation is not implemented, or supported, or enabled."), NO_HANDLE, A.FATAL, "not_implemented"),
    (closed(1008, "Some policy we have never seen"), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "policy"),
    (closed(1011, "The service is currently unavailable."), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "unavailable"),
    (closed(1011, "Internal error encountered."), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "internal"),
    (closed(1011, "Deadline expired before operation could complete."), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "deadline"),
    (closed(1011, "DEADLINE_EXCEEDED"), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "deadline"),
    (closed(1011, "keepalive ping timeout"), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "keepalive"),
    (closed(1011, "RESOURCE_EXHAUSTED: Maximum concurrent sessions"), NO_HANDLE, A.LONG_BACKOFF, "quota"),
    (closed(1011, "You exceeded your current quota"), NO_HANDLE, A.LONG_BACKOFF, "quota"),
    (closed(1011, "Rate limit exceeded"), NO_HANDLE, A.LONG_BACKOFF, "quota"),
    (closed(1011, "Billing account disabled"), NO_HANDLE, A.LONG_BACKOFF, "quota"),
    (closed(1011, ""), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "server_error"),
    (closed(1001), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unknown_close"),
    (closed(1009), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unknown_close"),
    (closed(1013), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unavailable"),
    (closed(4000), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unknown_close"),
    (Ending(EndingKind.REJECTED, http_status=429), NO_HANDLE, A.LONG_BACKOFF, "quota"),
    (Ending(EndingKind.REJECTED, http_status=500), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unavailable"),
    (Ending(EndingKind.REJECTED, http_status=503), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "unavailable"),
    (Ending(EndingKind.REJECTED, http_status=400), NO_HANDLE, A.FATAL, "bad_request"),
    (Ending(EndingKind.REJECTED, http_status=401), NO_HANDLE, A.FATAL, "bad_key"),
    (Ending(EndingKind.REJECTED, http_status=403), NO_HANDLE, A.FATAL, "bad_key"),
    (Ending(EndingKind.REJECTED, http_status=404), NO_HANDLE, A.FATAL, "not_found"),
    (Ending(EndingKind.REJECTED, http_status=408), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "rejected"),
    (Ending(EndingKind.REJECTED), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "rejected"),
    (Ending(EndingKind.CONNECT_TIMEOUT), RESUMING, A.RESUME_AFTER_BACKOFF, "timeout"),
    (Ending(EndingKind.SETUP_TIMEOUT), RESUMING, A.RESUME_AFTER_BACKOFF, "timeout"),
    (Ending(EndingKind.STALL), LIVE_RESUMED, A.RESUME_AFTER_BACKOFF, "stall"),
    (Ending(EndingKind.NETWORK, reason="Connection refused"), NO_HANDLE, A.RESUME_AFTER_BACKOFF, "network"),
    (Ending(EndingKind.LOCAL, reason="goAway rotation"), LIVE_RESUMED, A.RESUME_NOW, "rotation"),
    (Ending(EndingKind.LOCAL, reason="SIGTERM shutdown"), LIVE_RESUMED, A.RESUME_NOW, "shutdown"),
]


@pytest.mark.parametrize(("ending", "ctx", "action", "cause"), TABLE)
def test_table(ending: Ending, ctx: Context, action: Action, cause: str) -> None:
    assert classify(ending, ctx) == Verdict(action, cause)


@pytest.mark.parametrize(("ending", "ctx", "action", "cause"), TABLE)
def test_trace_prefix_and_case_do_not_matter(
    ending: Ending, ctx: Context, action: Action, cause: str
) -> None:
    for reason in (TRACE + ending.reason, ending.reason.upper(), ending.reason.lower()):
        assert classify(Ending(ending.kind, ending.code, reason, ending.http_status), ctx) == Verdict(
            action, cause
        )


def test_1007_after_live_with_handle_is_fatal() -> None:
    # §7: a setup can be accepted and the config still fatal at the first content frame.
    assert classify(closed(1007, "Unknown name"), LIVE_RESUMED).action is A.FATAL


contexts = st.builds(Context, st.booleans(), st.booleans(), st.booleans())
reasons = st.text(max_size=80)
cases = st.sampled_from(["", "lower", "upper", "title"])


def _case(s: str, how: str) -> str:
    return {"": s, "lower": s.lower(), "upper": s.upper(), "title": s.title()}[how]


@given(
    prefix=reasons,
    suffix=reasons,
    how=cases,
    ctx=contexts,
    core=st.sampled_from(
        ["Requested entity was not found.", "session not found", "not found", "NOT FOUND"]
    ),
)
def test_1008_not_found_never_resumes(prefix: str, suffix: str, how: str, ctx: Context, core: str) -> None:
    reason = (prefix + _case(core, how) + suffix)[:123 + len(prefix)]
    verdict = classify(closed(1008, reason), ctx)
    assert verdict.action in (A.FRESH_SESSION, A.FATAL)


@given(
    kind=st.sampled_from(EndingKind),
    code=st.one_of(st.none(), st.integers(0, 5000), st.sampled_from([1000, 1006, 1007, 1008, 1011])),
    reason=reasons,
    status=st.one_of(st.none(), st.integers(100, 599)),
    ctx=contexts,
)
def test_fatal_only_for_listed_causes(
    kind: EndingKind, code: int | None, reason: str, status: int | None, ctx: Context
) -> None:
    verdict = classify(Ending(kind, code, reason, status), ctx)
    assert isinstance(verdict.cause, str) and verdict.cause
    if verdict.action is A.FATAL:
        assert verdict.cause in FATAL_CAUSES
        assert (kind, code) in {(EndingKind.CLOSED, 1007), (EndingKind.CLOSED, 1008)} or (
            kind is EndingKind.REJECTED and status in (400, 401, 403, 404)
        )
    # Transient kinds are never fatal, whatever the reason says.
    if kind in (
        EndingKind.NETWORK,
        EndingKind.CONNECT_TIMEOUT,
        EndingKind.SETUP_TIMEOUT,
        EndingKind.STALL,
        EndingKind.LOCAL,
    ):
        assert verdict.action in (A.RESUME_NOW, A.RESUME_AFTER_BACKOFF)


@given(
    ending_i=st.integers(0, len(TABLE) - 1),
    prefix=st.text(max_size=60),
    how=cases,
)
def test_classification_ignores_case_and_prefix(ending_i: int, prefix: str, how: str) -> None:
    ending, ctx, action, cause = TABLE[ending_i]
    # A prefix that itself contains a keyword could legitimately change the verdict; the real
    # prefix is "Request trace id ...", so draw prefixes made of id-like characters.
    prefix = "".join(c for c in prefix if c.isalnum() and c.isascii()).lower()
    prefix = "".join(c for c in prefix if c in "0123456789abcdef")
    reason = _case(f"Request trace id: {prefix}, " + ending.reason, how)
    assert classify(Ending(ending.kind, ending.code, reason, ending.http_status), ctx) == Verdict(action, cause)


@given(ctx=contexts, reason=reasons)
def test_1000_is_never_a_failure(ctx: Context, reason: str) -> None:
    assert classify(closed(1000, reason), ctx).action is A.RESUME_NOW


@given(ctx=contexts, reason=reasons)
def test_1007_fresh_only_after_a_rejected_resume_setup(ctx: Context, reason: str) -> None:
    action = classify(closed(1007, reason), ctx).action
    words = reason.lower()
    stale_tool_response = not any(w in words for w in ("api key", "api_key", "apikey")) and any(
        w in words for w in ("function response", "functionresponse", "function_response", "tool response")
    )
    if ctx.handle_sent and not ctx.reached_live:
        assert action is A.FRESH_SESSION
    elif stale_tool_response:
        # The tool-response race (test_a_stale_tool_response_is_a_race_not_a_bad_config) is the
        # one 1007 that is not fatal; hypothesis can spell its words by chance.
        assert action is A.RESUME_AFTER_BACKOFF
    else:
        assert action is A.FATAL


def test_a_stale_tool_response_is_a_race_not_a_bad_config() -> None:
    reason = "Request contains an invalid argument. Function response id 'fc_1' matches no pending call."
    v = classify(Ending(EndingKind.CLOSED, code=1007, reason=reason), Context(handle_sent=True, reached_live=True))
    assert v.action is Action.RESUME_AFTER_BACKOFF and v.cause == "stale_tool_response"
    # Any other 1007 after live stays fatal.
    v = classify(Ending(EndingKind.CLOSED, code=1007, reason='Unknown name "x"'), Context(handle_sent=True, reached_live=True))
    assert v.action is Action.FATAL
