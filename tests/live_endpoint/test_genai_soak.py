"""Acceptance (#12), the fault soak: google-genai 3.6.1's own live client, configured only through
public options, holds one Live session on geminid's TCP+TLS endpoint for N turns (text, audio with
input transcription, tool calls), replies in TEXT, or in AUDIO with output transcription, while the upstream fake drops connections, closes them 1011,
sends goAway and expires them (short lifetimes) every few seconds.

What must hold: no exception in the SDK (a drop it saw would raise ``APIError``), every turn
answered exactly once (one reply, its text whole, one turnComplete; in a tool turn one call, and
a second only after ``toolCallCancellation`` of one the client had not answered yet: a lost call
it had answered, asked again alike, geminid answers itself with the client's response),
and the conversation kept throughout: the fake numbers its turns over the whole conversation and
quotes the previous user turn, and every 10th text turn asks it to ``recall`` every earlier user
turn, so a lost or duplicated turn or a restarted context shows in the replies themselves.

CI form: ``GEMINID_LIVE_SOAK_TURNS`` (default 200) turns, faults every
``GEMINID_LIVE_SOAK_GAP`` (default 0.5) seconds on average, ``GEMINID_LIVE_SOAK_SEED`` (default 0)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from live_harness import MODEL, LiveDaemon, genai_client, run_asyncio

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.fake.faults import Fault
from geminid.daemon.fake.model import pcm_for_text, split_chunks

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

TURNS = int(os.environ.get("GEMINID_LIVE_SOAK_TURNS", "200"))
MEAN_GAP = float(os.environ.get("GEMINID_LIVE_SOAK_GAP", "0.5"))
SEED = int(os.environ.get("GEMINID_LIVE_SOAK_SEED", "0"))
#: The SDK waits at most this long for one turn (a hang fails the test instead of blocking it).
TURN_TIMEOUT = 60.0
FAULT_1011 = ("Internal error encountered.", "The service is currently unavailable.")
#: 100 ms of 16 kHz 16-bit mono PCM.
CHUNK = b"\x01\x00" * 1600
AUDIO_CHUNKS = 4
#: Reply chunks of the fake (each a text or an audio frame with its transcription).
CHUNKS = 3

#: The daemon's timers scaled to a loopback fake: fast retries, goAway honoured at once, a
#: rotation budget that lifetimes of a few seconds do not exhaust (tests/soak uses the same).
SOAK_TOML = """
[backoff]
initial = 0.05
cap = 0.4
stable_after = 0.5
quick_failure = 0.1
max_attempts = 100000
rotation_limit = 6
rotation_window = 2.0
[upstream]
connect_timeout = 3
setup_timeout = 3
[session]
goaway_margin = 0.2
audio_staleness = 5.0
inactivity_timeout = 0
"""

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="The weather in a city.", behavior=types.Behavior.BLOCKING,
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
)


def _config(modality: str) -> types.LiveConnectConfig:
    return types.LiveConnectConfig(
        response_modalities=[modality],
        session_resumption=types.SessionResumptionConfig(),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig() if modality == "AUDIO" else None,
        tools=[types.Tool(function_declarations=[WEATHER])],
        system_instruction="You are a test.",
    )


def _kind(i: int) -> str:
    return ("text", "audio", "tool")[i % 3]


def _text_of(i: int) -> str:
    word = f"t{i}"
    if _kind(i) == "tool":
        return f"weather in city {word}"
    return f"recall {word}" if i % 10 == 0 else f"say {word}"


async def _drive(client: Any, turns: int, modality: str) -> list[dict[str, Any]]:
    """The SDK's side (asyncio, in a thread): one connection for every turn."""
    out: list[dict[str, Any]] = []
    async with client.aio.live.connect(model=MODEL, config=_config(modality)) as s:
        for i in range(1, turns + 1):
            kind = _kind(i)
            rec: dict[str, Any] = {"i": i, "kind": kind, "text": "", "turn_completes": 0,
                                   "tool_calls": 0, "transcripts": [], "go_away": 0,
                                   "called": [], "cancelled": [], "audio": 0}
            if kind == "audio":
                for _ in range(AUDIO_CHUNKS):
                    await s.send_realtime_input(
                        audio=types.Blob(data=CHUNK, mime_type="audio/pcm;rate=16000"))
                    await asyncio.sleep(0.02)
                await s.send_realtime_input(audio_stream_end=True)
            else:
                await s.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text=_text_of(i))]),
                    turn_complete=True)

            async def one_turn(rec: dict[str, Any] = rec) -> None:
                async for msg in s.receive():
                    sc = msg.server_content
                    if msg.go_away is not None:
                        rec["go_away"] += 1
                    if msg.tool_call_cancellation is not None:
                        rec["cancelled"] += list(msg.tool_call_cancellation.ids or [])
                    if msg.tool_call is not None:
                        rec["tool_calls"] += 1
                        rec["called"] += [fc.id for fc in msg.tool_call.function_calls or []]
                        await s.send_tool_response(function_responses=[
                            types.FunctionResponse(id=fc.id, name=fc.name,
                                                   response={"sky": f"clear-{rec['i']}"})
                            for fc in msg.tool_call.function_calls or []])
                    if sc is None:
                        continue
                    if sc.input_transcription is not None and sc.input_transcription.text:
                        rec["transcripts"].append(sc.input_transcription.text)
                    if sc.model_turn is not None:
                        rec["text"] += "".join(p.text or "" for p in sc.model_turn.parts or [])
                        rec["audio"] += sum(len(p.inline_data.data or b"") for p in sc.model_turn.parts or []
                                            if p.inline_data is not None)
                    if sc.output_transcription is not None and sc.output_transcription.text:
                        rec["text"] += sc.output_transcription.text  # AUDIO: the reply's words
                    if sc.turn_complete:
                        rec["turn_completes"] += 1

            await asyncio.wait_for(one_turn(), TURN_TIMEOUT)
            out.append(rec)
    return out


def _expected(i: int, user_turns: list[str]) -> str:
    """The fake's reply to turn ``i`` (daemon/fake/model.py), given the earlier user turns."""
    kind = _kind(i)
    if kind == "tool":
        return f'turn {i}: get_weather returned {{"sky":"clear-{i}"}}.'
    heard = f"({AUDIO_CHUNKS * 100} ms of audio)" if kind == "audio" else _text_of(i)
    text = f'turn {i}: heard "{heard}"'
    if user_turns:
        text += f'; previous "{user_turns[-1]}"'
    if "recall" in heard:
        text += "; recall [" + ", ".join(f'"{u}"' for u in user_turns) + "]"
    return text + "."


class Faults:
    """Every few seconds, one fault on the fake's open connection: a drop, a 1011 close or a
    goAway (the short lifetime adds the expiries)."""

    def __init__(self, fake: FakeUpstream, rng: random.Random, mean_gap: float) -> None:
        self.fake, self.rng, self.mean_gap = fake, rng, mean_gap
        self.counts: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            await trio.sleep(self.rng.uniform(0.4, 1.6) * self.mean_gap)
            conns = self.fake.open_sessions()
            if not conns:
                continue
            conn = self.rng.choice(conns)
            kind = self.rng.choice(("drop", "close_1011", "goaway"))
            if kind == "drop":
                conn.drop_now(rst=self.rng.random() < 0.3)
            elif kind == "close_1011":
                conn.queue_fault(Fault.close(1011, self.rng.choice(FAULT_1011)))
            else:
                conn.queue_fault(Fault.goaway(self.rng.uniform(0.2, 1.0)))
            self.counts[kind] += 1


def _audio_bytes(reply: str) -> int:
    """What the fake speaks for ``reply`` (daemon/fake/model.py pcm_for_text, per chunk)."""
    return sum(len(pcm_for_text(c)) for c in split_chunks(reply, CHUNKS))


@pytest.mark.parametrize("modality", ["TEXT", "AUDIO"])
async def test_genai_soak_under_upstream_faults(tmp_path: Path, nursery: trio.Nursery, modality: str) -> None:
    fake = await nursery.start(FakeUpstream(FakeOptions(
        catalogue=text_catalogue(), reply_pace=0.002, reply_chunks=CHUNKS, lifetime=4.0, goaway_before=1.0,
        seed=SEED,
    )).serve)
    conf = tmp_path / "geminid.toml"
    conf.write_text(SOAK_TOML)
    proc = LiveDaemon(tmp_path, fake.url(), args=["--config", str(conf)])
    faults = Faults(fake, random.Random(SEED), MEAN_GAP)
    try:
        live = await proc.start_live()
        client = genai_client(live, proc.token())
        started = time.monotonic()
        async with trio.open_nursery() as inner:
            inner.start_soon(faults.run)
            records = await run_asyncio(_drive, client, TURNS, modality)
            inner.cancel_scope.cancel()
        took = time.monotonic() - started
        # the SDK's connection has ended: geminid logs what it hid (and proves it had faults)
        with trio.fail_after(30):
            while not proc.events("live.client_disconnected"):
                await trio.sleep(0.05)
        hid = proc.events("live.client_disconnected")[0]
    finally:
        await proc.aclose()
    print(f"\nhidden by geminid: {hid.get('repeats_hidden')} repeated reply frames, "
          f"{hid.get('restarts_shown')} restarts shown, {hid.get('tool_answers_reused')} tool answers reused")
    print(f"\nlive soak ({modality}): {TURNS} turns in {took:.1f} s, faults {dict(faults.counts)}, "
          f"upstream connections {len(fake.accepted)}, "
          f"calls cancelled {sum(len(r['cancelled']) for r in records)}")
    user_turns: list[str] = []
    problems = []
    for rec in records:
        i = rec["i"]
        want = _expected(i, user_turns)
        if rec["text"] != want:
            problems.append(f"turn {i} ({rec['kind']}): got {rec['text']!r}, want {want!r}")
        if modality == "AUDIO" and rec["audio"] != _audio_bytes(want):
            problems.append(f"turn {i}: {rec['audio']} bytes of audio, want {_audio_bytes(want)}")
        if modality == "TEXT" and rec["audio"]:
            problems.append(f"turn {i}: audio in a TEXT session")
        if rec["turn_completes"] != 1:
            problems.append(f"turn {i}: {rec['turn_completes']} turnCompletes")
        # A call lost to a reconnect is cancelled (toolCallCancellation, the service's own way)
        # and the model asks again: one call stands, every other one was cancelled.
        if rec["kind"] == "tool" and (rec["tool_calls"] != 1 + len(rec["cancelled"])
                                      or not set(rec["cancelled"]) <= set(rec["called"])):
            problems.append(f"turn {i}: calls {rec['called']}, cancelled {rec['cancelled']}")
        if rec["kind"] != "tool" and (rec["tool_calls"] or rec["cancelled"]):
            problems.append(f"turn {i}: calls {rec['called']}, cancelled {rec['cancelled']}")
        if rec["kind"] == "audio" and rec["transcripts"] != [f"({AUDIO_CHUNKS * 100} ms of audio)"]:
            problems.append(f"turn {i}: input transcriptions {rec['transcripts']}")
        if rec["go_away"]:
            problems.append(f"turn {i}: the upstream's goAway reached the client")
        if rec["kind"] != "tool":
            user_turns.append(f"({AUDIO_CHUNKS * 100} ms of audio)" if rec["kind"] == "audio"
                              else _text_of(i))
        else:
            user_turns.append(_text_of(i))
    assert len(records) == TURNS
    assert not problems, "\n".join(problems[:20])
    # The faults happened while the turns ran: every fault (and every expiry) cost a connection.
    assert sum(faults.counts.values()) >= max(3, int(took / MEAN_GAP / 3))
    assert len(fake.accepted) >= sum(faults.counts.values())
    assert proc.token() not in proc.output()
