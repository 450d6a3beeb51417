"""geminid as a subprocess with its Live endpoint on, and the google-genai client pointed at it
through public options only (api_key, http_options base_url and async_client_args' ssl)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import trio
from daemon_proc import DaemonProc

from geminid.protocol.client import open_client

MODEL = "gemini-3.8-live"  # TEXT replies: the fake here serves text_catalogue()


class LiveDaemon(DaemonProc):
    """A DaemonProc with ``--live-listen 127.0.0.1:PORT`` and what a client needs to know."""

    def __init__(self, workdir: Path, endpoint: str | None, *, port: int = 0, **kw: Any) -> None:
        args = list(kw.pop("args", []))
        args += ["--live-listen", f"127.0.0.1:{port}"]
        super().__init__(workdir, endpoint, args=args, **kw)
        self.live: dict[str, Any] = {}

    async def start_live(self) -> dict[str, Any]:
        await self.start()
        with trio.fail_after(20):
            while True:
                async with open_client(self.sock_path) as c:
                    status = await c.status()
                if status.get("live") and status["live"].get("base_url"):
                    self.live = status["live"]
                    return self.live
                await trio.sleep(0.05)

    @property
    def port(self) -> int:
        return int(self.live["base_url"].rsplit(":", 1)[1])

    def token(self) -> str:
        return Path(self.live["token_file"]).read_text().strip()


def genai_client(live: dict[str, Any], token: str, *, session: str | None = None) -> Any:
    from google import genai

    base = live["base_url"] + (f"/sessions/{session}" if session else "")
    ctx = ssl.create_default_context(cafile=live["ca_file"])
    return genai.Client(api_key=token, http_options={
        "base_url": base, "api_version": "v1beta", "async_client_args": {"ssl": ctx},
    })


def run_asyncio(fn: Any, *args: Any) -> Any:
    """Run an asyncio coroutine function (the SDK's world) in a thread, from trio."""
    return trio.to_thread.run_sync(lambda: asyncio.run(fn(*args)))


async def until_turn_complete(session: Any) -> tuple[str, list[Any], str | None]:
    """(text, messages, last resumable newHandle) up to the next turnComplete."""
    msgs: list[Any] = []
    handle = None
    async for msg in session.receive():
        msgs.append(msg)
        upd = msg.session_resumption_update
        if upd and upd.resumable and upd.new_handle:
            handle = upd.new_handle
        if msg.server_content and msg.server_content.turn_complete:
            break
    text = "".join(m.text or "" for m in msgs if m.server_content and m.server_content.model_turn)
    return text, msgs, handle
