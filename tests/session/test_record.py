"""The checkpoint record schema on its own: no actor, no store, no trio."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.session.record import PendingMessage, SessionRecord, fingerprint
from geminid.protocol import live

SETUP = live.setup("gemini-3.8-live", response_modalities=["AUDIO"])["setup"]
KEYS = ["version", "session", "setup", "fingerprint", "handle", "handle_issued_at", "last_alive_at",
        "created_at", "seq_reserved", "event_reserved", "pending", "pending_tools", "lost_tools",
        "transcript", "reconnects", "context_lost", "failed", "ids", "event_last", "clean"]

texts = st.text(alphabet="abcxyz \u00e9", min_size=1, max_size=8)
records = st.builds(
    SessionRecord,
    session=st.just("s"),
    setup=st.just(SETUP),
    handle=st.none() | texts,
    handle_issued_at=st.none() | st.floats(1.0, 2e9),
    last_alive_at=st.floats(0.0, 2e9),
    created_at=st.none() | st.floats(1.0, 2e9),
    seq_reserved=st.integers(0, 2**40),
    event_reserved=st.integers(0, 2**40),
    pending=st.lists(st.builds(lambda seq, t: PendingMessage(seq, live.client_content(t)), st.integers(1, 99), texts),
                     max_size=3).map(tuple),
    pending_tools=st.lists(texts, max_size=3).map(tuple),
    lost_tools=st.lists(texts, max_size=3).map(tuple),
    transcript=st.lists(st.builds(lambda r, t: {"role": r, "text": t}, st.sampled_from(["user", "model"]), texts),
                        max_size=3).map(tuple),
    reconnects=st.integers(0, 99),
    context_lost=st.none() | texts,
    failed=st.none() | texts,
    ids=st.lists(st.tuples(texts, st.integers(1, 2**40)), max_size=3).map(tuple),
    event_last=st.integers(0, 2**40),
    clean=st.booleans(),
)


@given(records)
def test_a_record_survives_its_dict(record):
    d = record.to_dict()
    assert list(d) == KEYS
    assert d["fingerprint"] == fingerprint(SETUP)
    assert SessionRecord.from_dict(d) == record


def test_missing_fields_take_their_defaults():
    r = SessionRecord.from_dict({"setup": SETUP}, name="n")
    assert (r.session, r.handle, r.seq_reserved, r.pending, r.last_alive_at) == ("n", None, 0, (), 0.0)


@pytest.mark.parametrize(
    "field, value, words",
    [("setup", None, "setup"), ("seq_reserved", "x", "'seq_reserved' is a str"), ("handle", 7, "'handle' is a int"),
     ("last_alive_at", True, "'last_alive_at' is a bool"), ("pending", [{"seq": "1", "message": {}}], "int seq"),
     ("transcript", [{"role": "user"}], "role and a text"), ("pending_tools", [1], "not a str")],
)
def test_a_wrong_field_is_named(field, value, words):
    with pytest.raises(TypeError, match=words):
        SessionRecord.from_dict({"setup": SETUP, field: value})


def test_a_pending_message_that_no_longer_validates_is_refused():
    with pytest.raises(live.LiveValidationError):
        SessionRecord.from_dict({"setup": SETUP, "pending": [{"seq": 1, "message": {"bogus": {}}}]})


def test_pending_bytes_is_the_encoded_size():
    msg = live.client_content("hello")
    assert SessionRecord("s", SETUP, pending=(PendingMessage(1, msg),)).pending_bytes() == len(live.encode(msg))
