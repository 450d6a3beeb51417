"""A session that goes ``failed`` says so at error level, as its own event (issue #11 point 13):
README's alert recipe filters ``level == "error"``."""

from __future__ import annotations

import trio
from session_harness import open_core
from structlog.testing import capture_logs

from geminid.daemon.fake import FakeOptions, text_catalogue


async def test_a_failed_session_logs_session_failed_at_error_level(state_dir):
    with capture_logs() as logs:
        async with open_core(state_dir, fake_options=FakeOptions(catalogue=text_catalogue(), api_key="right-key"), key="wrong-key") as core:
            rec = await core.open()
            await rec.wait(lambda r: "failed" in r.statuses())
            await trio.sleep(0.1)
            core.nursery.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "session.failed"]
    assert len(failed) == 1, [e["event"] for e in logs]
    assert failed[0]["log_level"] == "error"
    assert failed[0]["session"] == "s"
    assert failed[0]["reason"] and failed[0]["cause"]
    assert "wrong-key" not in repr(failed[0])
    # Nothing else about this session is logged at error level.
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["session.failed"]


async def test_a_healthy_session_logs_no_failure(state_dir):
    with capture_logs() as logs:
        async with open_core(state_dir) as core:
            rec = await core.open()
            await core.say("s", "hello")
            await rec.wait(lambda r: r.turn_ends() == 1)
            core.nursery.cancel_scope.cancel()
    assert not [e for e in logs if e["event"] == "session.failed"]
