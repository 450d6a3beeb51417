"""Run ``geminid run`` as a real subprocess, the way systemd would: a notify socket owned by
the test, SIGTERM/SIGKILL, logs captured as JSON lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import trio

SENTINEL_KEY = "AIzaSENTINEL-0123456789-not-a-real-key-zz"


class DaemonProc:
    def __init__(self, workdir: Path, endpoint: str | None, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, key: str | None = SENTINEL_KEY,
                 state_dir: Path | None = None, user: int | None = None) -> None:
        self.workdir = workdir
        self.sock_path = Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp")) / "g.sock"
        self.state_dir = state_dir or workdir / "state"
        #: Run the daemon as this uid (and gid), e.g. 65534 to meet permissions as non-root does.
        self.user = user
        if user is not None:
            os.chown(self.sock_path.parent, user, user)
        self.log_path = workdir / "daemon.log"
        self.endpoint = endpoint
        self.extra_env = env or {}
        self.extra_args = args or []
        self.key = key
        self.proc: trio.Process | None = None
        self.notify: trio.socket.SocketType | None = None
        self.notify_path = Path(tempfile.mkdtemp(prefix="gdn-", dir="/tmp")) / "notify"
        self.notifications: list[str] = []
        self.starts = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINID_", "GEMINI_", "GOOGLE_API_KEY", "NOTIFY_", "LISTEN_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env["HOME"] = str(self.workdir)
        env["XDG_CONFIG_HOME"] = str(self.workdir / "config")
        if self.key is not None:
            env["GEMINI_API_KEY"] = self.key
        env.update(self.extra_env)
        return env

    def python(self) -> list[str]:
        if self.user is None:
            return [sys.executable, "-m", "geminid.daemon.cli"]
        # The venv's interpreter links into root's home, which another uid cannot reach: run the
        # system Python 3.11 on the venv's site-packages instead (same ABI, same code).
        site = sysconfig.get_paths()["purelib"]
        boot = (f"import site, sys; site.addsitedir({site!r}); "
                "from geminid.daemon.cli import main; sys.exit(main())")
        return ["/usr/bin/python3", "-c", boot]

    def argv(self) -> list[str]:
        argv = [*self.python(), "run", "--socket", str(self.sock_path),
                "--state-dir", str(self.state_dir), "--log-format", "json"]
        if self.endpoint:
            argv += ["--endpoint", self.endpoint]
        return argv + self.extra_args

    async def start(self, *, wait_ready: bool = True, pass_fds: tuple[int, ...] = ()) -> None:
        if self.notify is None:
            self.notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            await self.notify.bind(str(self.notify_path))
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        as_user: dict[str, Any] = {}
        if self.user is not None:
            as_user = {"user": self.user, "group": self.user, "extra_groups": []}
            os.chmod(self.notify_path, 0o666)
        try:
            self.proc = await trio.lowlevel.open_process(
                self.argv(), env=self.env(), stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                **as_user,
            )
        finally:
            log.close()
        if wait_ready:
            await self.wait_for("READY=1")

    async def wait_for(self, text: str, timeout: float = 20.0) -> str:
        assert self.notify is not None
        with trio.fail_after(timeout):
            while True:
                for line in self.notifications:
                    if text in line:
                        self.notifications.remove(line)
                        return line
                data = await self.notify.recv(65536)
                self.notifications.extend(data.decode().split("\n"))

    async def exit_status(self, timeout: float = 20.0) -> int:
        """Wait for a daemon that is expected to refuse to start."""
        assert self.proc is not None
        with trio.fail_after(timeout):
            return await self.proc.wait()

    def output(self) -> str:
        return self.log_path.read_text()

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout):
            return await self.proc.wait()

    async def aclose(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.notify is not None:
            self.notify.close()

    def logs(self) -> list[dict[str, Any]]:
        """Every log line, parsed: a line that is not JSON fails the test."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]
