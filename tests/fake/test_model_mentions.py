"""Nothing in the docs, the clients or the tests uses a model the service no longer serves.

Every Live model id the repository mentions must be in the fake's 2026 catalogue (the fake's
default), except in the few files whose job is to name retired or unknown ids (to test that they
are refused). A new mention of a dead model (``gemini-2.0-flash-live-001`` was shut down on
2025-12-09) fails here rather than at a user's first ``geminictl open``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from geminid.daemon.fake import catalogue as C

ROOT = Path(__file__).resolve().parents[2]
MODEL_ID = re.compile(r"gemini-(?:live-)?[0-9][A-Za-z0-9.\-]*")
#: Files that name retired or made-up models on purpose (the refusal tests, the table itself).
REFUSAL_FILES = {
    "daemon/fake/catalogue.py",
    "tests/fake/test_catalogue.py",
    "tests/fake/test_cli.py",
    "tests/fake/test_model_mentions.py",
    "tests/core/test_classify.py",  # a made-up id in a 1008 "not found" close
    "protocol/models.py",  # the retired list the daemon warns from
    "tests/session/test_retired_models.py",  # the warnings about them
}


def _mentions() -> dict[str, set[str]]:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml", "*.json", "*.service", "*.socket"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    found: dict[str, set[str]] = {}
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        for match in MODEL_ID.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(match.rstrip(".-"), set()).add(name)
    return found


def test_every_model_the_repository_mentions_is_served():
    served = set(C.catalogue_2026().names())
    found = _mentions()
    assert "gemini-3.8-live" in found  # the scan works (the default model is mentioned)
    bad = {model: sorted(files - REFUSAL_FILES) for model, files in found.items() if model not in served}
    bad = {model: files for model, files in bad.items() if files}
    assert not bad, f"models the 2026 service does not serve: {bad}"


def test_the_retired_models_are_refused_by_the_default_fake():
    from geminid.daemon.fake import FakeOptions

    cat = FakeOptions().catalogue
    assert cat == C.catalogue_2026()
    for model in C.RETIRED:
        assert cat.lookup(f"models/{model}") is None
