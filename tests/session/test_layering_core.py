"""The session's decision modules stay sans-IO: they import neither trio, trio_websocket nor
structlog (nor the modules that do), and read no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SESSION = Path(__file__).resolve().parents[2] / "daemon" / "session"
PURE = ["core.py", "activity.py", "record.py", "effects.py", "replay.py", "toolcalls.py"]
FORBIDDEN = ("trio", "trio_websocket", "structlog", "time", "geminid.daemon.logsetup",
             "geminid.daemon.upstream", "geminid.daemon.checkpoint", "geminid.daemon.events",
             "geminid.daemon.session.actor", "geminid.daemon.session.durability")
#: The upstream package's pure modules (values and decisions), which the core may use; each of
#: them is held to the same rule below (the package root and link/translate/auth/endpoint do I/O).
UPSTREAM = Path(__file__).resolve().parents[2] / "daemon" / "upstream"
PURE_UPSTREAM = ["endings", "classify", "backoff", "diagnose"]
ALLOWED = tuple(f"geminid.daemon.upstream.{m}" for m in PURE_UPSTREAM)


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
    bad = {m for m in imports(SESSION / name) for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    bad = {m for m in bad if not any(m == a or m.startswith(a + ".") for a in ALLOWED)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", PURE_UPSTREAM)
def test_the_pure_upstream_modules_import_no_io(name):
    relative = {m for m in imports(UPSTREAM / f"{name}.py") if not m.startswith("geminid.")}
    bad = {m for m in relative for f in ("trio", "trio_websocket", "structlog", "time", "socket", "ssl")
           if m == f or m.startswith(f + ".")}
    assert not bad, f"{name}.py imports {sorted(bad)}"
    siblings = {node.module for node in ast.walk(ast.parse((UPSTREAM / f"{name}.py").read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert siblings <= set(PURE_UPSTREAM), f"{name}.py imports {sorted(siblings - set(PURE_UPSTREAM))}"


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
