"""The Gemini Live message tree, as data: which fields each message has and what they hold.

Why a data file: validation must know the real field names (an unknown name is fatal on the real
service, close 1007), which fields are nested messages, which are repeated, enums, or free-form
protobuf ``Struct``/``Value`` payloads whose keys are user data. That knowledge lives in
``schemas/live_schema.json``, generated from google-genai's pydantic types by
``tests/tools/gen_live_schema.py`` (the SDK is a test dependency only; a drift test regenerates
and compares). This module loads it once, on first use, and indexes it; it does no I/O afterwards.

Field kinds in the file:
``message`` (``ref`` names the message), ``enum`` (``ref`` names the enum), ``string``, ``bool``,
``int`` (int32/int64: JSON number or decimal string), ``float``, ``bytes`` (base64 string),
``struct`` (any JSON object, copied verbatim), ``value`` (any JSON, copied verbatim) and ``map``
(JSON object with user keys; ``value`` describes the values). ``repeated`` marks JSON arrays.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import attrs

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


@functools.lru_cache(maxsize=1024)
def to_snake(name: str) -> str:
    """``generationConfig`` -> ``generation_config`` (the proto field name the server quotes)."""
    return _CAMEL_HUMP.sub(r"_\1", name).lower()


def to_camel(name: str) -> str:
    """``generation_config`` -> ``generationConfig`` (the proto3 JSON name)."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@attrs.frozen
class FieldSpec:
    """One field of a message: its canonical (camelCase) JSON name and what it holds."""

    name: str
    kind: str
    ref: str = ""
    repeated: bool = False
    map_value: FieldSpec | None = None

    @property
    def proto_name(self) -> str:
        """The snake_case name the real server uses in its error reasons."""
        return to_snake(self.name) if not self.name.startswith("$") else self.name


@attrs.frozen
class MessageSpec:
    """A message type: ``fields`` by canonical name, ``lookup`` by every accepted JSON name."""

    name: str
    fields: dict[str, FieldSpec]
    lookup: dict[str, FieldSpec]

    def field(self, json_name: str) -> FieldSpec | None:
        return self.lookup.get(json_name)


def _field(name: str, spec: dict[str, Any]) -> FieldSpec:
    value = spec.get("value")
    return FieldSpec(
        name=name,
        kind=spec["kind"],
        ref=spec.get("ref", ""),
        repeated=bool(spec.get("repeated", False)),
        map_value=_field(name, value) if value else None,
    )


def _load() -> tuple[dict[str, MessageSpec], dict[str, frozenset[str]], str, str, str]:
    from importlib import resources  # on first use: it imports tempfile (~8 ms of start-up)

    text = resources.files(__package__).joinpath("schemas/live_schema.json").read_text("utf-8")
    doc = json.loads(text)
    messages: dict[str, MessageSpec] = {}
    for mname, mfields in doc["messages"].items():
        fields: dict[str, FieldSpec] = {}
        lookup: dict[str, FieldSpec] = {}
        for fname, fspec in mfields.items():
            f = _field(fname, fspec)
            fields[fname] = f
            # proto3 JSON parsing accepts the json_name (camel) and the proto field name (snake).
            lookup[fname] = f
            lookup.setdefault(to_snake(fname), f)
            for alias in fspec.get("aliases", ()):
                # A json_name option (``$ref``): it is its own canonical spelling.
                lookup[alias] = attrs.evolve(f, name=alias)
        messages[mname] = MessageSpec(name=mname, fields=fields, lookup=lookup)
    enums = {name: frozenset(values) for name, values in doc["enums"].items()}
    return messages, enums, doc["client_root"], doc["server_root"], doc["source"]


@functools.cache
def _schema() -> dict[str, Any]:
    """The file, loaded and indexed on first use (~8 ms): a daemon start with no session to
    restore never validates a message before READY=1, so it does not pay for it."""
    messages, enums, client_root, server_root, source = _load()
    return {
        "MESSAGES": messages,
        "ENUMS": enums,
        "CLIENT_ROOT": client_root,
        "SERVER_ROOT": server_root,
        "SOURCE": source,
        # Enum names compared case-insensitively: the SDK's enums are case-insensitive and users
        # write ``"type": "string"`` in function schemas; an unknown name is still refused.
        "ENUMS_FOLDED": {name: frozenset(v.upper() for v in values) for name, values in enums.items()},
    }


def __getattr__(name: str) -> Any:
    """``MESSAGES``, ``ENUMS``, ``ENUMS_FOLDED``, ``CLIENT_ROOT``, ``SERVER_ROOT``, ``SOURCE``."""
    try:
        return _schema()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# proto ``oneof`` groups that the pydantic types do not record: (message) -> (oneof name, members).
# The real server refuses a second member with "Oneof field '<name>' is already set".
ONEOFS: dict[str, tuple[str, frozenset[str]]] = {
    "Part": (
        "data",
        frozenset(
            {
                "text",
                "inlineData",
                "functionCall",
                "functionResponse",
                "fileData",
                "executableCode",
                "codeExecutionResult",
            }
        ),
    ),
    "FunctionResponsePart": ("data", frozenset({"inlineData", "fileData"})),
}


def message(name: str) -> MessageSpec:
    """The spec of message ``name``; KeyError for a name not in the schema (a bug, not input)."""
    messages: dict[str, MessageSpec] = _schema()["MESSAGES"]
    return messages[name]


def enum_accepts(enum_name: str, value: str) -> bool:
    """Whether ``value`` is a known name of the enum (case-insensitively)."""
    folded: dict[str, frozenset[str]] = _schema()["ENUMS_FOLDED"]
    values = folded.get(enum_name)
    return values is None or value.upper() in values
