"""Framing (binary frames, {} frames) and validation of client messages (1007)."""

from __future__ import annotations

import json

from geminid.daemon.fake.routing import ws_path
from geminid.protocol import live

from .helpers import MODEL, connect


async def test_server_sends_binary_frames_and_empty_frames(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL))
        first = await client.recv(keep_empty=True)  # recv asserts the frame is binary
        assert first == {"setupComplete": {}}
        assert await client.recv(keep_empty=True) == {}
        assert await client.recv(keep_empty=True) == {}
        await client.say("hi")
        await client.turn()
        assert client.empty_frames >= 1
    assert {} in fake.connections[0].sent


async def test_empty_frames_switchable(start_fake):
    fake = await start_fake(empty_frames=False)
    async with connect(fake) as client:
        await client.setup()
        await client.say("hi")
        await client.turn()
        assert client.empty_frames == 0
    assert {} not in fake.connections[0].sent


async def test_text_and_binary_client_frames_and_both_casings(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        # snake_case setup in a binary frame
        await client.send(json.dumps({"setup": {"model": MODEL, "generation_config": {"response_modalities": ["TEXT"]}}}).encode())
        assert "setupComplete" in await client.recv()
        # google-genai's mix of casings, in a text frame
        await client.send(
            json.dumps({"client_content": {"turns": [{"role": "user", "parts": [{"text": "x"}]}], "turnComplete": True}})
        )
        msgs = await client.turn()
        assert any("modelTurn" in m.get("serverContent", {}) for m in msgs)
    kinds = fake.connections[0].client_kinds()
    assert kinds == ["setup", "clientContent"]
    assert fake.connections[0].setup == {"setup": {"model": MODEL, "generationConfig": {"responseModalities": ["TEXT"]}}}


async def test_message_before_setup_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.say("too early")
        code, reason = await client.closed()
    assert code == 1007
    assert "setup" in reason
    assert fake.connections[0].closed_by == "server"
    assert fake.connections[0].close_code == 1007


async def test_unknown_field_closes_1007_with_server_reason(start_fake):
    fake = await start_fake()
    bad = {"setup": {"model": MODEL, "bogus": 1}}
    async with connect(fake) as client:
        await client.send(bad)
        code, reason = await client.closed()
    assert code == 1007
    try:
        live.validate_client_message(bad)
    except live.LiveValidationError as exc:
        expected = exc.server_reason()
    assert reason == expected
    assert 'Unknown name "bogus"' in reason
    assert fake.connections[0].invalid == bad


async def test_unknown_field_after_setup_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.send({"clientContent": {"turns": [], "turnComplete": True, "x": 1}})
        code, reason = await client.closed()
    assert code == 1007 and 'Unknown name "x"' in reason


async def test_missing_role_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.send({"clientContent": {"turns": [{"parts": [{"text": "no role"}]}], "turnComplete": True}})
        code, _ = await client.closed()
    assert code == 1007
    assert fake.connections[0].invalid is not None
    assert fake.conversations["c1"].user_turns == []


async def test_invalid_json_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.send("{not json")
        code, reason = await client.closed()
    assert code == 1007 and reason.startswith("Invalid JSON payload received.")


async def test_second_setup_closes_1007(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.setup()
        await client.send(live.setup(MODEL))
        code, _ = await client.closed()
    assert code == 1007


async def test_transparent_refused_on_developer_path(start_fake):
    fake = await start_fake()
    async with connect(fake) as client:
        await client.send(live.setup(MODEL, session_resumption={"transparent": True}))
        code, reason = await client.closed()
    assert code == 1007 and 'Unknown name "transparent"' in reason


async def test_transparent_accepted_on_vertex_path(start_fake):
    fake = await start_fake()
    async with connect(fake, path=ws_path("v1beta1", vertex=True)) as client:
        await client.setup(resumption={"transparent": True})
    assert fake.connections[0].close_code != 1007


async def test_transparent_accepted_with_option(start_fake):
    fake = await start_fake(transparent=True)
    async with connect(fake) as client:
        await client.setup(resumption={"transparent": True})
    assert fake.connections[0].close_code != 1007
