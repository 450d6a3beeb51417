"""The daemon as a real process: kill -9 and SIGTERM restarts resume the same conversation;
systemd notifications; a corrupt checkpoint does not stop the start; the key never leaks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio
from daemon_proc import SENTINEL_KEY, DaemonProc

from geminid.protocol import live
from geminid.protocol.client import open_client

SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]  # conftest: text_catalogue()


def turn_end(method: str, params: dict) -> bool:
    return method == "session.message" and bool(params["message"].get("serverContent", {}).get("turnComplete"))


async def next_turn_end(client, session: str, timeout: float = 10) -> list[tuple[str, dict]]:
    seen = []
    with trio.fail_after(timeout):
        async for method, params in client.events():
            seen.append((method, params))
            if method == "session.message" and params["message"].get("serverContent", {}).get("turnComplete"):
                return seen
    raise AssertionError("event stream ended")


def assert_no_secret(proc: DaemonProc) -> None:
    assert SENTINEL_KEY not in proc.log_path.read_text()
    for path in proc.state_dir.rglob("*"):
        if path.is_file():
            assert SENTINEL_KEY.encode() not in path.read_bytes(), path


async def test_kill9_mid_conversation_then_restart_resumes(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url())
    try:
        await proc.start()
        acked = []
        async with open_client(proc.sock_path) as c:
            await c.open("k", SETUP)
            await c.attach("k")
            for i in range(3):
                acked.append(f"before-{i}")
                await c.send("k", live.client_content(acked[-1]))
                await next_turn_end(c, "k")
            last_seq = c.last_seq["k"]
            # One more turn, acknowledged, and the daemon dies while the reply streams.
            acked.append("in-flight")
            await c.send("k", live.client_content("in-flight"))
        await proc.kill9()
        await proc.start()
        async with open_client(proc.sock_path) as c:
            opened = await c.open("k", SETUP)
            assert opened["restored"] is True
            await c.attach("k", since=last_seq)
            acked.append("after")
            await c.send("k", live.client_content("after"))
            seen = []
            with trio.fail_after(15):
                async for method, params in c.events():
                    seen.append((method, params))
                    done = [c for c in fake.conversations.values() if c.user_turns[-1:] == ["after"]]
                    if done and turn_end(method, params):
                        break
            # Nothing is missed silently: the events between the last one this client saw and
            # the restart are announced as one lagged range, and seqs continue after it.
            assert seen[0][0] == "session.lagged", seen[:3]
            gap = seen[0][1]
            assert gap["first"] == last_seq + 1 and gap["last"] >= gap["first"]
            later = [p["seq"] for m, p in seen[1:]]
            assert later and min(later) > gap["last"] and later == sorted(later)
        convs = [c for c in fake.conversations.values() if c.user_turns]
        assert len(convs) == 1, [c.user_turns for c in convs]
        assert convs[0].user_turns == acked  # same conversation, no acked turn lost or doubled
        assert proc.events("checkpoint.quarantined") == []
        assert_no_secret(proc)
    finally:
        await proc.aclose()


async def test_sigterm_drains_exits_zero_and_restart_resumes(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url())
    try:
        await proc.start()
        async with open_client(proc.sock_path) as c:
            await c.open("t", SETUP)
            await c.attach("t")
            await c.send("t", live.client_content("remember 42"))
            await next_turn_end(c, "t")
        assert await proc.terminate() == 0
        stopping = [n for n in proc.notifications if "STOPPING=1" in n]
        await proc.wait_for("STOPPING=1", timeout=2) if not stopping else None
        # Closed upstream with 1000, the handle stays valid for the restart.
        assert fake.accepted[-1].close_code == 1000 and fake.accepted[-1].closed_by == "client"
        assert (proc.state_dir / "t.ckpt").exists()
        await proc.start()
        async with open_client(proc.sock_path) as c:
            await c.open("t", SETUP)
            await c.attach("t")
            await c.send("t", live.client_content("recall"))
            seen = await next_turn_end(c, "t")
            text = json.dumps([p for _, p in seen])
            assert "turn 2" in text and "remember 42" in text
        assert len([c for c in fake.conversations.values() if c.user_turns]) == 1
        assert_no_secret(proc)
    finally:
        await proc.aclose()


async def test_notify_protocol_ready_status_watchdog_stopping(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url(), env={"WATCHDOG_USEC": "400000"})
    try:
        await proc.start()  # READY=1
        await proc.wait_for("WATCHDOG=1", timeout=5)
        await proc.wait_for("WATCHDOG=1", timeout=5)
        async with open_client(proc.sock_path) as c:
            await c.open("w", SETUP)
        await proc.wait_for("STATUS=", timeout=15)
        assert await proc.terminate() == 0
        await proc.wait_for("STOPPING=1", timeout=5)
    finally:
        await proc.aclose()


async def test_socket_activation_through_listen_fds(tmp_path, fake):
    sock_dir = Path(os.path.dirname(DaemonProc(tmp_path, None).sock_path))
    path = sock_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    # The child gets the socket as fd 3, like systemd does.
    os.set_inheritable(listener.fileno(), True)
    code = (
        "import os,sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS']='1'; "
        "os.environ['LISTEN_PID']=str(os.getpid()); "
        "from geminid.daemon.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    proc = DaemonProc(tmp_path, fake.url())
    proc.argv = lambda: [sys.executable, "-c", code, str(listener.fileno()), "run",  # type: ignore[method-assign]
                         "--state-dir", str(proc.state_dir), "--log-format", "json", "--endpoint", fake.url()]
    try:
        await proc.start(pass_fds=(listener.fileno(),))
        listener.close()
        async with open_client(path) as c:
            status = await c.status()
            assert status["upstream"] == "gemini"
            await c.open("a", SETUP)
            # The Live endpoint's socket goes beside the socket systemd passed, not beside the
            # configured default (/run/geminid, which need not exist): it was the daemon's death.
            await _logged(proc, "live.listening")
            assert (await c.status())["live"]["socket"] == str(sock_dir / "activated-live.sock")
        assert (sock_dir / "activated-live.sock").is_socket()
        assert await proc.terminate() == 0
    finally:
        listener.close()
        await proc.aclose()


async def _logged(proc: DaemonProc, event: str, timeout: float = 20.0) -> None:
    """Wait until the daemon's log has ``event`` (a log line, not an sd_notify message)."""
    with trio.fail_after(timeout):
        while not proc.events(event):
            await trio.sleep(0.05)


async def test_an_unusable_default_live_socket_costs_the_live_endpoint_only(tmp_path, fake):
    """The default Live socket is an add-on beside the JSON-RPC socket: if it cannot be bound,
    the daemon (READY already) logs why and keeps serving its JSON-RPC clients."""
    proc = DaemonProc(tmp_path, fake.url())
    (proc.sock_path.parent / "g-live.sock").mkdir()  # a directory where the socket would go
    try:
        await proc.start()
        await _logged(proc, "live.unix_unavailable")
        async with open_client(proc.sock_path) as c:
            await c.open("a", SETUP)
            turn = {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}}
            assert await c.send("a", turn) > 0
        assert await proc.terminate() == 0
        [event] = proc.events("live.unix_unavailable")
        assert event["level"] == "error" and "g-live.sock" in event["reason"]
    finally:
        await proc.aclose()


async def test_corrupt_checkpoint_is_quarantined_and_the_daemon_starts(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url())
    try:
        await proc.start()
        async with open_client(proc.sock_path) as c:
            await c.open("good", SETUP)
            await c.open("bad", SETUP)
        assert await proc.terminate() == 0
        bad = proc.state_dir / "bad.ckpt"
        blob = bytearray(bad.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        bad.write_bytes(bytes(blob))
        await proc.start()
        async with open_client(proc.sock_path) as c:
            names = [s["session"] for s in await c.sessions()]
        assert names == ["good"]
        quarantined = proc.events("checkpoint.quarantined")
        assert quarantined and "bad.ckpt" in quarantined[0]["file"]
        assert any(p.name.startswith("bad.ckpt.corrupt") for p in proc.state_dir.iterdir())
    finally:
        await proc.aclose()


async def test_sighup_changes_log_level_without_dropping_a_session(tmp_path, fake):
    config = tmp_path / "config.toml"
    config.write_text('[log]\nlevel = "info"\n')
    proc = DaemonProc(tmp_path, fake.url(), args=["--config", str(config)])
    try:
        await proc.start()
        async with open_client(proc.sock_path) as c:
            await c.open("h", SETUP)
            await c.attach("h")
            await c.send("h", live.client_content("one"))
            await next_turn_end(c, "h")
            assert not any(e["level"] == "debug" for e in proc.logs())
            config.write_text('[log]\nlevel = "debug"\n')
            proc.proc.send_signal(signal.SIGHUP)
            await proc.wait_for("READY=1")
            await c.send("h", live.client_content("two"))
            await next_turn_end(c, "h")
        reloaded = proc.events("config.reloaded")
        assert reloaded and reloaded[0]["log_level"] == "debug"
        with trio.fail_after(10):  # the handle update after "two" is logged at debug level
            while not any(e["level"] == "debug" for e in proc.logs()):
                await trio.sleep(0.05)
        assert len(fake.accepted) == 1  # the session's connection survived the reload
    finally:
        await proc.aclose()


def test_bad_config_gives_one_line_and_nonzero_exit(tmp_path):
    config = tmp_path / "bad.toml"
    for body, needle in (
        ('[backoff]\ncapp = 3\n', "backoff.capp"),
        ('[backoff]\ncap = "soon"\n', "backoff.cap"),
    ):
        config.write_text(body)
        result = subprocess.run(
            [sys.executable, "-m", "geminid.daemon.cli", "run", "--config", str(config)],
            capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)},
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "geminid.daemon.cli", "run", "--api-key-file", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and "api_key_file" in result.stderr and "Traceback" not in result.stderr


def test_sentinel_key_never_appears_via_any_input_path(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(SENTINEL_KEY + "\n")
    base = [sys.executable, "-m", "geminid.daemon.cli", "check-config"]
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("GEMINI_API_KEY", None)
    for extra_args, extra_env in (
        ([], {"GEMINI_API_KEY": SENTINEL_KEY}),
        (["--api-key-file", str(key_file)], {}),
        ([], {"GEMINID_UPSTREAM_API_KEY_FILE": str(key_file)}),
    ):
        result = subprocess.run(base + extra_args, capture_output=True, text=True, timeout=30,
                                env={**env, **extra_env})
        assert result.returncode == 0, result.stderr
        assert SENTINEL_KEY not in result.stdout + result.stderr
    # A key on the command line is refused without echoing it.
    result = subprocess.run(base + ["--api-key", SENTINEL_KEY], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode != 0 and SENTINEL_KEY not in result.stdout + result.stderr


def test_check_config_with_a_one_letter_key_prints_the_config_intact(tmp_path):
    """A one-letter key (a typo) must not be "redacted" out of every word of the output."""
    env = {**os.environ, "HOME": str(tmp_path), "GEMINI_API_KEY": "e"}
    result = subprocess.run([sys.executable, "-m", "geminid.daemon.cli", "check-config"],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert "<redacted>" not in result.stdout
    assert "endpoint" in result.stdout and 'api_key = "<set: from' in result.stdout
