"""Acceptance (#12): a raw WebSocket client (the ``websockets`` package, no SDK) completes a turn
against geminid's Live endpoint, speaking BidiGenerateContent by hand exactly as it would to
Google: on the TCP listener (TLS with the endpoint's ``ca_file``, the local token as
``x-goog-api-key`` or ``?key=``), and on the Unix socket (no token: peer credentials)."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
import trio
from daemon_proc import SENTINEL_KEY
from live_harness import MODEL, LiveDaemon

from geminid.daemon.live.handles import split_seen
from geminid.daemon.live.paths import parse_target
from geminid.protocol import live

pytest.importorskip("websockets")
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect, unix_connect  # noqa: E402

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = {"setup": {"model": f"models/{MODEL}", "generationConfig": {"responseModalities": ["TEXT"]},
                   "systemInstruction": {"parts": [{"text": "You are a test."}]}}}


def turn(text: str) -> str:
    return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}],
                                         "turnComplete": True}})


def converse(ws: ClientConnection, texts: list[str], *, setup: dict[str, Any] = SETUP
             ) -> tuple[list[dict[str, Any]], list[str]]:
    """Setup, then one turn per text; (every server message, the answer of each turn)."""
    ws.send(json.dumps(setup))
    seen: list[dict[str, Any]] = []
    answers: list[str] = []

    def until(pred: Any) -> None:
        while True:
            raw = ws.recv(timeout=60)
            msg = json.loads(raw)  # text or binary frames: JSON either way
            seen.append(msg)
            if pred(msg):
                return

    until(lambda m: "setupComplete" in m)
    for text in texts:
        ws.send(turn(text))
        parts: list[str] = []

        def done(m: dict[str, Any], parts: list[str] = parts) -> bool:
            sc = m.get("serverContent") or {}
            parts += [p.get("text", "") for p in (sc.get("modelTurn") or {}).get("parts", [])]
            return bool(sc.get("turnComplete"))

        until(done)
        answers.append("".join(parts))
    # The fresh resumption update that follows every turnComplete, as the service sends it.
    until(lambda m: "sessionResumptionUpdate" in m)
    return seen, answers


def handles(seen: list[dict[str, Any]]) -> list[str]:
    return [m["sessionResumptionUpdate"]["newHandle"] for m in seen
            if m.get("sessionResumptionUpdate", {}).get("resumable")]


async def test_raw_websockets_turn_over_tls_with_the_local_token(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        ctx = ssl.create_default_context(cafile=live["ca_file"])
        url = live["base_url"].replace("https://", "wss://") + PATH
        token = proc.token()

        def client() -> tuple[list[dict[str, Any]], list[str]]:
            with connect(url, ssl=ctx, additional_headers={"x-goog-api-key": token}) as ws:
                return converse(ws, ["my name is Ada", "and I like tea"])

        seen, answers = await trio.to_thread.run_sync(client)
        assert answers == ['turn 1: heard "my name is Ada".',
                           'turn 2: heard "and I like tea"; previous "my name is Ada".']
        assert "setupComplete" in seen[0]
        # One session handle; each update after a reply end adds what the client had seen.
        [base] = {split_seen(h)[0] for h in handles(seen)}
        handle = handles(seen)[-1]
        assert [split_seen(h)[1] for h in handles(seen)] == [0, 1, 2]
        assert base.startswith("gmdh-") and fake.handles.entry(base) is None
        # Each server message once: exactly one turnComplete per turn, none of the upstream's own
        # connection messages (its setupComplete, its fake- handles) leak through.
        assert sum(1 for m in seen if (m.get("serverContent") or {}).get("turnComplete")) == 2
        assert sum(1 for m in seen if "setupComplete" in m) == 1
        assert not any("fake-" in json.dumps(m) for m in seen)

        # Back with the local handle in setup.sessionResumption (and the token as ?key=).
        resumed = {"setup": {**SETUP["setup"], "sessionResumption": {"handle": handle}}}

        def again() -> list[str]:
            with connect(f"{url}?key={token}", ssl=ctx) as ws:
                return converse(ws, ["please recall"], setup=resumed)[1]

        [recalled] = await trio.to_thread.run_sync(again)
        assert recalled.startswith("turn 3:") and '"my name is Ada"' in recalled
        assert token not in proc.output() and SENTINEL_KEY not in proc.output()
    finally:
        await proc.aclose()


async def test_raw_websockets_wrong_or_missing_token_is_refused_at_the_upgrade(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        ctx = ssl.create_default_context(cafile=live["ca_file"])
        url = live["base_url"].replace("https://", "wss://") + PATH

        def status(headers: dict[str, str]) -> int:
            try:
                with connect(url, ssl=ctx, additional_headers=headers):
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        assert await trio.to_thread.run_sync(status, {}) == 401
        assert await trio.to_thread.run_sync(status, {"x-goog-api-key": "gmdl-wrong"}) == 403
        # The real API key is not the local token either.
        assert await trio.to_thread.run_sync(status, {"x-goog-api-key": SENTINEL_KEY}) == 403
        assert await trio.to_thread.run_sync(status, {"x-goog-api-key": proc.token()}) == 101
    finally:
        await proc.aclose()


async def test_raw_websockets_turn_on_the_unix_socket_named_session(tmp_path, fake):
    """The Unix listener needs no token (peer credentials), and the JavaScript SDK's doubled
    slash (``<base_url>/`` + ``/ws/...``) is served like Google serves it."""
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        sock = live["socket"]
        assert sock is not None

        def client() -> list[str]:
            with unix_connect(sock, uri=f"ws://localhost/sessions/desk/{PATH}") as ws:
                return converse(ws, ["hello over unix"])[1]

        assert await trio.to_thread.run_sync(client) == ['turn 1: heard "hello over unix".']
        from geminid.protocol.client import open_client

        async with open_client(proc.sock_path) as c:
            assert "desk" in [s["session"] for s in await c.sessions()]
    finally:
        await proc.aclose()


async def test_raw_websockets_audio_turn_with_transcriptions(tmp_path, fake):
    """AUDIO in and out: 16 kHz PCM chunks and audioStreamEnd from the client; inline audio,
    input and output transcriptions back, each once, through the TLS endpoint."""
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live_info = await proc.start_live()
        ctx = ssl.create_default_context(cafile=live_info["ca_file"])
        url = live_info["base_url"].replace("https://", "wss://") + PATH
        token = proc.token()
        setup = {"setup": {"model": f"models/{MODEL}",
                           "generationConfig": {"responseModalities": ["AUDIO"]},
                           "inputAudioTranscription": {}, "outputAudioTranscription": {}}}
        chunk = bytes(640)  # 20 ms of silence at 16 kHz, 16-bit mono

        def client() -> list[dict[str, Any]]:
            with connect(url, ssl=ctx, additional_headers={"x-goog-api-key": token}) as ws:
                ws.send(json.dumps(setup))
                seen = []
                while "setupComplete" not in (msg := json.loads(ws.recv(timeout=60))):
                    seen.append(msg)
                for _ in range(25):  # 500 ms
                    ws.send(json.dumps(live.realtime_audio(chunk)))
                ws.send(json.dumps(live.audio_stream_end()))
                while True:
                    msg = json.loads(ws.recv(timeout=60))
                    seen.append(msg)
                    if (msg.get("serverContent") or {}).get("turnComplete"):
                        return seen

        seen = await trio.to_thread.run_sync(client)
        contents = [m["serverContent"] for m in seen if "serverContent" in m]
        heard = "".join(c["inputTranscription"]["text"] for c in contents if "inputTranscription" in c)
        said = "".join(c["outputTranscription"]["text"] for c in contents if "outputTranscription" in c)
        audio = [p["inlineData"] for c in contents for p in (c.get("modelTurn") or {}).get("parts", [])
                 if "inlineData" in p]
        assert "500 ms" in heard, heard
        assert said.startswith("turn 1: heard") and "500 ms" in said, said
        assert audio and all(a["mimeType"].startswith("audio/pcm") for a in audio)
        assert sum(1 for c in contents if c.get("turnComplete")) == 1
    finally:
        await proc.aclose()


@pytest.mark.parametrize(("target", "version", "session", "key"), [
    (PATH, "v1beta", None, None),
    ("/" + PATH + "?key=k", "v1beta", None, "k"),  # the JS SDK: new URL(base).toString() + "/ws/..."
    ("/sessions/desk//" + PATH.replace("v1beta", "v1alpha"), "v1alpha", "desk", None),
    (PATH.replace("v1beta", "v1"), "v1", None, None),  # google-genai 3.x's default api_version
])
def test_paths_the_peers_dial_are_served(target: str, version: str, session: str | None,
                                         key: str | None) -> None:
    found = parse_target(target)
    assert found is not None
    assert (found.version, found.session, found.query.get("key")) == (version, session, key)


def test_paths_that_are_not_live_are_refused() -> None:
    assert parse_target("/ws/google.ai.generativelanguage.v1beta.GenerativeService.Other") is None
    assert parse_target("/v1beta/models") is None


def test_context_loss_opt_in_by_query_or_header() -> None:
    assert not parse_target(PATH).continue_on_context_loss
    assert parse_target(PATH + "?context_loss=continue").continue_on_context_loss
    header = [(b"X-Geminid-Context-Loss", b"Continue")]
    assert parse_target(PATH, header).continue_on_context_loss
    assert not parse_target(PATH, [(b"x-geminid-context-loss", b"close")]).continue_on_context_loss
