"""The model catalogue: which models the fake serves, and the 2026 refusals of each."""

from __future__ import annotations

import attrs
import pytest

from geminid.daemon.fake import catalogue as C
from geminid.protocol import live

from .helpers import connect, text_of, transcript_of

M38 = "models/gemini-3.8-live"
EXT = "models/gemini-3.8-live-extended-thinking"
M31 = "models/gemini-3.1-flash-live-preview"
M25 = "models/gemini-2.5-flash-native-audio-preview-12-2025"


async def _setup_close(fake, model: str, **kwargs) -> tuple[int, str | None]:
    async with connect(fake) as client:
        await client.send(live.setup(model, **kwargs))
        return await client.closed()


def test_default_table():
    cat = C.catalogue_2026()
    assert cat.names() == (
        "gemini-3.8-live", "gemini-3.8-live-extended-thinking",
        "gemini-3.1-flash-live-preview", "gemini-2.5-flash-native-audio-preview-12-2025",
    )
    assert C.DEFAULT_MODEL == "gemini-3.8-live"
    assert cat.lookup("models/gemini-3.8-live") is C.GEMINI_3_8
    assert cat.lookup("projects/p/locations/l/publishers/google/models/gemini-3.8-live") is C.GEMINI_3_8
    assert cat.lookup("models/gemini-2.0-flash-live-001") is None
    assert cat.is_retired("gemini-live-2.5-flash-preview")
    assert cat.lookup("models/nope") is None
    assert C.permissive_catalogue().lookup("models/gemini-2.0-flash-live-001") is C.LEGACY
    assert C.GEMINI_3_8.default_behavior == "NON_BLOCKING"
    assert C.GEMINI_3_1.default_behavior == "BLOCKING"


@pytest.mark.parametrize("model", ["models/gemini-2.0-flash-live-001", "models/gemini-live-2.5-flash-preview",
                                   "models/made-up"])
async def test_unknown_or_retired_model_closes_1008(start_fake, model):
    fake = await start_fake(catalogue=C.catalogue_2026())
    code, reason = await _setup_close(fake, model)
    assert code == 1008
    assert reason == f"{model} is not found for API version v1beta, or is not supported for bidiGenerateContent."
    assert not any("setupComplete" in m for m in fake.connections[0].sent)


@pytest.mark.parametrize("model", [M38, EXT, M25])
async def test_text_on_audio_model_closes_1007(start_fake, model):
    fake = await start_fake(catalogue=C.catalogue_2026())
    kwargs = {"generation_config": {"thinkingConfig": {"thinkingLevel": "LOW"}}} if model == EXT else {}
    code, reason = await _setup_close(fake, model, response_modalities=["TEXT"], **kwargs)
    assert (code, reason) == (1007, "Request contains an invalid argument.")


async def test_text_on_3_1_closes_1011_internal(start_fake):
    fake = await start_fake(catalogue=C.catalogue_2026())
    assert await _setup_close(fake, M31, response_modalities=["TEXT"]) == (1011, "Internal error encountered.")


async def test_refusal_code_and_text_are_per_model_options(start_fake):
    cat = C.catalogue_2026()
    cat = cat.with_model(attrs.evolve(C.GEMINI_3_8, modality_refusal=(1011, C.INTERNAL_ERROR)))
    cat = cat.with_model(C.GEMINI_2_5_NATIVE_AUDIO.accepts_text())
    fake = await start_fake(catalogue=cat)
    assert await _setup_close(fake, M38, response_modalities=["TEXT"]) == (1011, "Internal error encountered.")
    async with connect(fake) as client:
        await client.setup(model=M25, response_modalities=["TEXT"])
        await client.say("hello")
        assert text_of(await client.turn()) == 'turn 1: heard "hello".'


async def test_two_modalities_refused(start_fake):
    fake = await start_fake(catalogue=C.catalogue_2026())
    assert (await _setup_close(fake, M38, response_modalities=["AUDIO", "TEXT"]))[0] == 1007


@pytest.mark.parametrize(
    ("model", "thinking", "ok"),
    [
        (M38, {"thinkingLevel": "LOW"}, False),
        (M38, None, True),
        (EXT, None, False),
        (EXT, {}, False),
        (EXT, {"thinkingLevel": "LOW", "thinkingBudget": 100}, False),
        (EXT, {"thinkingLevel": "HIGH"}, True),
        (EXT, {"thinkingBudget": 512}, True),
        (M31, {"thinkingBudget": 0}, True),
    ],
)
async def test_thinking_rules(start_fake, model, thinking, ok):
    fake = await start_fake(catalogue=C.catalogue_2026())
    gen = {"thinkingConfig": thinking} if thinking is not None else None
    async with connect(fake) as client:
        await client.send(live.setup(model, generation_config=gen, response_modalities=["AUDIO"]))
        if ok:
            assert "setupComplete" in await client.recv()
        else:
            assert await client.closed() == (1007, "Request contains an invalid argument.")


async def test_proactive_audio_cannot_be_turned_off_on_3_8(start_fake):
    fake = await start_fake(catalogue=C.catalogue_2026())
    async with connect(fake) as client:
        await client.send({"setup": {"model": M38, "proactivity": {"proactiveAudio": False}}})
        assert (await client.closed())[0] == 1007
    async with connect(fake) as client:
        await client.send({"setup": {"model": M38, "proactivity": {"proactiveAudio": True}}})
        assert "setupComplete" in await client.recv()
    async with connect(fake) as client:  # 2.5 lets it be turned off
        await client.send({"setup": {"model": M25, "proactivity": {"proactiveAudio": False}}})
        assert "setupComplete" in await client.recv()


async def test_blocking_refused_on_extended_thinking(start_fake):
    fake = await start_fake(catalogue=C.catalogue_2026())
    tools = [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}]
    gen = {"thinkingConfig": {"thinkingLevel": "LOW"}}
    async with connect(fake) as client:
        await client.send(live.setup(EXT, generation_config=gen, tools=tools))
        assert (await client.closed())[0] == 1007
    async with connect(fake) as client:  # 3.8 still accepts it
        await client.send(live.setup(M38, tools=tools))
        assert "setupComplete" in await client.recv()


async def test_permissive_catalogue_keeps_the_legacy_fake(start_fake):
    fake = await start_fake(catalogue=C.permissive_catalogue())
    async with connect(fake) as client:
        await client.setup(model="models/gemini-2.0-flash-live-001")
        await client.say("hello")
        msgs = await client.turn()
    assert text_of(msgs) == 'turn 1: heard "hello".'
    assert msgs[-1]["serverContent"] == {"turnComplete": True}  # no interactionStatus


async def test_audio_is_the_default_modality_on_3_8(start_fake):
    fake = await start_fake(catalogue=C.catalogue_2026())
    async with connect(fake) as client:
        await client.setup(model=M38, output_audio_transcription=True)
        await client.say("hello")
        msgs = await client.turn()
    assert text_of(msgs) == ""
    assert transcript_of(msgs) == 'turn 1: heard "hello".'
    audio = [p["inlineData"] for m in msgs for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])]
    assert audio and all(a["mimeType"] == "audio/pcm;rate=24000" for a in audio)
