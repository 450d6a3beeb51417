"""Shared pytest configuration for the geminid test suite.

Hypothesis example database (see tests/hypothesis-examples/README.md): failing examples that
hypothesis finds are kept in ``tests/hypothesis-examples/``, which is committed, so every later run
(CI's fresh clone included) replays them first.

- Locally: hypothesis' own working database in ``.hypothesis/examples`` (ignored by git) plus the
  committed directory, which only ever *gains* failing examples (nothing is deleted or moved
  there, so an example stays as a regression after its bug is fixed; commit what appears).
- With ``CI`` set: the committed directory read-only. CI replays the examples and writes nothing,
  so a read-only checkout works too (a failed write is ignored by hypothesis in any case).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "tests" / "hypothesis-examples"


class KeepFailuresDatabase(ExampleDatabase):
    """A directory that only gains *failing* examples: saves under a test's primary key are kept;
    hypothesis' secondary and pareto corpora, deletions and moves are ignored."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._db = DirectoryBasedExampleDatabase(path)

    def __repr__(self) -> str:
        return f"KeepFailuresDatabase({self._db.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeepFailuresDatabase) and self._db == other._db

    __hash__ = None  # type: ignore[assignment]

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self._db.fetch(key)

    def save(self, key: bytes, value: bytes) -> None:
        if not key.endswith((b".secondary", b".pareto")):
            self._db.save(key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        pass

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        pass


def example_database() -> ExampleDatabase:
    if os.environ.get("CI"):
        return ReadOnlyDatabase(DirectoryBasedExampleDatabase(EXAMPLES_DIR))
    return MultiplexedDatabase(
        DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
        KeepFailuresDatabase(EXAMPLES_DIR),
    )


# CI machines are shared and noisy: no hypothesis deadlines, a modest default example count.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
    database=example_database(),
)
settings.load_profile("default")
