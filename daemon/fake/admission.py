"""Setup admission: would the service accept this ``setup`` on this model, and as what? Pure.

Split out of the connection so the refusal rules (``shared/GEMINI_LIVE_2026.md`` §1, §3, §6)
read as one table of decisions, testable without a socket: :func:`setup_refusal` returns the
close the service would send, :func:`admit` the settings an accepted setup turns on.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import catalogue as C
from . import model as M


def modalities(body: dict[str, Any]) -> list[str]:
    """The requested ``responseModalities``, upper-cased."""
    gen_cfg = body.get("generationConfig") or {}
    return [str(m).upper() for m in gen_cfg.get("responseModalities") or []]


def modality(spec: C.ModelSpec, body: dict[str, Any]) -> str:
    """The one modality the model will answer in: AUDIO if asked, else the first, else the default."""
    asked = modalities(body)
    if "AUDIO" in asked:
        return "AUDIO"
    return asked[0] if asked else spec.default_modality


def setup_refusal(spec: C.ModelSpec, body: dict[str, Any]) -> tuple[int, str, str] | None:
    """(code, reason, why) if the service would refuse this setup on ``spec``'s model.

    The codes of the thinking, proactive-audio and BLOCKING refusals are UNCONFIRMED
    (GEMINI_LIVE_2026.md §6); 1007 is the likely one.
    """
    bad = (1007, C.INVALID_ARGUMENT)
    if len(modalities(body)) > 1 and spec is not C.LEGACY:
        return (*bad, "more than one response modality")
    chosen = modality(spec, body)
    if chosen not in spec.modalities:
        return (*spec.modality_refusal, f"response modality {chosen} not supported")
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig")
    if spec.thinking is C.Thinking.REFUSED and thinking is not None:
        return (*bad, "thinkingConfig not supported by this model")
    if spec.thinking is C.Thinking.EXACTLY_ONE:
        given = [k for k in ("thinkingLevel", "thinkingBudget") if (thinking or {}).get(k) is not None]
        if len(given) != 1:
            return (*bad, "exactly one of thinkingLevel / thinkingBudget is required")
    proactivity = body.get("proactivity") or {}
    if spec.proactive_audio_always and proactivity.get("proactiveAudio") is False:
        return (*bad, "proactive audio cannot be turned off on this model")
    if spec.tool_mode is C.ToolMode.NON_BLOCKING:
        for decl in M.declarations(body.get("tools") or []).values():
            if decl.get("behavior") == "BLOCKING":
                return (*bad, "BLOCKING functions are not supported by this model")
    return None


@attrs.frozen
class Admitted:
    """What an accepted setup turns on for the connection (a resumed setup may change all of it)."""

    audio_out: bool
    input_transcription: bool
    output_transcription: bool
    resumption: bool
    transparent: bool
    #: 3.1: the client sends initial history in clientContent until turnComplete.
    history_open: bool


def admit(spec: C.ModelSpec, body: dict[str, Any], *, transparent: bool) -> Admitted:
    """The settings of an accepted ``body``; ``transparent`` is the server's own default."""
    resumption = body.get("sessionResumption")
    history_cfg = body.get("historyConfig") or {}
    return Admitted(
        audio_out=modality(spec, body) == "AUDIO",
        input_transcription=body.get("inputAudioTranscription") is not None,
        output_transcription=body.get("outputAudioTranscription") is not None,
        resumption=resumption is not None,
        transparent=transparent or bool((resumption or {}).get("transparent")),
        history_open=(
            spec.history is C.History.INITIAL_ONLY
            and (resumption or {}).get("handle") is None
            and history_cfg.get("initialHistoryInClientContent") is True
        ),
    )


#: Before setup (nothing is on yet).
NOT_ADMITTED = Admitted(False, False, False, False, False, False)
