"""A wrong endpoint (no such host, nothing listening, wss:// against plain ws://) is told from an
outage by the dial history, and reported as such, while the session keeps retrying."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.upstream import (
    Action,
    Context,
    Dial,
    DialFault,
    DialHistory,
    Ended,
    Ending,
    EndingKind,
    Endpoint,
    FixedKey,
    classify,
    ending_from_exception,
    ending_from_group,
    open_link,
)
from geminid.protocol import live

SETUP = live.encode(live.setup("models/gemini-3.8-live"))
DNS = Ending(EndingKind.NETWORK, reason="gaierror", fault=DialFault.DNS)
REFUSED = Ending(EndingKind.NETWORK, reason="refused", fault=DialFault.REFUSED)
TLS = Ending(EndingKind.NETWORK, reason="ssl", fault=DialFault.TLS)
TLS_SILENT = Ending(EndingKind.CONNECT_TIMEOUT, reason="tls", fault=DialFault.TLS_SILENT)
TIMEOUT = Ending(EndingKind.CONNECT_TIMEOUT, reason="no answer")
REJECTED_503 = Ending(EndingKind.REJECTED, http_status=503)
CLOSED_1011 = Ending(EndingKind.CLOSED, code=1011, reason="internal")


def _history(*endings: Ending) -> DialHistory:
    h = DialHistory()
    for e in endings:
        h = h.after(e)
    return h


# --- the pure diagnosis -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "cause"),
    [(DNS, "endpoint_unresolved"), (REFUSED, "endpoint_refused"), (TLS, "endpoint_not_tls"),
     (TLS_SILENT, "endpoint_not_tls")],
)
def test_the_same_fault_on_every_attempt_from_the_start_is_suspected(ending, cause):
    assert _history(ending, ending).suspicion() is None  # two are not enough evidence
    found = _history(ending, ending, ending).suspicion()
    assert found is not None and found.cause == cause and found.attempts == 3
    assert "upstream.endpoint" in found.reason


def test_tls_failures_count_together():
    found = _history(TLS, TLS_SILENT, TLS_SILENT).suspicion()
    assert found is not None and found.cause == "endpoint_not_tls"


def test_an_endpoint_that_ever_answered_is_never_suspected():
    """A real outage: the service answered once (here a 503), then went away."""
    assert _history(REJECTED_503, REFUSED, REFUSED, REFUSED, REFUSED).suspicion() is None
    assert _history(CLOSED_1011, DNS, DNS, DNS).suspicion() is None


def test_mixed_evidence_raises_no_suspicion():
    assert _history(REFUSED, DNS, DNS, DNS).suspicion() is None
    assert _history(TIMEOUT, REFUSED, REFUSED, REFUSED).suspicion() is None


def test_a_suspected_endpoint_is_still_retried():
    """The diagnosis changes what the status says, never the classifier's decision."""
    for ending in (DNS, REFUSED, TLS, TLS_SILENT):
        assert classify(ending, Context(handle_sent=False)).action is Action.RESUME_AFTER_BACKOFF


_ENDINGS = st.sampled_from([DNS, REFUSED, TLS, TLS_SILENT, TIMEOUT, REJECTED_503, CLOSED_1011])


@given(st.lists(_ENDINGS, max_size=12))
def test_suspicion_means_one_fault_family_on_every_attempt(endings):
    found = _history(*endings).suspicion()
    families = {("tls" if e.fault in (DialFault.TLS, DialFault.TLS_SILENT) else e.fault) for e in endings}
    expected = len(endings) >= 3 and len(families) == 1 and None not in families
    assert (found is not None) is expected


# --- exceptions -> faults -----------------------------------------------------------------------


def test_dns_failure_is_its_own_fault():
    exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    ending = ending_from_exception(exc, stage="connect")
    assert ending is not None and ending.kind is EndingKind.NETWORK and ending.fault is DialFault.DNS


def test_refused_on_every_address_is_its_own_fault():
    """trio raises a plain OSError "all attempts ... failed" from a group of the real errors."""
    group = ExceptionGroup("all", [ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "x")])
    exc = OSError("all attempts to connect to h:1 failed")
    exc.__cause__ = group
    assert ending_from_exception(exc, stage="connect").fault is DialFault.REFUSED
    assert ending_from_exception(ConnectionRefusedError(111, "r"), stage="connect").fault is DialFault.REFUSED
    exc.__cause__ = ExceptionGroup("all", [ConnectionRefusedError(111, "r"), TimeoutError()])
    assert ending_from_exception(exc, stage="connect").fault is None


def test_ssl_errors_are_tls_faults_and_a_tls_timeout_says_so():
    assert ending_from_exception(ssl.SSLError(1, "WRONG_VERSION_NUMBER"), stage="tls").fault is DialFault.TLS
    wrapped = trio.BrokenResourceError()
    wrapped.__cause__ = ssl.SSLError(1, "WRONG_VERSION_NUMBER")
    assert ending_from_exception(wrapped, stage="tls").fault is DialFault.TLS
    silent = ending_from_exception(trio.TooSlowError(), stage="tls")
    assert silent.kind is EndingKind.CONNECT_TIMEOUT and silent.fault is DialFault.TLS_SILENT
    assert "TLS" in silent.reason
    assert ending_from_exception(trio.TooSlowError(), stage="connect").fault is None


# --- real loopback dials ------------------------------------------------------------------------


async def _dial(url: str, *, connect_timeout: float = 5.0) -> Ending:
    dial = Dial(Endpoint.parse(url), FixedKey("k"), connect_timeout, 5, 1 << 20)
    try:
        async with trio.open_nursery() as nursery:
            link, _ = await open_link(nursery, dial, SETUP)
            await link.close()
    except Ended as exc:
        return exc.ending
    except BaseExceptionGroup as group:
        found = ending_from_group(group, stage="connect")
        assert found is not None, group
        return found
    raise AssertionError("the dial should have failed")


async def test_wss_against_a_plain_server_is_a_tls_fault(nursery):
    fake = await nursery.start(FakeUpstream(FakeOptions(reply_pace=0.001)).serve)
    url = fake.url().replace("ws://", "wss://", 1)
    history = DialHistory()
    for _ in range(3):
        ending = await _dial(url, connect_timeout=1.0)
        assert ending.fault in (DialFault.TLS, DialFault.TLS_SILENT), ending
        history = history.after(ending)
    found = history.suspicion()
    assert found is not None and found.cause == "endpoint_not_tls"


async def test_nothing_listening_is_a_refused_fault():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ending = await _dial(f"ws://127.0.0.1:{port}/ws")
    assert ending.kind is EndingKind.NETWORK and ending.fault is DialFault.REFUSED
