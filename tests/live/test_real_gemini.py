"""Opt-in test against the REAL Gemini Live service (the rest of the suite never leaves loopback).

Runs only when ``GEMINI_API_KEY`` is set and generativelanguage.googleapis.com:443 answers a TCP
connect within 3 s; otherwise it is skipped with the reason. With a key::

    GEMINI_API_KEY=... .venv/bin/python -m pytest tests/live -v

``GEMINI_LIVE_MODEL`` picks the model (default ``models/gemini-3.8-live``);
``GEMINI_LIVE_MODALITY`` defaults to ``AUDIO`` (3.8 replies in audio only; the reply is then read
from the output transcription); ``TEXT`` is for models that accept it.

The extended-thinking variant runs the same scenario on ``models/gemini-3.8-live-extended-thinking``
(``GEMINI_LIVE_EXT_MODEL``), AUDIO with ``outputAudioTranscription`` and a ``thinkingConfig`` with
exactly one of ``thinkingLevel`` / ``thinkingBudget`` (``GEMINI_LIVE_THINKING_LEVEL``, default
``LOW``; or ``GEMINI_LIVE_THINKING_BUDGET``). There one request gets a filler ending in
``turnComplete`` + ``IN_PROGRESS`` and then the answer ending in ``turnComplete`` + ``IDLE``: a
reply is over only at the end of the interaction, so the scenario waits for that.

What it proves: the real registry (in process), on the default endpoint, holds a conversation
across a reconnect that we force by closing the socket from our side
(:meth:`SessionActor.force_reconnect`: close 1000, then resume with the newest handle). The model
is told a random secret word, the connection is cycled, the session must come back ``live`` with
context ``restored``, and the model must still know the word.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from geminid.daemon.config import Config, Secret, SessionConfig, UpstreamConfig
from geminid.daemon.events import Event
from geminid.daemon.fake import FakeOptions, FakeUpstream
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import start_core
from geminid.daemon.states import State
from geminid.daemon.upstream import BackoffPolicy, Dial, Endpoint, FixedKey
from geminid.protocol import live

HOST = "generativelanguage.googleapis.com"
MODEL = os.environ.get("GEMINI_LIVE_MODEL") or "models/gemini-3.8-live"
MODALITY = (os.environ.get("GEMINI_LIVE_MODALITY") or "AUDIO").upper()  # 3.8 replies in audio only
EXT_MODEL = os.environ.get("GEMINI_LIVE_EXT_MODEL") or "models/gemini-3.8-live-extended-thinking"
WORDS = ["marmalade", "zeppelin", "quokka", "saffron", "obsidian", "bramble", "kumquat", "juniper",
         "lighthouse", "tangerine", "walrus", "origami"]


def _tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connect succeeds within ``timeout`` s (DNS included), else why not.

    Runs in a daemon thread so that a hanging resolver cannot hold the test (or the
    interpreter's exit) hostage."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="live-reachability", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return f"no answer within {timeout:g} s"
    return result[0]


@pytest.fixture
def api_key() -> str:
    key = os.environ.get("GEMINI_API_KEY", "").strip()
    if not key:
        pytest.skip("GEMINI_API_KEY is not set (this test talks to the real Gemini Live service)")
    problem = _tcp_reachable(HOST, 443, 3.0)
    if problem is not None:
        pytest.skip(f"{HOST}:443 is not reachable from here ({problem})")
    return key


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def statuses(self) -> list[dict[str, Any]]:
        return [e.params for e in self.events if e.method == "session.status"]

    def messages(self, start: int = 0) -> list[dict]:
        return [e.params["message"] for e in self.events[start:] if e.method == "session.message"]

    def text(self, start: int = 0) -> str:
        out = []
        for m in self.messages(start):
            sc = m.get("serverContent") or {}
            for part in (sc.get("modelTurn") or {}).get("parts") or []:
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
            tx = sc.get("outputTranscription") or {}
            if isinstance(tx.get("text"), str):
                out.append(tx["text"])
        return "".join(out)

    def turn_completed(self, start: int = 0, *, interaction: bool = False) -> bool:
        """A reply ended after event ``start``. ``interaction``: only at the end of the whole
        interaction (a ``turnComplete`` whose ``interactionStatus`` is not ``IN_PROGRESS``;
        extended thinking ends its filler with IN_PROGRESS, and every utterance with
        ``generationComplete``). Otherwise any turn boundary counts: some models never send
        turnComplete (GEMINI_LIVE.md §4)."""
        if interaction:
            return any(
                (sc := m.get("serverContent") or {}).get("turnComplete") and sc.get("interactionStatus") != "IN_PROGRESS"
                for m in self.messages(start)
            )
        return any(
            (sc := m.get("serverContent") or {}).get("turnComplete") or sc.get("generationComplete")
            for m in self.messages(start)
        )

    def statuses_sent(self, start: int = 0) -> list[str | None]:
        """The ``interactionStatus`` of each ``turnComplete`` after event ``start``."""
        return [
            sc.get("interactionStatus")
            for m in self.messages(start)
            if (sc := m.get("serverContent") or {}).get("turnComplete")
        ]

    async def wait(self, pred, what: str, timeout: float = 60.0) -> None:
        with trio.move_on_after(timeout):
            while not pred():
                await trio.sleep(0.05)
        assert pred(), f"timed out after {timeout:g} s waiting for {what}; statuses: {self.statuses()[-5:]}"


async def test_secret_word_survives_a_forced_reconnect(api_key: str, tmp_path: Path) -> None:
    answer = await secret_word_scenario(
        Config().upstream.endpoint, api_key, tmp_path / "state", MODEL, MODALITY
    )
    print(f"[live] {MODEL}: the model answered {answer!r} after the forced reconnect")


def _thinking_config() -> dict[str, Any]:
    """Exactly one of thinkingLevel / thinkingBudget (extended thinking refuses none or both)."""
    budget = os.environ.get("GEMINI_LIVE_THINKING_BUDGET")
    if budget:
        return {"thinkingBudget": int(budget)}
    return {"thinkingLevel": (os.environ.get("GEMINI_LIVE_THINKING_LEVEL") or "LOW").upper()}


async def test_extended_thinking_secret_word_survives_a_forced_reconnect(api_key: str, tmp_path: Path) -> None:
    answer = await secret_word_scenario(
        Config().upstream.endpoint, api_key, tmp_path / "state", EXT_MODEL, "AUDIO", thinking=_thinking_config()
    )
    print(f"[live] {EXT_MODEL}: the model answered {answer!r} after the forced reconnect")


async def test_the_same_scenario_against_the_fake(tmp_path: Path) -> None:
    """Keeps the live test honest where it cannot run: the same code, against the fake (whose
    reply to a question quotes the previous turn, so the word shows only if the resumed
    conversation kept it)."""
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeUpstream(FakeOptions(reply_pace=0.005)).serve)
        await secret_word_scenario(fake.url(), "test-key", tmp_path / "state", MODEL, "AUDIO")
        assert [c.resumed_handle is not None for c in fake.accepted] == [False, True]
        assert (fake.accepted[0].closed_by, fake.accepted[0].close_code) == ("client", 1000)
        nursery.cancel_scope.cancel()


async def test_the_extended_thinking_scenario_against_the_fake(tmp_path: Path) -> None:
    """The extended-thinking variant against the fake configured as extended thinking (the
    default catalogue's entry: fillers with IN_PROGRESS, thinkingConfig required). The answer
    must be the whole interaction: the filler alone does not quote the word."""
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeUpstream(FakeOptions(reply_pace=0.005)).serve)
        answer = await secret_word_scenario(
            fake.url(), "test-key", tmp_path / "state", EXT_MODEL, "AUDIO", thinking=_thinking_config()
        )
        assert "let me think" in answer and 'heard "What is my secret word' in answer, answer
        sent = [(m.get("serverContent") or {}).get("interactionStatus") for m in fake.accepted[1].sent
                if (m.get("serverContent") or {}).get("turnComplete")]
        assert sent == ["IN_PROGRESS", "IDLE"], sent  # the filler's end did not end the reply
        assert [c.resumed_handle is not None for c in fake.accepted] == [False, True]
        setup = fake.accepted[0].setup["setup"]
        assert setup["generationConfig"]["thinkingConfig"] == _thinking_config()
        assert setup["outputAudioTranscription"] == {}
        nursery.cancel_scope.cancel()


async def secret_word_scenario(
    endpoint: str, api_key: str, state_dir: Path, model: str, modality: str, *, thinking: dict[str, Any] | None = None
) -> str:
    """Tell a secret word, force a reconnect, ask for it; returns the answer (asserts inside).
    ``thinking``: the setup's ``thinkingConfig`` (extended thinking): then a reply is over at
    the end of the interaction, not at the filler's IN_PROGRESS turnComplete."""
    word = random.choice(WORDS)
    cfg = Config(
        state_dir=state_dir,
        upstream=UpstreamConfig(endpoint=endpoint, api_key=Secret(api_key), connect_timeout=15, setup_timeout=20),
        session=SessionConfig(inactivity_timeout=0),
        backoff=BackoffPolicy(max_attempts=4),
    )
    setup_kw: dict[str, Any] = {"response_modalities": [modality]}
    if modality == "AUDIO":
        setup_kw["output_audio_transcription"] = True
    if thinking is not None:
        setup_kw["generation_config"] = {"thinkingConfig": thinking}
    setup = live.setup(model, **setup_kw)["setup"]
    interaction = thinking is not None

    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            dial = Dial(Endpoint.parse(cfg.upstream.endpoint), FixedKey(api_key), cfg.upstream.connect_timeout,
                        cfg.upstream.setup_timeout, cfg.upstream.max_message_size)
            registry = await start_core(nursery, cfg, dial, Metrics(), upstream_kind="gemini", records={})
            rec = _Recorder()
            await registry.open("live-test", setup)
            registry.attach("live-test", rec, 0)
            actor = registry.actor("live-test")

            def live_contexts() -> list[str | None]:
                return [s.get("context") for s in rec.statuses() if s["status"] == "live"]

            await rec.wait(lambda: actor.state is State.LIVE, "the session to go live")
            assert actor.state is State.LIVE, rec.statuses()

            start = len(rec.events)
            await registry.send("live-test", live.client_content(
                f"My secret word is {word}. Remember it. Reply with just the word OK."))
            await rec.wait(lambda: rec.turn_completed(start, interaction=interaction), "the reply to the first turn")
            # The server issues a resumable handle at the next quiet point: wait until one covers
            # the turn, so that the resume below must restore it.
            await rec.wait(lambda: actor.handle is not None and len(actor.buffer) == 0,
                           "a resumable handle covering the first turn")

            assert actor.force_reconnect("live test: forced reconnect") is True
            await rec.wait(lambda: live_contexts()[1:] == ["restored"], "the resume (live, context restored)")

            start = len(rec.events)
            await registry.send("live-test", live.client_content(
                "What is my secret word? Answer with the word only."))
            await rec.wait(lambda: rec.turn_completed(start, interaction=interaction), "the reply to the question")
            answer = rec.text(start)
            if interaction:  # what the real service sends is worth seeing (UNCONFIRMED details)
                print(f"[live] {model}: interactionStatus of each turnComplete: {rec.statuses_sent(start)}")
            assert word in answer.lower(), f"the model answered {answer!r}; the secret word was {word!r}"
            assert not any(e.method == "session.context_lost" for e in rec.events)

            await registry.close("live-test")
            assert not (cfg.state_dir / "live-test.ckpt").exists()
            nursery.cancel_scope.cancel()
    return answer
