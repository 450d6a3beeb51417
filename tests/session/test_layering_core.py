"""The session's decision modules stay sans-IO: they import neither trio, trio_websocket nor
structlog (nor the modules that do), and read no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SESSION = Path(__file__).resolve().parents[2] / "daemon" / "session"
PURE = ["core.py", "activity.py", "record.py", "effects.py", "replay.py", "toolcalls.py"]
FORBIDDEN = ("trio", "trio_websocket", "structlog", "time", "geminid.daemon.logsetup",
             "geminid.daemon.upstream.link", "geminid.daemon.upstream.translate",
             "geminid.daemon.upstream.auth", "geminid.daemon.upstream.auth_google",
             "geminid.daemon.checkpoint", "geminid.daemon.events",
             "geminid.daemon.session.actor", "geminid.daemon.session.durability")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("name", PURE)
def test_pure_session_modules_import_no_io(name):
    found = imports(SESSION / name)
    # The upstream package's __init__ re-exports the link: only its pure modules may be used.
    bad = {m for m in found if m == "geminid.daemon.upstream" or m.startswith("geminid.daemon.upstream.")
           and m.split(".")[3] not in ("backoff", "classify", "endings", "diagnose")}
    bad |= {m for m in found for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_no_wall_clock_read_in_the_session_package():
    for path in SESSION.glob("*.py"):
        assert "time.time(" not in path.read_text(), path.name


def test_no_session_class_is_longer_than_400_lines():
    """The god class is gone: every class of the session package and its neighbours stays small."""
    daemon = SESSION.parent
    files = [*SESSION.glob("*.py"), *(daemon / n for n in ("registry.py", "events.py", "service.py",
                                                            "states.py", "supervisor.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 400, f"{path.name}: {node.name}"
