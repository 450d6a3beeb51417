"""Generate protocol/schemas/live_schema.json from google-genai's pydantic types.

Run once (``.venv/bin/python tests/tools/gen_live_schema.py``) and commit the output;
tests/protocol/test_live_schema_drift.py regenerates it and compares, so a change in the SDK's
view of the wire shows up as a failing test rather than as a silent 1007 in production.

Why derive from the SDK at all: it is the only machine-readable copy of the BidiGenerateContent
message tree available offline. Its pydantic models mirror the protos field for field; the few
places where the SDK's *types* differ from the *wire* (union inputs the SDK transforms before
sending) are listed in ``OVERRIDES`` below, each with a reason. The runtime never imports the SDK.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import json
import re
import sys
import types as pytypes
import typing
from pathlib import Path
from typing import Any

import pydantic
from google.genai import _live_converters
from google.genai import types as T
from google.genai import version as sdk_version

OUT = Path(__file__).resolve().parents[2] / "protocol" / "schemas" / "live_schema.json"

# (message, snake field) -> wire type, for SDK fields whose Python type is a convenience union.
OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    # The SDK accepts str | Part | File | list[...] and always sends a Content.
    ("LiveClientSetup", "system_instruction"): {"kind": "message", "ref": "Content"},
    ("LiveClientContextUpdate", "system_instruction"): {"kind": "message", "ref": "Content"},
    # ToolListUnion (callables, MCP sessions, Tools) is always sent as repeated Tool.
    ("LiveClientSetup", "tools"): {"kind": "message", "ref": "Tool", "repeated": True},
    ("LiveClientContextUpdateTools", "tools"): {"kind": "message", "ref": "Tool", "repeated": True},
}

# JSON names that proto3 JSON accepts besides the lowerCamel one (json_name options).
EXTRA_JSON_NAMES: dict[tuple[str, str], str] = {
    ("Schema", "ref"): "$ref",
    ("Schema", "defs"): "$defs",
}


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class Generator:
    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.enums: dict[str, list[str]] = {}

    def classify(self, ann: Any, where: str) -> dict[str, Any]:
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is typing.Annotated:
            return self.classify(args[0], where)
        if origin in (typing.Union, pytypes.UnionType):
            non_null = [a for a in args if a is not type(None)]
            if len(non_null) == 1:
                return self.classify(non_null[0], where)
            raise SystemExit(f"unhandled union at {where}: {ann!r}; add an OVERRIDE")
        if origin is list:
            inner = self.classify(args[0], where)
            if inner.get("repeated"):
                raise SystemExit(f"nested list at {where}")
            return {**inner, "repeated": True}
        if origin is dict:
            key, value = args
            if value is Any:
                return {"kind": "struct"}  # google.protobuf.Struct: keys are user data
            if key is not str:
                raise SystemExit(f"non-string map key at {where}")
            inner = self.classify(value, where)
            return {"kind": "map", "value": inner}
        if origin is typing.Literal:
            name = "Literal_" + "_".join(str(a) for a in args)
            self.enums[name] = [str(a) for a in args]
            return {"kind": "enum", "ref": name}
        if ann is Any:
            return {"kind": "value"}  # google.protobuf.Value: any JSON
        if isinstance(ann, type):
            if issubclass(ann, enum.Enum):
                self.enums[ann.__name__] = [str(e.value) for e in ann]
                return {"kind": "enum", "ref": ann.__name__}
            if issubclass(ann, pydantic.BaseModel):
                self.walk(ann)
                return {"kind": "message", "ref": ann.__name__}
            if ann is bool:
                return {"kind": "bool"}
            if ann is int:
                return {"kind": "int"}
            if ann is float:
                return {"kind": "float"}
            if ann is bytes:
                return {"kind": "bytes"}
            if ann in (str, datetime.datetime):  # Timestamp and Duration are strings on the wire
                return {"kind": "string"}
        raise SystemExit(f"unhandled type at {where}: {ann!r}")

    def walk(self, cls: type[pydantic.BaseModel]) -> None:
        name = cls.__name__
        if name in self.messages:
            return
        fields: dict[str, Any] = {}
        self.messages[name] = fields  # registered first: Schema is recursive
        for snake, info in cls.model_fields.items():
            where = f"{name}.{snake}"
            spec = OVERRIDES.get((name, snake))
            if spec is None:
                spec = self.classify(info.annotation, where)
            else:
                if spec["kind"] == "message":
                    self.walk(getattr(T, spec["ref"]))
            spec = {"kind": spec["kind"], **{k: v for k, v in spec.items() if k != "kind"}}
            extra = EXTRA_JSON_NAMES.get((name, snake))
            if extra:
                spec["aliases"] = [extra]
            fields[camel(snake)] = spec

    def add_connect_config_paths(self) -> None:
        """Merge in the setup fields that only the LiveConnectConfig converters know about.

        ``LiveClientSetup`` lags behind the wire: e.g. ``realtimeInputConfig`` is sent by
        ``_LiveConnectConfig_to_mldev`` (as ``setup.realtimeInputConfig``) but is not a field
        of the pydantic ``LiveClientSetup``. The converters are generated code with a fixed
        shape, so their ``getv(['x']) ... setv(parent, ['setup', ..., 'Y'])`` pairs are read
        here; the type is the LiveConnectConfig field's.
        """
        src = inspect.getsource(_live_converters)
        pair = re.compile(
            r"if getv\(from_object, \['(\w+)'\]\) is not None:\s*"
            r"setv\(\s*parent_object,\s*\[((?:'\w+',?\s*)+)\]"
        )
        owners = {("setup",): "LiveClientSetup", ("setup", "generationConfig"): "GenerationConfig"}
        for m in pair.finditer(src):
            snake = m.group(1)
            path = tuple(re.findall(r"'(\w+)'", m.group(2)))
            owner = owners.get(path[:-1])
            if owner is None:
                raise SystemExit(f"unexpected converter path {path}")
            name = path[-1]
            if name in self.messages[owner]:
                continue
            where = f"LiveConnectConfig.{snake}"
            spec = self.classify(T.LiveConnectConfig.model_fields[snake].annotation, where)
            self.messages[owner][name] = spec

    def run(self) -> dict[str, Any]:
        self.walk(T.LiveClientMessage)
        self.walk(T.LiveServerMessage)
        self.add_connect_config_paths()
        return {
            "generated_by": "tests/tools/gen_live_schema.py",
            "source": f"google-genai {sdk_version.__version__} (google.genai.types)",
            "client_root": "LiveClientMessage",
            "server_root": "LiveServerMessage",
            "messages": {k: self.messages[k] for k in sorted(self.messages)},
            "enums": {k: self.enums[k] for k in sorted(self.enums)},
        }


def render() -> str:
    """The file's exact text; the drift test compares it (minus the SDK version line)."""
    return json.dumps(Generator().run(), indent=1, sort_keys=False) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
