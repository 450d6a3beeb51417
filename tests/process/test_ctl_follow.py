"""``geminictl attach --follow`` survives a daemon restart (kill -9 included), against a real
daemon process and a real geminictl process (issue #11.8)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import trio
from daemon_proc import DaemonProc

from geminid.protocol import live
from geminid.protocol.client import open_client

SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]  # conftest: text_catalogue()


class Lines:
    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.buf = b""
        self.seen: list[dict[str, Any]] = []

    async def until(self, pred: Any, timeout: float = 20) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    obj = json.loads(line)
                    self.seen.append(obj)
                    if pred(obj):
                        return obj
                data = await self.stream.receive_some(65536)
                assert data, f"geminictl ended; saw {self.seen}"
                self.buf += data


def turn_complete(obj: dict[str, Any]) -> bool:
    msg = obj["params"].get("message", {})
    return obj["method"] == "session.message" and bool(msg.get("serverContent", {}).get("turnComplete"))


async def test_attach_follow_survives_a_daemon_restart(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url())
    ctl: trio.Process | None = None
    try:
        await proc.start()
        async with open_client(proc.sock_path) as c:
            await c.open("f", SETUP)
            since = (await c.attach("f"))["last_seq"]
        ctl = await trio.lowlevel.open_process(
            [sys.executable, "-m", "geminid.protocol.ctl", "--socket", str(proc.sock_path),
             "attach", "f", "--since", str(since), "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        lines = Lines(ctl)
        async with open_client(proc.sock_path) as c:
            await c.send("f", live.client_content("before"))
        await lines.until(turn_complete)
        await proc.kill9()
        await lines.until(lambda o: o["method"] == "client.disconnected")
        await proc.start()
        await lines.until(lambda o: o["method"] == "client.reconnected")
        async with open_client(proc.sock_path) as c:
            await c.send("f", live.client_content("after"))
        await lines.until(turn_complete)
        seqs = [o["params"]["seq"] for o in lines.seen if "seq" in o["params"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # re-attached with since
        async with open_client(proc.sock_path) as c:
            await c.close("f")
        await lines.until(lambda o: o["method"] == "session.ended")
        with trio.fail_after(10):
            assert await ctl.wait() == 0
    finally:
        if ctl is not None and ctl.returncode is None:
            ctl.kill()
            await ctl.wait()
        await proc.aclose()
