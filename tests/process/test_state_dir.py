"""The state directory as a real daemon meets it (issue #11, points 9-12): unusable or taken
directories stop the start with one line and exit 2; a directory that turns read-only later
gets ``-32007`` answers at once instead of hangs; ``daemon.starting`` names what it uses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from daemon_proc import SENTINEL_KEY, DaemonProc

from geminid.protocol import live
from geminid.protocol.client import RemoteError, open_client
from geminid.protocol.errors import NOT_DURABLE

SETUP = live.setup("gemini-3.8-live", response_modalities=["TEXT"])["setup"]  # conftest: text_catalogue()
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run the daemon as uid 65534 / to mount)")


def logged(proc: DaemonProc, name: str) -> list[dict]:
    """Log events of a daemon whose output also holds its one-line refusal."""
    return [e for line in proc.output().splitlines() if line.startswith("{")
            if (e := json.loads(line)).get("event") == name]


def one_line_refusal(proc: DaemonProc) -> str:
    lines = [line for line in proc.output().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, proc.output()
    assert "Traceback" not in proc.output()
    return lines[0]


@contextlib.contextmanager
def tmpfs(size: str = "4m") -> Iterator[Path]:
    """A tmpfs that the test can remount read-only; skips where mounting is not permitted."""
    where = Path(tempfile.mkdtemp(prefix="gd-tmpfs-", dir="/tmp"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


async def test_state_dir_that_is_a_file_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("precious\n")
    os.chmod(target, 0o644)
    proc = DaemonProc(tmp_path, None, key=None, state_dir=target)
    try:
        await proc.start(wait_ready=False)
        assert await proc.exit_status() == 2
        line = one_line_refusal(proc)
        assert line == f"geminid: state_dir: {target}: exists and is not a directory"
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # never chmod'ed
        assert target.read_text() == "precious\n"
    finally:
        await proc.aclose()


@needs_root
async def test_unwritable_state_dir_as_non_root_is_refused_in_one_line(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="gd-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    state = base / "state"
    state.mkdir(mode=0o755)  # root's, 0755: uid 65534 can read it but not write
    work = base / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    proc = DaemonProc(work, None, key=None, state_dir=state, user=NOBODY)
    try:
        await proc.start(wait_ready=False)
        assert await proc.exit_status() == 2
        line = one_line_refusal(proc)
        assert line.startswith(f"geminid: state_dir: {state}: not writable"), line
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o755  # not ours: mode untouched
        assert not list(state.iterdir())
    finally:
        await proc.aclose()
        shutil.rmtree(base, ignore_errors=True)


@needs_root
async def test_read_only_mount_is_refused_at_start(tmp_path):
    with tmpfs() as where:
        (where / "state").mkdir(mode=0o700)
        remount(where, "ro")
        proc = DaemonProc(tmp_path, None, key=None, state_dir=where / "state")
        try:
            await proc.start(wait_ready=False)
            assert await proc.exit_status() == 2
            line = one_line_refusal(proc)
            assert line.startswith(f"geminid: state_dir: {where / 'state'}: not writable"), line
            assert "Read-only file system" in line
        finally:
            await proc.aclose()


async def test_second_daemon_on_the_same_state_dir_exits_2_naming_the_holder(tmp_path, fake):
    first = DaemonProc(tmp_path / "a", fake.url())
    (tmp_path / "a").mkdir()
    second = DaemonProc(tmp_path / "b", fake.url(), state_dir=first.state_dir)
    (tmp_path / "b").mkdir()
    try:
        await first.start()
        async with open_client(first.sock_path) as c:
            await c.open("mine", SETUP)
            await c.attach("mine")
            await c.send("mine", live.client_content("hello"))
        await second.start(wait_ready=False)
        assert await second.exit_status() == 2
        line = one_line_refusal(second)
        assert first.proc is not None
        assert line.startswith(f"geminid: state_dir: {first.state_dir}: in use by another geminid "
                               f"(pid {first.proc.pid} holds"), line
        # It stopped before loading anything: no session restored, no socket, checkpoint intact.
        assert logged(second, "checkpoint.loaded") == [] and logged(second, "session.restored") == []
        assert not second.sock_path.exists()
        async with open_client(first.sock_path) as c:  # the first one is undisturbed
            assert await c.send("mine", live.client_content("still here")) >= 1
        # The lock dies with its holder (kill -9 included): the next daemon starts.
        await first.kill9()
        await second.start()
        async with open_client(second.sock_path) as c:
            assert (await c.open("mine", SETUP))["restored"] is True
    finally:
        await first.aclose()
        await second.aclose()


async def test_second_daemon_on_the_same_socket_stops_before_touching_state(tmp_path, fake):
    first = DaemonProc(tmp_path, fake.url())
    other_state = tmp_path / "other-state"
    second = DaemonProc(tmp_path, fake.url(), state_dir=other_state)
    second.sock_path = first.sock_path
    second.log_path = tmp_path / "second.log"
    try:
        await first.start()
        await second.start(wait_ready=False)
        assert await second.exit_status() == 2
        line = one_line_refusal(second)
        assert line.startswith(f"geminid: another geminid is listening on {first.sock_path}"), line
        assert not other_state.exists()  # the socket lock came first: nothing was created
    finally:
        await first.aclose()
        await second.aclose()


@needs_root
async def test_state_dir_turning_read_only_answers_minus_32007_at_once(tmp_path, fake):
    with tmpfs() as where:
        proc = DaemonProc(tmp_path, fake.url(), state_dir=where / "state")
        try:
            await proc.start()
            async with open_client(proc.sock_path) as c:
                await c.open("s", SETUP)
                await c.attach("s")
                assert await c.send("s", live.client_content("durable")) >= 1
                remount(where, "ro")
                # The first write that fails says so (not a hang): that turn was already accepted
                # and sent upstream (issue #13 point 1), so it is acked ``durable: false``, not
                # refused (a resend would duplicate it) ...
                with trio.fail_after(5):
                    first = await c.send("s", live.client_content("not crash-safe"))
                assert first.durable is False
                # ... and from then on every send and open is refused at once (-32007), before anything
                # is accepted (no write attempt in between: a retry cannot duplicate).
                for _ in range(3):
                    with trio.fail_after(1):
                        with pytest.raises(RemoteError) as again:
                            await c.send("s", live.client_content("refused too"))
                    assert again.value.code == NOT_DURABLE
                with trio.fail_after(1):
                    with pytest.raises(RemoteError) as opened:
                        await c.open("new", SETUP)
                assert opened.value.code == NOT_DURABLE
                # The disk comes back: the store's retry succeeds and sends are accepted again.
                remount(where, "rw")
                with trio.fail_after(15):
                    while True:
                        try:
                            await c.send("s", live.client_content("back"))
                            break
                        except RemoteError as exc:
                            assert exc.code == NOT_DURABLE
                            await trio.sleep(0.2)
            assert proc.events("checkpoint.unhealthy") and proc.events("checkpoint.healthy")
            assert await proc.terminate() == 0
        finally:
            await proc.aclose()


async def test_daemon_starting_names_endpoint_key_source_and_socket(tmp_path, fake):
    proc = DaemonProc(tmp_path, fake.url(), key=None,
                      env={"GOOGLE_API_KEY": SENTINEL_KEY, "GEMINID_SOCKET": "/nonexistent/ignored.sock"})
    proc.extra_args = []  # --socket is still given by argv(): the flag beats GEMINID_SOCKET
    try:
        await proc.start()
        (starting,) = proc.events("daemon.starting")
        assert starting["endpoint"] == fake.url().split("?")[0]
        assert starting["key_source"] == "env GOOGLE_API_KEY"
        assert starting["socket"] == str(proc.sock_path)
        assert SENTINEL_KEY not in proc.output()
        assert await proc.terminate() == 0
    finally:
        await proc.aclose()


async def test_daemon_listens_on_geminid_socket(tmp_path, fake):
    sock = Path(tempfile.mkdtemp(prefix="gd-env-", dir="/tmp")) / "env.sock"
    proc = DaemonProc(tmp_path, fake.url(), env={"GEMINID_SOCKET": str(sock)})
    proc.argv = lambda: [a for a in DaemonProc.argv(proc) if a not in ("--socket", str(proc.sock_path))]  # type: ignore[method-assign]
    try:
        await proc.start()
        assert sock.exists()
        async with open_client(sock) as c:
            await c.open("e", SETUP)
        assert await proc.terminate() == 0
    finally:
        await proc.aclose()
