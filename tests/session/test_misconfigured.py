"""A wrong endpoint is told from an outage (issue #11 point 5): a real registry and session dial
a loopback port where nothing listens; after three refusals in a row from the start, the backoff
status says what is probably wrong, ``session.misconfigured`` is logged once, and the session
keeps retrying on its schedule (an outage that looks like this at first must recover)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from session_harness import open_core
from structlog.testing import capture_logs

from geminid.daemon.states import State


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Virtual time for the backoff waits, but a refused loopback connect is real I/O: jump only
    # once every task has been idle a little while, so that the clock cannot race the refusal.
    return trio.testing.MockClock(autojump_threshold=0.01)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there any more


async def test_a_closed_port_is_reported_as_a_wrong_endpoint_within_three_attempts(state_dir, clock):
    with capture_logs() as logs:
        async with open_core(state_dir, endpoint=f"ws://127.0.0.1:{closed_port()}/ws") as core:
            rec = await core.open()
            await rec.wait(lambda r: r.statuses().count("backoff") >= 5, timeout=3600, step=1.0)
            backoffs = [p for p in rec.of("session.status") if p["status"] == "backoff"]
            assert core.actor().state is not State.FAILED
            core.nursery.cancel_scope.cancel()
    assert [b["cause"] for b in backoffs[:5]] == ["network"] * 5
    assert not any(b["reason"].startswith("endpoint_") for b in backoffs[:2])  # one or two: a blip
    for status in backoffs[2:5]:
        assert status["reason"].startswith("endpoint_refused: every connection to the upstream host")
        assert "check upstream.endpoint" in status["reason"]
    assert [b["retry_in"] > 0 for b in backoffs[:5]] == [True] * 5  # still on the backoff schedule
    hints = [e for e in logs if e["event"] == "session.misconfigured"]
    assert len(hints) == 1 and hints[0]["log_level"] == "warning"
    assert hints[0]["cause"] == "endpoint_refused" and hints[0]["attempts"] == 3
    assert "failed" not in rec.statuses()
