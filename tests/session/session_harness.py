"""Harness for session-core tests: the fake upstream, a real checkpoint store on disk, the
registry, and an event recorder. Behaviour tests dial the fake over real loopback TCP; tests
where time matters pass ``memory=True`` so the WebSocket runs over in-process streams and
MockClock's autojump cannot race real socket I/O (TRIO_NOTES.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from geminid.daemon import checkpoint
from geminid.daemon.checkpoint import CheckpointStore, decode_record
from geminid.daemon.config import Config, SessionConfig, UpstreamConfig
from geminid.daemon.events import Event
from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import SessionRegistry, start_core
from geminid.daemon.upstream import BackoffPolicy, Dial, Endpoint, FixedKey
from geminid.protocol import live

TEXT_SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]
TOOL_SETUP = live.setup(
    "gemini-3.8-live",
    response_modalities=["TEXT"],
    tools=[{"functionDeclarations": [{"name": "get_weather", "description": "weather for a city", "behavior": "BLOCKING"}]}],
)["setup"]
#: Extended thinking, audio with its transcription (fillers + IN_PROGRESS, then IDLE).
EXT_SETUP = live.setup(
    "gemini-3.8-live-extended-thinking",
    response_modalities=["AUDIO"],
    output_audio_transcription=True,
    generation_config={"thinkingConfig": {"thinkingLevel": "LOW"}},
)["setup"]


class Recorder:
    """An EventSink that keeps everything, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [e.params for e in self.events if e.method == method]

    def statuses(self) -> list[str]:
        return [p["status"] for p in self.of("session.status")]

    def messages(self) -> list[dict]:
        return [p["message"] for p in self.of("session.message")]

    def texts(self) -> str:
        out = []
        for m in self.messages():
            for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
                out.append(part.get("text", ""))
        return "".join(out)

    def turn_ends(self) -> int:
        return sum(1 for m in self.messages() if m.get("serverContent", {}).get("turnComplete"))

    async def wait(self, pred: Callable[[Recorder], bool], timeout: float = 10.0, step: float = 0.005) -> None:
        with trio.fail_after(timeout):
            while not pred(self):
                await trio.sleep(step)


@attrs.define
class Core:
    fake: FakeUpstream
    registry: SessionRegistry
    store: CheckpointStore
    cfg: Config
    nursery: trio.Nursery
    metrics: Metrics
    dials: list[str]

    async def open(self, name: str = "s", setup: dict | None = None) -> Recorder:
        rec = Recorder()
        await self.registry.open(name, setup or TEXT_SETUP)
        self.registry.attach(name, rec, 0)
        return rec

    async def say(self, name: str, text: str) -> int:
        return await self.registry.send(name, live.client_content(text))

    def actor(self, name: str = "s"):
        return self.registry.actor(name)


def make_config(state_dir: Path, **sections: Any) -> Config:
    backoff = sections.pop("backoff", BackoffPolicy(stable_after=1.0, quick_failure=0.2))
    upstream = sections.pop("upstream", UpstreamConfig(connect_timeout=5, setup_timeout=5, stall_timeout=5))
    session = sections.pop("session", SessionConfig(inactivity_timeout=0))
    return Config(state_dir=state_dir, backoff=backoff, upstream=upstream, session=session, **sections)


@asynccontextmanager
async def open_core(
    state_dir: Path,
    *,
    fake_options: FakeOptions | None = None,
    cfg: Config | None = None,
    memory: bool = False,
    records: dict[str, dict] | None = None,
    key: str = "test-key",
    write_batch: Any = None,
    endpoint: str | None = None,
    credentials: Any = None,
) -> AsyncIterator[Core]:
    cfg = cfg or make_config(state_dir)
    dials: list[str] = []
    async with trio.open_nursery() as nursery:
        # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
        # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
        fake = await nursery.start(FakeUpstream(fake_options or FakeOptions(catalogue=text_catalogue(), reply_pace=0.005)).serve)
        connector = None
        if memory:
            async def connector(ep: Endpoint) -> trio.abc.Stream:
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(fake.serve_stream, server)
                return client

        # Exact timing in memory mode: no worker threads either (see CheckpointStore run_sync=).
        async def inline(fn, *args):
            await trio.lowlevel.checkpoint()
            return fn(*args)

        store = CheckpointStore(cfg.state_dir, run_sync=inline if memory else None,
                                write_batch=write_batch or checkpoint.write_batch)
        if records is None:
            records = store.load_all().records
        dial = Dial(
            Endpoint.parse(endpoint or fake.url()), credentials or FixedKey(key), cfg.upstream.connect_timeout,
            cfg.upstream.setup_timeout, cfg.upstream.max_message_size, connector=connector,
        )
        metrics = Metrics()
        registry = await start_core(nursery, cfg, dial, metrics, upstream_kind="fake", store=store, records=records)
        yield Core(fake, registry, store, cfg, nursery, metrics, dials)
        nursery.cancel_scope.cancel()


def conversation_turns(fake: FakeUpstream) -> list[list[str]]:
    return [list(c.user_turns) for c in fake.conversations.values()]


def read_checkpoint(state_dir: Path, name: str) -> dict:
    return decode_record((state_dir / f"{name}.ckpt").read_bytes(), name)

