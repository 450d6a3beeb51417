"""Routing and authentication at the HTTP upgrade, over loopback."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from geminid.daemon.fake import routing
from geminid.daemon.fake.routing import ws_path

from .helpers import connect


async def _status(fake, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The HTTP status of an upgrade attempt: 101 if accepted."""
    stream = await trio.open_tcp_stream("127.0.0.1", fake.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", path, extra_headers=headers)
            await ws.aclose()
            return 101
    except BaseExceptionGroup as group:
        # With a body, trio-websocket raises it from its reader task, inside the nursery.
        rejected, rest = group.split(ConnectionRejected)
        if rest is not None or rejected is None:
            raise
        return rejected.exceptions[0].status_code
    finally:
        await trio.aclose_forcefully(stream)


KEY = [(b"x-goog-api-key", b"k")]


@pytest.mark.parametrize(
    "path",
    [
        ws_path("v1beta"),
        ws_path("v1alpha"),
        ws_path("v1alpha", constrained=True),
        ws_path("v1beta", constrained=True),
        "/" + ws_path("v1beta"),  # the SDK's //ws/
        ws_path("v1beta1", vertex=True),
        ws_path("v1", vertex=True),
    ],
)
async def test_known_paths_upgrade(start_fake, path):
    fake = await start_fake()
    assert await _status(fake, path, KEY) == 101
    assert fake.connections[-1].accepted


@pytest.mark.parametrize(
    "path",
    [
        "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent",
        "/",
        "/ws/",
        "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/Other",
    ],
)
async def test_other_paths_404(start_fake, path):
    fake = await start_fake()
    assert await _status(fake, path, KEY) == 404
    assert fake.dials == 1 and not fake.connections[0].accepted


async def test_key_in_header_or_query(start_fake):
    fake = await start_fake(api_key="secret")
    assert await _status(fake, ws_path(), [(b"x-goog-api-key", b"secret")]) == 101
    assert await _status(fake, ws_path() + "?key=secret", []) == 101
    assert await _status(fake, ws_path() + "?alt=x&key=secret", []) == 101
    assert await _status(fake, ws_path(constrained=True) + "?access_token=secret", []) == 101
    assert await _status(fake, ws_path(constrained=True), [(b"authorization", b"Token secret")]) == 101
    assert await _status(fake, ws_path("v1beta1", vertex=True), [(b"Authorization", b"Bearer secret")]) == 101


async def test_wrong_or_missing_key_refused(start_fake):
    fake = await start_fake(api_key="secret")
    assert await _status(fake, ws_path(), [(b"x-goog-api-key", b"nope")]) == 403
    assert await _status(fake, ws_path() + "?key=nope", []) == 403
    assert await _status(fake, ws_path(), []) == 401
    assert await _status(fake, ws_path() + "?key=", []) == 401
    assert [r.auth_ok for r in fake.connections] == [False] * 4
    assert fake.dials == 4


async def test_any_nonempty_key_without_configured_key(start_fake):
    fake = await start_fake(api_key=None)
    assert await _status(fake, ws_path(), [(b"x-goog-api-key", b"whatever")]) == 101
    assert await _status(fake, ws_path(), []) == 401


async def test_refuse_next_then_accept(start_fake):
    fake = await start_fake()
    fake.refuse_next(2, status=503)
    fake.refuse_next(1, status=429)
    assert [await _status(fake, ws_path(), KEY) for _ in range(4)] == [503, 503, 429, 101]
    assert fake.dials == 4
    assert [r.status for r in fake.connections] == [503, 503, 429, 101]


async def test_url_and_connect(start_fake):
    fake = await start_fake()
    assert fake.url() == f"ws://127.0.0.1:{fake.port}{ws_path()}"
    assert fake.url(vertex=True).endswith("/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent")
    async with connect(fake) as client:
        await client.setup()
    assert fake.connections[0].route == "developer"


def test_split_target_normalises():
    assert routing.split_target("//ws//a?key=1&key=2") == ("/ws/a", {"key": ["1", "2"]})
    assert routing.route("/nothing") is None
    assert routing.auth_status([], None) == 401
    assert routing.auth_status(["a"], "b") == 403
    assert routing.auth_status(["a", "b"], "b") is None
