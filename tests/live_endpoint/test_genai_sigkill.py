"""Acceptance (#12): the google-genai client, holding the last ``newHandle`` it got, reconnects after
geminid (a real subprocess) was killed with SIGKILL and restarted on the same port and state dir,
and the conversation continues: the fake's turn numbers and ``recall`` prove it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
import trio
from live_harness import MODEL, LiveDaemon, genai_client, until_turn_complete

genai = pytest.importorskip("google.genai")
from google.genai import errors, types  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(handle: str | None) -> types.LiveConnectConfig:
    return types.LiveConnectConfig(response_modalities=["TEXT"],
                                   session_resumption=types.SessionResumptionConfig(handle=handle))


async def _say(s: Any, text: str) -> tuple[str, str | None]:
    await s.send_client_content(turns=types.Content(role="user", parts=[types.Part(text=text)]),
                                turn_complete=True)
    reply, _, handle = await until_turn_complete(s)
    return reply, handle


async def test_genai_resumes_after_geminid_was_sigkilled(tmp_path, fake):
    proc = LiveDaemon(tmp_path, fake.url(), port=_free_port())
    handle_known = threading.Event()
    restarted = threading.Event()
    seen: dict[str, Any] = {}

    async def client_side(client: Any) -> None:
        handle = None
        async with client.aio.live.connect(model=MODEL, config=_config(None)) as s:
            for word in ("my name is Ada", "I like tea"):
                reply, h = await _say(s, word)
                seen.setdefault("replies", []).append(reply)
                handle = h or handle
            seen["handle"] = handle
            handle_known.set()
            try:  # geminid dies under this receive: the SDK raises, as it does on any drop
                async for _msg in s.receive():
                    pass
            except errors.APIError as exc:
                seen["drop"] = exc.code
        await asyncio.to_thread(restarted.wait, 120)
        async with client.aio.live.connect(model=MODEL, config=_config(handle)) as s:
            reply, _ = await _say(s, "please recall")
            seen["replies"].append(reply)

    try:
        live = await proc.start_live()
        client = genai_client(live, proc.token())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, lambda: asyncio.run(client_side(client)))
            await trio.to_thread.run_sync(handle_known.wait, 120)
            await proc.kill9()
            live_again = await proc.start_live()
            assert live_again["base_url"] == live["base_url"]  # same port, same token, same CA
            restarted.set()
    finally:
        restarted.set()
        await proc.aclose()
    assert seen["handle"].startswith("gmdh-")
    assert seen.get("drop") == 1006
    assert seen["replies"][:2] == ['turn 1: heard "my name is Ada".',
                                   'turn 2: heard "I like tea"; previous "my name is Ada".']
    assert seen["replies"][2] == ('turn 3: heard "please recall"; previous "I like tea"; '
                                  'recall ["my name is Ada", "I like tea"].')
