"""Import layering, read from the source with ``ast`` (no import is executed, no dependency added).

- ``geminid.protocol.*`` never imports ``geminid.daemon``: a client needs nothing of the daemon.
- ``geminid.daemon.upstream.*`` never imports the session, the registry or the local socket side:
  the session drives the link, never the other way round.
- ``geminid.daemon.fake.*`` imports, of geminid, only ``geminid.protocol`` (and itself): the fake is
  the ground truth of the tests, so it must not share code with what it tests.

Every import statement counts, at any depth (a function-level import is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where each import root lives (pyproject's package-dir).
TREES = {"geminid.daemon": ROOT / "daemon", "geminid.protocol": ROOT / "protocol"}


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every .py file of ``package``, subpackages included."""
    root_name = next(r for r in TREES if package == r or package.startswith(r + "."))
    base = TREES[root_name]
    folder = base.joinpath(*package[len(root_name) :].strip(".").split(".")) if package != root_name else base
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join([root_name, *parts]), path


def imports_of(source: str, module: str, *, is_package: bool) -> set[str]:
    """Absolute names of everything ``source`` (the text of ``module``) imports, relative resolved."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import sub`` may name a submodule: count it as pkg.sub as well.
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _violations(package: str, allowed, forbidden) -> list[str]:
    bad = []
    for module, path in _modules(package):
        names = imports_of(path.read_text(), module, is_package=path.name == "__init__.py")
        for name in sorted(names):
            if forbidden(name) and not allowed(name):
                bad.append(f"{module} imports {name}")
    return bad


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_protocol_never_imports_the_daemon():
    assert _violations("geminid.protocol", lambda n: False, lambda n: _under(n, "geminid.daemon")) == []


UPSTREAM_MUST_NOT_REACH = tuple(
    f"geminid.daemon.{m}"
    for m in ("session", "registry", "service", "server", "rpc", "events", "local", "app", "cli")
)


def test_upstream_never_imports_the_session_or_the_local_side():
    bad = _violations(
        "geminid.daemon.upstream", lambda n: False, lambda n: _under(n, *UPSTREAM_MUST_NOT_REACH)
    )
    assert bad == []


def test_the_fake_imports_only_the_protocol():
    bad = _violations(
        "geminid.daemon.fake",
        lambda n: _under(n, "geminid.protocol", "geminid.daemon.fake"),
        lambda n: _under(n, "geminid"),
    )
    assert bad == []


def test_every_package_is_scanned():
    """The scan sees the files it is meant to see (a wrong path would make the checks vacuous)."""
    names = {m for m, _ in _modules("geminid.daemon.upstream")}
    assert {"geminid.daemon.upstream", "geminid.daemon.upstream.link"} <= names
    assert "geminid.protocol.client" in {m for m, _ in _modules("geminid.protocol")}
    assert "geminid.daemon.fake.server" in {m for m, _ in _modules("geminid.daemon.fake")}


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("from ..session import X", "geminid.daemon.upstream.link", False, "geminid.daemon.session"),
        ("from . import link", "geminid.daemon.upstream", True, "geminid.daemon.upstream.link"),
        ("from .. import session", "geminid.daemon.upstream.link", False, "geminid.daemon.session"),
        ("def f():\n    import geminid.daemon.config", "geminid.protocol.client", False,
         "geminid.daemon.config"),
        ("from geminid.daemon import registry", "geminid.daemon.fake.x", False,
         "geminid.daemon.registry"),
    ],
)
def test_imports_are_resolved(source, module, is_package, expected):
    assert expected in imports_of(source, module, is_package=is_package)
