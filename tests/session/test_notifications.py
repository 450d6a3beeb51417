"""The notification catalogue (geminid.protocol.notifications) against PROTOCOL.md's table and
schemas/local_rpc.json: one schema per method, every field documented in both, and what the
classes produce validates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest
from jsonschema import Draft202012Validator

from geminid.protocol import notifications as N

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
SCHEMA = json.loads((PROTOCOL / "schemas" / "local_rpc.json").read_text())
#: Fields the event hub adds to every notification's params (``session.lagged``: no seq).
ENVELOPE = {"session", "seq"}


def table() -> dict[str, set[str]]:
    """PROTOCOL.md's notification table: method -> the fields of its ``{...}`` params."""
    text = (PROTOCOL / "PROTOCOL.md").read_text()
    section = text.split("## Notifications (daemon → client)", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for method, params in re.findall(r"^\| `([a-z_.]+)` \| `\{([^}]*)\}`", section, re.M):
        rows[method] = {f.strip().rstrip("?") for f in params.split(",")}
    return rows


def fields(cls: type) -> set[str]:
    return {f.name for f in attrs.fields(cls)}


def test_every_documented_notification_is_in_the_catalogue_and_back():
    documented = table()
    assert set(documented) == set(N.CATALOGUE)
    schemas = {k.removesuffix(".params") for k in SCHEMA["$defs"] if k.startswith("session.") and k.endswith(".params")}
    assert set(N.CATALOGUE) <= schemas


@pytest.mark.parametrize("method", sorted(N.CATALOGUE))
def test_fields_agree_with_the_table_and_the_schema(method):
    cls = N.CATALOGUE[method]
    envelope = {"session"} if method == "session.lagged" else ENVELOPE
    assert table()[method] == fields(cls) | envelope
    schema = SCHEMA["$defs"][f"{method}.params"]
    assert set(schema["properties"]) == fields(cls) | envelope
    required = {f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING}
    assert set(schema["required"]) <= required | envelope


SAMPLES = [
    N.SessionMessage({"serverContent": {"turnComplete": True}}),
    N.SessionStatus("live", "setup_complete", attempt=1, context=N.SessionContext.RESTORED, downtime_ms=12.5),
    N.SessionStatus("backoff", "server_error", attempt=2, retry_in=0.4, reason="1011 internal"),
    N.SessionStatus("draining", "goaway", time_left=20.0),
    N.SessionLagged(3, 9),
    N.SessionEnded(N.EndReason.TIMEOUT, "inactivity timeout (60 s without activity)"),
    N.SessionToolCallLost(["c1"]),
    N.SessionContextLost("prompt tokens fell", suspected=True),
]


@pytest.mark.parametrize("note", SAMPLES, ids=lambda n: n.METHOD)
def test_params_validate_against_the_schema(note):
    params = note.to_params()
    params["session"] = "kitchen"
    if note.METHOD != "session.lagged":
        params["seq"] = 7
    validator = Draft202012Validator({"$ref": f"#/$defs/{note.METHOD}.params", "$defs": SCHEMA["$defs"]})
    validator.validate(params)
    assert None not in params.values()  # optional fields are left out, never sent as null


def test_enums_travel_as_their_values():
    assert N.SessionEnded(N.EndReason.FATAL, "x").to_params() == {"reason": "fatal", "detail": "x"}
    assert N.SessionStatus("live", "c", context=N.SessionContext.LOST).to_params()["context"] == "lost"
