"""Re-seeding a fresh session with the conversation's tail after the context was lost. Pure.

Off unless ``session.reseed``; never on a resume. Two forms, as the model requires
(``shared/GEMINI_LIVE_2026.md`` §4):

- **initial history** (3.1, which takes ``clientContent`` only this way, and any setup that
  itself asks for ``historyConfig.initialHistoryInClientContent``): the fresh setup carries
  that flag, and the seed ends with ``turnComplete: true``, which closes the history (the server
  waits for it and calls no model); the conversation then goes on via ``realtimeInput``;
- **context** (3.8, ``clientContent`` accepted all session long): the seed goes with
  ``turnComplete: false``, so it elicits nothing and the server waits for the next input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from geminid.protocol import models


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def seed_turns(transcript: Iterable[dict[str, Any]], *, replayed: Iterable[str] = ()) -> list[dict[str, object]]:
    """The transcript's text entries as Content turns, without the user turns that will be
    replayed on the fresh session (``replayed``: their texts, in order; the transcript holds a
    user turn from its acceptance, answered or not). The replay asks those as the questions they
    are; in the seed as well, the model would hear each of them twice. Each replayed text takes
    out the last user entry with that text not already taken."""
    entries = [t for t in transcript if t.get("text")]
    taken: set[int] = set()
    for text in reversed(list(replayed)):
        for i in range(len(entries) - 1, -1, -1):
            if i not in taken and entries[i].get("role") == "user" and entries[i]["text"] == text:
                taken.add(i)
                break
    return [{"role": t["role"], "parts": [{"text": t["text"]}]} for i, t in enumerate(entries) if i not in taken]


def initial_history(setup: dict[str, Any]) -> bool:
    """The seed must be initial history: the model requires it, or the setup announces it."""
    if models.rules_for(str(setup.get("model") or "")).initial_history_only:
        return True
    return _obj(setup.get("historyConfig")).get("initialHistoryInClientContent") is True


def seeded_setup(setup: dict[str, Any]) -> dict[str, Any]:
    """The setup of a fresh dial that will be seeded: announce the history where it must be."""
    if not initial_history(setup):
        return setup
    return {**setup, "historyConfig": {**_obj(setup.get("historyConfig")), "initialHistoryInClientContent": True}}


def seed_message(turns: list[dict[str, object]], setup: dict[str, Any]) -> dict[str, object]:
    """The seed for a fresh session whose setup was ``setup`` (after :func:`seeded_setup`)."""
    return {"clientContent": {"turns": turns, "turnComplete": initial_history(setup)}}
