"""The fake's model catalogue: which Live models exist and how each one behaves. Pure data.

The fake is the ground truth of every test, so it must refuse what the real service refuses
(``shared/GEMINI_LIVE_2026.md`` §1, §3, §4, §6). Each :class:`ModelSpec` says, for one model id:
the response modalities it accepts (and how it refuses the others), its thinking rules, its tool
mode, its interaction style (plain, or extended thinking with fillers), whether ``clientContent``
is accepted mid-session or only as initial history, and its proactive-audio rule.

Where the real behaviour is UNCONFIRMED, a field makes both behaviours available: a test picks
one with :func:`attrs.evolve` on the entry (``catalogue.with_model(...)``), the CLI with flags.

- :func:`catalogue_2026` is the service as it is in late 2026: four live models, two retired,
  and everything else unknown (1008).
- :func:`permissive_catalogue` adds :data:`LEGACY`, the fake as it was before the catalogue (any
  model id, TEXT or AUDIO, blocking tools, no ``interactionStatus``), as the fallback for ids the
  table does not know, retired ones included. It exists for tests that predate 2026 and is never
  the service's behaviour.
"""

from __future__ import annotations

import enum

import attrs

from geminid.protocol import models


class ToolMode(enum.Enum):
    """Which ``behavior`` a model's function declarations may carry."""

    BLOCKING = "blocking"  # sequential only: ``behavior`` is ignored, every call blocks
    NON_BLOCKING = "non_blocking"  # async only: ``BLOCKING`` is refused
    BOTH = "both"  # NON_BLOCKING by default, BLOCKING when declared


class Style(enum.Enum):
    PLAIN = "plain"  # one utterance per request
    EXTENDED = "extended"  # a filler (IN_PROGRESS), then the answer (IDLE)


class Thinking(enum.Enum):
    REFUSED = "refused"  # ``thinkingConfig`` closes 1007
    OPTIONAL = "optional"  # anything goes
    EXACTLY_ONE = "exactly_one"  # exactly one of thinkingLevel / thinkingBudget, else 1007


class History(enum.Enum):
    ANYTIME = "anytime"  # clientContent for the whole session (3.8)
    INITIAL_ONLY = "initial_only"  # only as initial history with historyConfig (3.1)


#: What the service says about a model it does not serve (``models/X``).
NOT_FOUND_TEMPLATE = "{model} is not found for API version v1beta, or is not supported for bidiGenerateContent."
INVALID_ARGUMENT = "Request contains an invalid argument."
INTERNAL_ERROR = "Internal error encountered."


@attrs.frozen(kw_only=True)
class ModelSpec:
    """One model's behaviour in the fake.

    - ``modalities``: accepted ``responseModalities`` (one per session); ``default_modality``
      when the setup names none. A refused modality closes ``modality_refusal`` (code, reason):
      1007 on 2.5/3.8, 1011 "Internal error encountered" on 3.1 (python-genai #2238).
    - ``interaction_status``: ``interactionStatus`` goes with every ``turnComplete``. Plain 3.8
      sending none is UNCONFIRMED, hence a field (``FakeOptions.interaction_status`` overrides).
    - ``proactive_audio_always``: ``proactivity.proactiveAudio: false`` is refused (3.8).
    - ``interim_transcription``: ``interimInputTranscription`` while input audio arrives.
    """

    name: str
    modalities: frozenset[str] = frozenset({"AUDIO"})
    default_modality: str = "AUDIO"
    modality_refusal: tuple[int, str] = (1007, INVALID_ARGUMENT)
    thinking: Thinking = Thinking.REFUSED
    tool_mode: ToolMode = ToolMode.BOTH
    style: Style = Style.PLAIN
    history: History = History.ANYTIME
    proactive_audio_always: bool = False
    interaction_status: bool = True
    interim_transcription: bool = True

    #: The ``behavior`` of a declaration that names none (NON_BLOCKING is the 3.8 default).
    default_behavior: str = attrs.field(
        default="NON_BLOCKING", validator=attrs.validators.in_(("BLOCKING", "NON_BLOCKING"))
    )

    def accepts_text(self) -> ModelSpec:
        """This entry with TEXT accepted too (Vertex lists text output for 3.8; on the
        Developer API what TEXT does on 3.8 is UNCONFIRMED)."""
        return attrs.evolve(self, modalities=self.modalities | {"TEXT"})


GEMINI_3_8 = ModelSpec(name="gemini-3.8-live", proactive_audio_always=True)
GEMINI_3_8_EXTENDED = ModelSpec(
    name="gemini-3.8-live-extended-thinking",
    thinking=Thinking.EXACTLY_ONE,
    tool_mode=ToolMode.NON_BLOCKING,
    style=Style.EXTENDED,
    proactive_audio_always=True,
)
GEMINI_3_1 = ModelSpec(
    name="gemini-3.1-flash-live-preview",
    modality_refusal=(1011, INTERNAL_ERROR),
    thinking=Thinking.OPTIONAL,
    tool_mode=ToolMode.BLOCKING,
    default_behavior="BLOCKING",
    history=History.INITIAL_ONLY,
)
GEMINI_2_5_NATIVE_AUDIO = ModelSpec(
    name="gemini-2.5-flash-native-audio-preview-12-2025",
    thinking=Thinking.OPTIONAL,
    tool_mode=ToolMode.BOTH,
    default_behavior="BLOCKING",  # NON_BLOCKING only when declared (2.5)
    interaction_status=False,
    interim_transcription=False,
)
#: Shut down 2025-12-09 (GEMINI_LIVE_2026.md §1): closed 1008 like an unknown id. One owner,
#: shared with the daemon's warnings (geminid.protocol.models).
RETIRED = models.RETIRED
#: The fake before the catalogue: any id, TEXT by default, blocking tools, no interactionStatus.
LEGACY = ModelSpec(
    name="(legacy)",
    modalities=frozenset({"TEXT", "AUDIO"}),
    default_modality="TEXT",
    thinking=Thinking.OPTIONAL,
    tool_mode=ToolMode.BLOCKING,
    default_behavior="BLOCKING",
    interaction_status=False,
    interim_transcription=False,
)
DEFAULT_MODEL = GEMINI_3_8.name


def bare_id(model: str) -> str:
    """``models/x`` or ``projects/P/locations/L/publishers/google/models/x`` -> ``x``."""
    return model.rsplit("models/", 1)[-1] if "models/" in model else model


@attrs.frozen(kw_only=True)
class Catalogue:
    """The models the fake serves. ``fallback``: the entry for any other id (None: 1008)."""

    models: tuple[ModelSpec, ...]
    retired: tuple[str, ...] = RETIRED
    fallback: ModelSpec | None = None

    def lookup(self, model: str) -> ModelSpec | None:
        """The spec for a setup's ``model`` string, or None if the service would close 1008."""
        name = bare_id(model)
        for spec in self.models:
            if spec.name == name:
                return spec
        return None if name in self.retired and self.fallback is None else self.fallback

    def is_retired(self, model: str) -> bool:
        return bare_id(model) in self.retired

    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.models)

    def accepting_text(self, name: str = "gemini-3.8-live") -> Catalogue:
        """This catalogue with TEXT accepted on ``name``: for tests that read text replies
        (Vertex lists text output for 3.8; on the Developer API it is UNCONFIRMED)."""
        spec = self.lookup(name)
        if spec is None:
            raise ValueError(f"{name!r} is not in the catalogue")
        return self.with_model(spec.accepts_text())

    def with_model(self, spec: ModelSpec) -> Catalogue:
        """This catalogue with ``spec`` replacing the entry of the same name (or added)."""
        rest = tuple(s for s in self.models if s.name != spec.name)
        return attrs.evolve(self, models=(*rest, spec))


def catalogue_2026() -> Catalogue:
    """The Developer API's Live models as of 2026-12 (GEMINI_LIVE_2026.md §1)."""
    return Catalogue(models=(GEMINI_3_8, GEMINI_3_8_EXTENDED, GEMINI_3_1, GEMINI_2_5_NATIVE_AUDIO))


def text_catalogue() -> Catalogue:
    """:func:`catalogue_2026` with TEXT accepted on gemini-3.8-live, for tests that read text
    replies (what TEXT does on 3.8 on the Developer API is UNCONFIRMED; Vertex lists text output)."""
    return catalogue_2026().accepting_text(GEMINI_3_8.name)


def permissive_catalogue() -> Catalogue:
    """:func:`catalogue_2026` plus :data:`LEGACY` for every other id (retired ones included)."""
    return attrs.evolve(catalogue_2026(), fallback=LEGACY)


def not_found_reason(model: str) -> str:
    name = model if model.startswith("models/") or "/" in model else f"models/{model}"
    return NOT_FOUND_TEMPLATE.format(model=name)
