"""geminid.daemon.logsetup: JSON lines, runtime level, redaction by value and by key name."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import structlog

from geminid.daemon import logsetup

SECRET = "AIzaSECRETvalue0123456789"
HANDLE = "CiQ5handle-abcdef0123456789"
DIGEST = re.compile(r"<redacted:[0-9a-f]{8}>")


@pytest.fixture
def out():
    logsetup.clear_secrets()
    structlog.contextvars.clear_contextvars()
    buf = io.StringIO()
    logsetup.configure_logging("debug", "json", stream=buf)
    yield buf
    structlog.contextvars.clear_contextvars()
    logsetup.clear_secrets()
    logsetup.configure_logging("info", "json", stream=io.StringIO())


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_line_fields(out):
    log = structlog.get_logger("t")
    structlog.contextvars.bind_contextvars(session="kitchen", attempt=2)
    log.info("session.transition", to="live")
    (rec,) = lines(out)
    assert rec["event"] == "session.transition" and rec["level"] == "info"
    assert rec["session"] == "kitchen" and rec["attempt"] == 2 and rec["to"] == "live"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", rec["timestamp"])


def test_level_changes_at_runtime_for_cached_loggers(out):
    log = structlog.get_logger("cached")
    log.debug("one")  # first use caches the bound logger
    logsetup.set_level("warning")
    log.debug("two")
    log.info("three")
    log.warning("four")
    logsetup.set_level("debug")
    log.debug("five")
    assert [r["event"] for r in lines(out)] == ["one", "four", "five"]
    assert logsetup.get_level() == "debug"
    with pytest.raises(ValueError):
        logsetup.set_level("loud")


def test_reconfigure_moves_cached_loggers_to_new_stream(out):
    log = structlog.get_logger("moving")
    log.info("first")
    other = io.StringIO()
    logsetup.configure_logging("info", "json", stream=other)
    log.info("second")
    assert [r["event"] for r in lines(out)] == ["first"]
    assert [r["event"] for r in lines(other)] == ["second"]


def test_redaction_by_value_everywhere(out):
    logsetup.register_secret(SECRET, pin=True)
    logsetup.register_secret(HANDLE)
    log = structlog.get_logger("r")
    log.info(
        f"evt {SECRET}",
        url=f"wss://host/?k={SECRET}",
        nested={"a": [f"x{HANDLE}y", {"b": (SECRET,)}]},
        obj=ValueError(f"bad {SECRET}"),
        n=3,
    )
    raw = out.getvalue()
    assert SECRET not in raw and HANDLE not in raw
    (rec,) = lines(out)
    assert DIGEST.search(rec["url"]) and rec["n"] == 3
    assert rec["nested"]["a"][0].startswith("x<redacted:") and rec["nested"]["a"][0].endswith(">y")
    # same value, same digest: lines can be correlated
    assert DIGEST.findall(rec["event"]) == DIGEST.findall(rec["url"])


def test_redaction_by_key_name(out):
    log = structlog.get_logger("k")
    log.info(
        "x",
        api_key="unregistered-but-secret",
        newHandle="h1",
        headers={"x-goog-api-key": "abc", "Authorization": "Bearer z", "accept": "json"},
        handle=None,
        token=12345,
    )
    (rec,) = lines(out)
    assert DIGEST.fullmatch(rec["api_key"]) and DIGEST.fullmatch(rec["newHandle"])
    assert DIGEST.fullmatch(rec["headers"]["x-goog-api-key"])
    assert DIGEST.fullmatch(rec["headers"]["Authorization"])
    assert rec["headers"]["accept"] == "json"
    assert rec["handle"] is None and DIGEST.fullmatch(rec["token"])
    assert "unregistered-but-secret" not in out.getvalue()


def test_exception_rendered_once_structured_and_redacted(out):
    logsetup.register_secret(SECRET, pin=True)
    log = structlog.get_logger("e")
    api_key = SECRET  # a local: must not appear (no locals in tracebacks)
    try:
        raise RuntimeError(f"upstream refused key {api_key}")
    except RuntimeError:
        log.exception("actor.crashed", actor="session")
    raw = out.getvalue()
    assert SECRET not in raw
    assert len(raw.splitlines()) == 1
    (rec,) = lines(out)
    assert "exc_info" not in rec
    (exc,) = rec["exception"]
    assert exc["exc_type"] == "RuntimeError" and DIGEST.search(exc["exc_value"])
    assert exc["frames"] and "locals" not in exc["frames"][0] or not exc["frames"][0].get("locals")


def test_console_format_is_redacted_too():
    logsetup.clear_secrets()
    logsetup.register_secret(SECRET, pin=True)
    buf = io.StringIO()
    logsetup.configure_logging("info", "console", stream=buf)
    log = structlog.get_logger("c")
    try:
        raise ValueError(SECRET)
    except ValueError:
        log.exception("boom", detail=SECRET)
    text = buf.getvalue()
    assert "boom" in text and "ValueError" in text and SECRET not in text
    logsetup.clear_secrets()
    logsetup.configure_logging("info", "json", stream=io.StringIO())


def test_registry_is_bounded_and_forgettable(out):
    logsetup.register_secret(SECRET, pin=True)
    handles = [f"handle-{i:04d}-xxxxxxxx" for i in range(logsetup.MAX_SECRETS + 5)]
    for h in handles:
        logsetup.register_secret(h)
    assert handles[0] in logsetup.redact_text(handles[0])  # evicted (oldest)
    assert handles[-1] not in logsetup.redact_text(handles[-1])
    assert SECRET not in logsetup.redact_text(SECRET)  # pinned survives
    logsetup.forget_secret(handles[-1])
    assert logsetup.redact_text(handles[-1]) == handles[-1]
    logsetup.register_secret("short")  # too short: ignored
    assert logsetup.redact_text("a short text") == "a short text"


def test_redact_text_digest():
    logsetup.clear_secrets()
    logsetup.register_secret(SECRET)
    import hashlib

    digest = hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert logsetup.redact_text(f"[{SECRET}]") == f"[<redacted:{digest}>]"
    logsetup.clear_secrets()


def test_stdlib_records_are_forwarded_and_redacted(out):
    logsetup.register_secret(SECRET, pin=True)
    logging.getLogger("trio-websocket").warning("closing %s", SECRET)
    logging.getLogger("trio-websocket").info("not shown")
    (rec,) = [r for r in lines(out) if r.get("logger") == "trio-websocket"]
    assert rec["event"] == "lib.trio-websocket" and rec["level"] == "warning"
    assert SECRET not in rec["message"] and DIGEST.search(rec["message"])


def test_broken_stream_does_not_raise(out):
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError

    logsetup.configure_logging("info", "json", stream=Broken())
    structlog.get_logger("b").info("dropped")
