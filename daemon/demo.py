"""``geminid demo``: the quick start in one command.

Starts a real ``geminid run`` (a subprocess, on the embedded fake upstream, with a throw-away
socket and state directory), waits for READY=1 on a notify socket of its own, then runs real
``geminictl`` commands against it, so that what a user sees is exactly what their own programs
will get. The daemon is stopped with SIGTERM at the end, as systemd would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _step(text: str) -> None:
    print(f"\n$ {text}", flush=True)


def run_demo(text: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="geminid-demo-", dir="/tmp"))
    sock_path = workdir / "geminid.sock"
    notify_path = workdir / "notify"
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY",) and not k.startswith("GEMINID_")}
    env["NOTIFY_SOCKET"] = str(notify_path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    exe = [sys.executable, "-m", "geminid.daemon.cli"]
    ctl = [sys.executable, "-m", "geminid.protocol.ctl", "--socket", str(sock_path)]
    log_path = workdir / "daemon.log"
    print("Starting geminid on the embedded fake upstream (no API key is configured) ...", flush=True)
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(
            [*exe, "run", "--socket", str(sock_path), "--state-dir", str(workdir / "state"),
             "--log-format", "json"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    status = 1
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                data = notify.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in data:
                ready = True
                break
        if not ready:
            print("geminid did not become ready; its log follows:", file=sys.stderr)
            sys.stderr.write(log_path.read_text(errors="replace"))
            return 1
        print(f"geminid is ready (pid {daemon.pid}, socket {sock_path}).")
        env_ctl = {**env, "NO_COLOR": "1"}
        env_ctl.pop("NOTIFY_SOCKET", None)
        for args in (["open", "demo"], ["say", "demo", text], ["say", "demo", "Please recall what I said."],
                     ["sessions"]):
            _step("geminictl " + " ".join(_quote(a) for a in args))
            result = subprocess.run([*ctl, *args], env=env_ctl)
            if result.returncode != 0:
                return result.returncode
        status = 0
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        notify.close()
        print(f"\ngeminid stopped (exit {daemon.returncode}). Its JSON log: {log_path}")
        if status == 0:
            shutil.rmtree(workdir / "state", ignore_errors=True)
    return status


def _quote(arg: str) -> str:
    return arg if arg.replace("-", "").isalnum() else repr(arg)
