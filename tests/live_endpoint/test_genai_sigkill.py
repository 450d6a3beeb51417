"""Acceptance (#12): the google-genai client, holding the last ``newHandle`` it got, reconnects after
geminid (a real subprocess) was killed with SIGKILL and restarted on the same port and state dir,
and the conversation continues: the fake's turn numbers and ``recall`` prove it."""

from __future__ import annotations

import asyncio
import functools
import json
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


def _in_checkpoint(proc: LiveDaemon, needle: bytes) -> bool:
    """The checkpoint (plain JSON after its header) holds ``needle``: durable."""
    for path in proc.state_dir.glob("*.ckpt"):
        try:
            if needle in path.read_bytes():
                return True
        except FileNotFoundError:
            pass  # replaced under us: look again
    return False


def _config(handle: str | None) -> types.LiveConnectConfig:
    return types.LiveConnectConfig(response_modalities=["TEXT"],
                                   session_resumption=types.SessionResumptionConfig(handle=handle))


async def _say(s: Any, text: str) -> tuple[str, str | None]:
    await s.send_client_content(turns=types.Content(role="user", parts=[types.Part(text=text)]),
                                turn_complete=True)
    reply, _, handle = await until_turn_complete(s)
    return reply, handle


async def test_genai_resumes_after_geminid_was_sigkilled(tmp_path, fake):
    """The client keeps the last ``newHandle`` it got (the SDK's resumption pattern), here the one
    that follows turn 2's end; geminid is killed at once. The restarted daemon re-asks turns its
    checkpoint (up to ~1 s old) did not show as answered; the client, which saw their replies, is
    spared them: the next reply it gets answers its next turn."""
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
            try:  # geminid dies under this receive: the SDK raises, as it does on any drop
                async for msg in s.receive():
                    upd = msg.session_resumption_update
                    if upd and upd.resumable and upd.new_handle:  # the one after turn 2's end
                        handle = upd.new_handle
                        seen["handle"] = handle
                        handle_known.set()
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


async def test_a_reply_produced_before_the_client_came_back_reaches_it(tmp_path, nursery):
    """SIGKILL while a turn waits for its reply: the restarted geminid replays the turn, and the
    reply, produced before the client reconnected, should still reach it, once."""
    from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue

    fake = await nursery.start(FakeUpstream(FakeOptions(catalogue=text_catalogue(), reply_pace=0.5)).serve)
    proc = LiveDaemon(tmp_path, fake.url(), port=_free_port())
    handle_known, sent, restarted = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    async def client_side(client: Any) -> None:
        async with client.aio.live.connect(model=MODEL, config=_config(None)) as s:
            reply, handle = await _say(s, "my name is Ada")
            seen["first"], seen["handle"] = reply, handle
            handle_known.set()
            await s.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="I like tea")]),
                                        turn_complete=True)
            sent.set()
            try:
                async for msg in s.receive():  # the last newHandle it gets: the one after turn 1's end
                    upd = msg.session_resumption_update
                    if upd and upd.resumable and upd.new_handle:
                        seen["handle"] = upd.new_handle
            except errors.APIError as exc:
                seen["drop"] = exc.code
        await asyncio.to_thread(restarted.wait, 120)
        async with client.aio.live.connect(model=MODEL, config=_config(seen["handle"])) as s:
            text, _, _ = await asyncio.wait_for(until_turn_complete(s), 10)
            seen["second"] = text

    try:
        live = await proc.start_live()
        client = genai_client(live, proc.token())
        async with trio.open_nursery() as inner:
            inner.start_soon(functools.partial(
                trio.to_thread.run_sync, lambda: asyncio.run(client_side(client)), abandon_on_cancel=True))
            await trio.to_thread.run_sync(sent.wait, 120)
            with trio.fail_after(20):  # the fake has the turn: geminid wrote it upstream...
                while sum(1 for r in fake.accepted for m in r.messages if "clientContent" in m) < 2:
                    await trio.sleep(0.01)
                # ...and it is durable: a turn goes upstream at once, in parallel with its checkpoint
                # write (a Live client gets no ack: one killed before the write is lost, by design)
                while not _in_checkpoint(proc, b"I like tea"):
                    await trio.sleep(0.01)
            await proc.kill9()
            with trio.fail_after(20):  # the restarted daemon answers the turn before the client is back
                await proc.start_live()
                while sum(1 for r in fake.accepted for m in r.messages if "clientContent" in m) < 3:
                    await trio.sleep(0.01)
                await trio.sleep(2.5)  # reply_pace 0.5 s x 3 chunks + the end: the reply is done
            restarted.set()
    finally:
        restarted.set()
        await proc.aclose()
    assert seen["first"] == 'turn 1: heard "my name is Ada".'
    assert seen.get("drop") == 1006
    assert seen["second"] == 'turn 2: heard "I like tea"; previous "my name is Ada".'


def _answered_on_disk(proc: LiveDaemon) -> int:
    try:
        data = json.loads((proc.state_dir / "live_handles.json").read_text())
    except (OSError, ValueError):
        return 0
    return max((rec.get("answered", 0) for rec in data.get("seen", {}).values()), default=0)


async def test_a_client_holding_an_older_handle_is_spared_replies_it_saw(tmp_path, fake):
    """A client that kept the handle it got at setup (not the later ones): what it saw is in
    ``live_handles.json``, recorded at each reply end. Once turn 2's end is recorded, geminid is
    killed; the restarted daemon may re-ask turns 1 and 2 (its upstream handle is up to ~1 s old);
    the client, back with its old handle, gets no reply twice: the next one answers turn 3."""
    proc = LiveDaemon(tmp_path, fake.url(), port=_free_port())
    ready, restarted = threading.Event(), threading.Event()
    seen: dict[str, Any] = {"replies": []}

    async def client_side(client: Any) -> None:
        async with client.aio.live.connect(model=MODEL, config=_config(None)) as s:
            for word in ("my name is Ada", "I like tea"):
                reply, h = await _say(s, word)
                seen["replies"].append(reply)
                seen.setdefault("handle", h)  # the first one: given at setup, before any reply
            ready.set()
            try:
                async for _msg in s.receive():
                    pass
            except errors.APIError as exc:
                seen["drop"] = exc.code
        await asyncio.to_thread(restarted.wait, 120)
        async with client.aio.live.connect(model=MODEL, config=_config(seen["handle"])) as s:
            reply, _ = await _say(s, "please recall")
            seen["replies"].append(reply)

    try:
        live = await proc.start_live()
        client = genai_client(live, proc.token())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(  # (abandoned on a failure: the client may be blocked)
                trio.to_thread.run_sync, lambda: asyncio.run(client_side(client)), abandon_on_cancel=True))
            await trio.to_thread.run_sync(ready.wait, 120)
            with trio.fail_after(20):  # turn 2's end is recorded (seqs: turn 1 is 1, turn 2 is 2)
                while _answered_on_disk(proc) < 2:
                    await trio.sleep(0.01)
            await proc.kill9()
            await proc.start_live()
            restarted.set()
    finally:
        restarted.set()
        await proc.aclose()
    assert "." not in seen["handle"]  # an older handle: it says nothing of what was seen
    assert seen.get("drop") == 1006
    assert seen["replies"] == ['turn 1: heard "my name is Ada".',
                               'turn 2: heard "I like tea"; previous "my name is Ada".',
                               'turn 3: heard "please recall"; previous "I like tea"; '
                               'recall ["my name is Ada", "I like tea"].']
