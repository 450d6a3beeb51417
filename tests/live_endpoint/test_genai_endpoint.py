"""Acceptance (#12): google-genai 3.6.1's own live client, configured only through public options,
talks to geminid's TCP+TLS Live endpoint (local token, self-signed CA) as if it were Google."""

from __future__ import annotations

import pytest
from daemon_proc import SENTINEL_KEY
from live_harness import MODEL, LiveDaemon, genai_client, run_asyncio, until_turn_complete

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402


def _config(handle: str | None = None) -> types.LiveConnectConfig:
    return types.LiveConnectConfig(
        response_modalities=["TEXT"],
        session_resumption=types.SessionResumptionConfig(handle=handle),
        system_instruction="You are a test.",
    )


async def test_genai_turns_and_resume_with_local_handle(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url())
    try:
        live = await proc.start_live()
        assert live["base_url"].startswith("https://127.0.0.1:")
        client = genai_client(live, proc.token())

        async def first() -> tuple[list[str], str]:
            texts, handle = [], None
            async with client.aio.live.connect(model=MODEL, config=_config()) as s:
                for word in ("my name is Ada", "and I like tea"):
                    await s.send_client_content(
                        turns=types.Content(role="user", parts=[types.Part(text=word)]), turn_complete=True)
                    text, _, h = await until_turn_complete(s)
                    texts.append(text)
                    handle = h or handle
            assert handle is not None
            return texts, handle

        texts, handle = await run_asyncio(first)
        assert texts == ['turn 1: heard "my name is Ada".',
                         'turn 2: heard "and I like tea"; previous "my name is Ada".']
        assert handle.startswith("gmdh-")
        # A local handle: not the server's (the fake's are "fake-c1-..."), not the key.
        assert fake.handles.entry(handle) is None and "fake-" not in handle and SENTINEL_KEY not in handle

        async def again() -> str:
            async with client.aio.live.connect(model=MODEL, config=_config(handle)) as s:
                await s.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="please recall")]), turn_complete=True)
                text, _, _ = await until_turn_complete(s)
                return text

        recalled = await run_asyncio(again)
        assert recalled.startswith("turn 3:") and '"my name is Ada"' in recalled
        assert SENTINEL_KEY not in proc.output()
        assert proc.token() not in proc.output()
    finally:
        await proc.aclose()
