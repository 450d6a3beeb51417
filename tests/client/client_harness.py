"""Fixtures for the local-protocol tests: an honest in-memory SessionService and a real socket.

``MemoryService`` implements the SessionService protocol with the real EventHub and no Gemini
knowledge: ``open`` creates a hub and publishes a status, ``send`` assigns the per-session seq
synchronously on entry (before its first await, as the real registry does), optionally waits on a
per-session gate (to make acks slow), then echoes any ``clientContent`` text as a model turn.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from geminid.daemon.config import ServerConfig
from geminid.daemon.events import EventHub, EventSink
from geminid.daemon.server import serve_unix
from geminid.daemon.service import Deferred, OpenResult, Subscription
from geminid.protocol.acks import SendAck
from geminid.protocol.client import Client, open_client
from geminid.protocol.errors import SessionFailed, SetupMismatch, UnknownSession

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "protocol" / "schemas" / "local_rpc.json"


@attrs.define
class _Session:
    setup: dict[str, Any]
    hub: EventHub
    status: str = "live"
    next_send: int = 1
    sent: list[dict[str, Any]] = attrs.field(factory=list)


class MemoryService:
    def __init__(self, *, ring: int = 64) -> None:
        self.ring = ring
        self.sessions: dict[str, _Session] = {}
        self.gates: dict[str, trio.Event] = {}
        self.fail_with: Exception | None = None
        #: the params.id of every send, in arrival order (the clients send one each).
        self.ids: list[str] = []
        self.started = time.monotonic()

    def hub(self, name: str) -> EventHub:
        return self.sessions[name].hub

    def publish(self, name: str, method: str, params: dict[str, Any]) -> int:
        return self.hub(name).publish(method, params).seq

    def _get(self, name: str) -> _Session:
        try:
            return self.sessions[name]
        except KeyError:
            raise UnknownSession(f"no session named {name!r}", data={"session": name}) from None

    async def open(self, name: str, setup: dict[str, Any]) -> OpenResult:
        await trio.lowlevel.checkpoint()
        s = self.sessions.get(name)
        if s is not None:
            if s.setup != setup:
                raise SetupMismatch(
                    "session exists with a different setup", data={"session": name}
                )
            return OpenResult(name, s.status, False, False, s.hub.last_seq)
        s = self.sessions[name] = _Session(setup, EventHub(name, ring_size=self.ring))
        s.hub.publish("session.status", {"status": "live", "context": "fresh"})
        return OpenResult(name, s.status, True, False, s.hub.last_seq)

    async def send(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> int:
        if msg_id is not None:
            self.ids.append(msg_id)
        if self.fail_with is not None:
            raise self.fail_with
        s = self._get(name)
        if s.status != "live":
            raise SessionFailed(f"session {name!r} is {s.status}", data={"session": name})
        seq = s.next_send  # assigned synchronously on entry
        s.next_send += 1
        s.sent.append(message)
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()
        await trio.lowlevel.checkpoint()
        content = message.get("clientContent")
        if isinstance(content, dict) and name in self.sessions:
            text = " ".join(
                str(p.get("text", ""))
                for t in content.get("turns", [])
                for p in t.get("parts", [])
            )
            for m in (
                {"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": "echo: "}]}}},
                {"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": text}]}}},
                {"serverContent": {"generationComplete": True}},
                {"serverContent": {"turnComplete": True}},
            ):
                s.hub.publish("session.message", {"message": m})
        return seq

    def send_now(self, name: str, message: dict[str, Any], msg_id: str | None = None) -> Any:
        return Deferred(self._acked, name, message, msg_id)

    async def _acked(self, name: str, message: dict[str, Any], msg_id: str | None) -> SendAck:
        return SendAck(await self.send(name, message, msg_id))

    def attach(self, name: str, sink: EventSink, since: int | None) -> Subscription:
        s = self._get(name)
        gap, backlog = s.hub.subscribe(sink, since)
        return Subscription(name, gap, backlog, s.hub.last_seq)

    def detach(self, name: str, sink: EventSink) -> None:
        s = self.sessions.get(name)
        if s is not None:
            s.hub.unsubscribe(sink)

    async def close(self, name: str) -> dict[str, Any]:
        s = self._get(name)
        await trio.lowlevel.checkpoint()
        s.status = "closed"
        s.hub.publish("session.ended", {"reason": "closed by client"})
        del self.sessions[name]
        return {"status": "closed"}

    def list(self) -> list[dict[str, Any]]:
        return [
            {
                "session": n,
                "status": s.status,
                "last_seq": s.hub.last_seq,
                "subscribers": s.hub.subscriber_count,
                "audio_dropped": 0,
            }
            for n, s in self.sessions.items()
        ]

    def status(self) -> dict[str, Any]:
        return {
            "version": "test",
            "uptime": time.monotonic() - self.started,
            "upstream": "memory",
            "sessions": len(self.sessions),
        }


def short_dir() -> str:
    return tempfile.mkdtemp(prefix="gd", dir="/tmp")


@pytest.fixture
def sockdir() -> Any:
    d = short_dir()
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def service() -> MemoryService:
    return MemoryService()


@attrs.define
class Served:
    path: Path
    service: MemoryService
    cfg: ServerConfig
    cancel: trio.CancelScope


async def _serve(nursery: trio.Nursery, service: Any, cfg: ServerConfig) -> Served:
    scope = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_unix(service, cfg, task_status=task_status)

    path = await nursery.start(run)
    return Served(path, service, cfg, scope)


@pytest.fixture
async def serve(nursery: trio.Nursery, sockdir: Path, service: MemoryService) -> Any:
    """A factory: ``await serve(**cfg_overrides)`` starts a server on a fresh socket."""

    async def start(svc: Any = None, **overrides: Any) -> Served:
        kw = {"socket_path": sockdir / "g.sock", **overrides}
        return await _serve(nursery, svc or service, ServerConfig(**kw))

    return start


@pytest.fixture
async def server(serve: Any) -> Served:
    return await serve()


# -- schema validation of captured traffic ------------------------------------------------------


def _validator_factory() -> Callable[[str], Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))

    cache: dict[str, Any] = {}

    def get(defname: str) -> Any:
        if defname not in schema["$defs"]:
            raise AssertionError(f"schema has no $defs/{defname}")
        if defname not in cache:
            cache[defname] = Draft202012Validator(
                {"$ref": f"{schema['$id']}#/$defs/{defname}"}, registry=registry
            )
        return cache[defname]

    return get


class TrafficChecker:
    """Validates every line a test client sends or receives against protocol/schemas."""

    def __init__(self) -> None:
        self.get = _validator_factory()
        self.methods: dict[Any, str] = {}
        self.errors: list[str] = []
        self.seen: set[str] = set()

    def _check(self, defname: str, value: Any, line: bytes) -> None:
        self.seen.add(defname)
        errs = list(self.get(defname).iter_errors(value))
        for e in errs:
            self.errors.append(f"{defname}: {e.message} at {list(e.absolute_path)} in {line[:300]!r}")

    def __call__(self, direction: str, line: bytes) -> None:
        msg = json.loads(line)
        if direction == "out":
            self._check("request", msg, line)
            if "id" in msg:
                self.methods[msg["id"]] = msg["method"]
            self._check(f"{msg['method']}.params", msg.get("params", {}), line)
            return
        if "method" in msg:
            self._check("notification", msg, line)
            self._check(f"{msg['method']}.params", msg["params"], line)
            return
        if "error" in msg:
            self._check("error_response", msg, line)
            return
        self._check("response", msg, line)
        method = self.methods.get(msg["id"])
        if method:
            self._check(f"{method}.result", msg["result"], line)

    def assert_clean(self) -> None:
        assert not self.errors, "\n".join(self.errors[:20])


@pytest.fixture
def traffic() -> Any:
    checker = TrafficChecker()
    yield checker
    checker.assert_clean()


@pytest.fixture
def connect(traffic: TrafficChecker) -> Callable[..., Any]:
    """``async with connect(path) as c`` — a Client whose traffic is schema-checked."""

    def factory(path: os.PathLike[str] | str, **kw: Any) -> Any:
        return open_client(path, trace=traffic, **kw)

    return factory


async def collect(c: Client, n: int, timeout: float = 5) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    with trio.fail_after(timeout):
        async for item in c.events():
            out.append(item)
            if len(out) == n:
                break
    return out


class RawConn:
    """A raw line-level connection for protocol tests."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, obj: Any) -> None:
        await self.send(json.dumps(obj).encode() + b"\n")

    async def line(self, timeout: float = 5) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while b"\n" not in self.buf:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buf)
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw(path: Path) -> RawConn:
    return RawConn(await trio.open_unix_socket(str(path)))


async def _aiter_lines(c: RawConn) -> AsyncIterator[dict[str, Any]]:
    while True:
        yield await c.line()
