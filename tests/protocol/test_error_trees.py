"""The exception trees drawn in the errors modules' docstrings are the real class hierarchy."""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import pytest

from geminid.daemon import errors as daemon_errors
from geminid.protocol import errors as protocol_errors
from geminid.protocol.errors import GeminidError

_NODE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)\b")


def _drawn(module: ModuleType) -> dict[str, str]:
    """``{class: parent}`` as drawn: a node's parent is the nearest less indented node above it."""
    doc = module.__doc__ or ""
    tree = doc[doc.index("GeminidError"):]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        m = _NODE.match(line.strip("\n").removeprefix("    "))
        if not m:
            continue
        depth, name = len(m["indent"]), m["name"]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def _defined(module: ModuleType) -> dict[str, str]:
    return {
        name: cls.__mro__[1].__name__
        for name, cls in vars(module).items()
        if inspect.isclass(cls) and issubclass(cls, GeminidError) and cls is not GeminidError
        and cls.__module__ == module.__name__
    }


@pytest.mark.parametrize("module", [protocol_errors, daemon_errors])
def test_the_drawn_tree_is_the_class_tree(module):
    assert _drawn(module) == _defined(module)


@pytest.mark.parametrize("module", [protocol_errors, daemon_errors])
def test_every_error_says_when_it_is_raised(module):
    for name in _defined(module):
        assert (getattr(module, name).__doc__ or "").strip(), name


def test_daemon_only_errors_left_the_client_tree():
    for name in ("ConfigError", "CheckpointError", "CheckpointCorrupt", "CheckpointWriteError",
                 "EscalationError", "UpstreamError"):
        assert not hasattr(protocol_errors, name), name
