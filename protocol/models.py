"""What a client of the Live API must know about each model: the one table of model rules.

Pure data, shared by the daemon (tool calls, re-seeding, warnings) and anyone else who needs it
(the fake's catalogue takes the retired list from here), so that a model's rules have one owner.
Sources: ``shared/GEMINI_LIVE_2026.md`` §1, §3, §4.

- **Retired models** are shut down (the server closes 1008 "not found"): ``geminid
  check-config`` and ``session.open`` warn about them (:func:`retired_warning`).
- **Function-call behaviour**: a call is NON_BLOCKING when its declaration says so, or when it
  says nothing and the model's default is NON_BLOCKING (the 3.8 models; extended thinking
  accepts NON_BLOCKING only, 3.1 is sequential only). :func:`function_behaviors` reads a setup.
- **History seeding**: 3.1 takes ``clientContent`` only as initial history, announced with
  ``historyConfig.initialHistoryInClientContent`` and ended by ``turnComplete: true``
  (:attr:`ModelRules.initial_history_only`).
- **Proactive audio** (3.8): the model may not answer an input at all
  (:attr:`ModelRules.may_decline`; the session's activity model then tells a declined input
  from a stall).

A model the table does not know gets :data:`UNKNOWN`'s rules: blocking calls unless declared
otherwise (the pre-2026 behaviour), ``clientContent`` at any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

BLOCKING = "BLOCKING"
NON_BLOCKING = "NON_BLOCKING"

#: Shut down 2025-12-09 (GEMINI_LIVE_2026.md §1).
RETIRED = ("gemini-2.0-flash-live-001", "gemini-live-2.5-flash-preview")
#: The current default (GA since 2026-09).
DEFAULT_MODEL = "models/gemini-3.8-live"


@attrs.frozen
class ModelRules:
    name: str
    #: The ``behavior`` of a function declaration that names none.
    default_behavior: str = BLOCKING
    #: ``behavior`` is ignored: every call blocks (3.1, "sequential only").
    blocking_only: bool = False
    #: ``clientContent`` only as initial history (``historyConfig``), ended by turnComplete.
    initial_history_only: bool = False
    #: Proactive audio is always on: the model may answer an input with nothing at all
    #: (GEMINI_LIVE_2026.md §7; what the server sends then is UNCONFIRMED).
    may_decline: bool = False


MODELS: Mapping[str, ModelRules] = {
    r.name: r
    for r in (
        ModelRules("gemini-3.8-live", default_behavior=NON_BLOCKING, may_decline=True),
        ModelRules("gemini-3.8-live-extended-thinking", default_behavior=NON_BLOCKING, may_decline=True),
        ModelRules("gemini-3.1-flash-live-preview", blocking_only=True, initial_history_only=True),
        ModelRules("gemini-2.5-flash-native-audio-preview-12-2025"),
    )
}
UNKNOWN = ModelRules("(unknown)")


def bare_id(model: str) -> str:
    """``models/x`` or ``projects/P/locations/L/publishers/google/models/x`` -> ``x``."""
    return model.rsplit("models/", 1)[-1] if "models/" in model else model


def rules_for(model: str) -> ModelRules:
    return MODELS.get(bare_id(model), UNKNOWN)


def is_retired(model: str) -> bool:
    return bare_id(model) in RETIRED


def retired_warning(model: str) -> str | None:
    """The warning for a setup naming a retired model, or None."""
    if not is_retired(model):
        return None
    return (
        f"model {model!r} is retired (shut down 2025-12-09): the server will close 1008 'not found'; "
        f"use {DEFAULT_MODEL!r}"
    )


def function_behaviors(setup: Mapping[str, Any]) -> dict[str, str]:
    """``{function name: BLOCKING | NON_BLOCKING}`` for every function the setup declares."""
    rules = rules_for(str(setup.get("model") or ""))
    return declared_behaviors(setup.get("tools"), rules)


def declared_behaviors(tools: Any, rules: ModelRules) -> dict[str, str]:
    """The behaviour of each function in a list of Tool objects, under ``rules``."""
    out: dict[str, str] = {}
    for tool in tools if isinstance(tools, list) else []:
        decls = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for decl in decls if isinstance(decls, list) else []:
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                continue
            declared = decl.get("behavior")
            if rules.blocking_only:
                behavior = BLOCKING
            elif declared in (BLOCKING, NON_BLOCKING):
                behavior = str(declared)
            else:
                behavior = rules.default_behavior
            out[decl["name"]] = behavior
    return out


def setup_warnings(setup: Mapping[str, Any]) -> tuple[str, ...]:
    """Warnings about a setup that the daemon forwards anyway (the server has the last word)."""
    warning = retired_warning(str(setup.get("model") or ""))
    return (warning,) if warning else ()
