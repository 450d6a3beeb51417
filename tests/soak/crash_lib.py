"""The crash loop: the daemon as a real subprocess, SIGKILLed at random points and restarted.

The fake upstream runs in the test process (real loopback, key = a sentinel the fake insists
on). Each daemon is ``python -m geminid.daemon.cli run --endpoint URL --socket PATH --state-dir
DIR --log-format json`` with ``GEMINI_API_KEY`` = the sentinel and ``NOTIFY_SOCKET`` = a datagram
socket this process owns (READY=1 with MAINPID tells us the restarted daemon is up). Driver
clients (``open_client(reconnect=True)``) keep sending turns through every restart; the client
re-attaches with ``since`` by itself.

Kill points (chosen at random per kill, seeded):

- ``after_send``: 0-5 ms after a driver wrote a ``session.send`` whose ack has not arrived (the
  turn's checkpoint is being written: group commit, fsync, rename);
- ``streaming``: the moment a client receives a reply chunk (the model is streaming);
- ``random``: 0.2-1.5 s into the run.

Checks (``check``):

K1  no checkpoint was ever unreadable: no ``checkpoint.quarantined``/``checkpoint.unusable`` in
    any daemon log, no ``*.corrupt-*`` file, and every ``*.ckpt`` decodes with ``decode_record``;
K2  every session resumed while its handle was valid: ONE fake conversation per session, every
    accepted connection after the first resumed with a handle, no ``session.context_lost``;
K3  every turn whose ``session.send`` returned ``{seq}`` is in the conversation exactly once, in
    order; a turn sent but not acked before a kill is there at most once;
K4  every client saw contiguous event seqs or a ``session.lagged`` covering each gap;
K5  the sentinel key (and the backend's tokens, e.g. every Vertex bearer token the token
    endpoint issued) appears in no daemon log and no file of the state dir, and no resumption
    handle the fake issued appears in a daemon log (the checkpoint must hold the handle);
K6  every start reached READY=1; the final SIGTERM exits 0; no error-level log line;
K7  exactly-once through the idempotent send: every ``send()`` returned an ack (the client repeats
    a send cut off by a daemon kill with its message id; a driver whose client "dies" mid-send,
    ``CLIENT_KILL_RATE`` of the turns, cuts its socket and repeats the send with the id it kept),
    and K3 then finds each of those turns in the conversation exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import socket as stdsocket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from soak_client import (
    Sent,
    SentLog,
    SessionView,
    SoakClient,
    format_report,
    make_setup,
    session_of_setup,
    token,
)
from soak_lib import check_turns

from geminid.daemon.checkpoint import decode_record
from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue
from geminid.protocol import live
from geminid.protocol.client import ConnectionLost, RemoteError, open_client

#: The share of turns whose client dies mid-send (the send is then repeated with its id).
CLIENT_KILL_RATE = 0.15
_SCRUB_PREFIXES = ("GEMINID_", "GEMINI_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_",
                   "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY",
                   "CONFIGURATION_DIRECTORY", "INVOCATION_ID")
#: Fast reconnects so that a CI run takes seconds per restart, not minutes.
FAST_ENV = {
    "GEMINID_BACKOFF_INITIAL": "0.05",
    "GEMINID_BACKOFF_CAP": "0.5",
    "GEMINID_BACKOFF_STABLE_AFTER": "0.5",
    "GEMINID_BACKOFF_QUICK_FAILURE": "0.1",
    "GEMINID_BACKOFF_MAX_ATTEMPTS": "100000",
    "GEMINID_UPSTREAM_KEEPALIVE_INTERVAL": "0",
    "GEMINID_UPSTREAM_STALL_TIMEOUT": "2",
    "GEMINID_SESSION_INACTIVITY_TIMEOUT": "0",
    "GEMINID_SHUTDOWN_TIMEOUT": "3",
}


@attrs.define
class CrashBackend:
    """How the crash loop's daemon reaches the fake: by default the Developer API path with the
    sentinel key; tests/soak/test_vertex_crash_loop.py puts it on the Vertex path. ``url``: the
    daemon's ``--endpoint`` for the fake; ``env``: more daemon environment; ``secrets``: asked
    at check time, more strings K5 must find nowhere (e.g. every bearer token issued)."""

    fake_options: dict[str, Any] = attrs.Factory(dict)
    url: Callable[[FakeUpstream], str] | None = None
    env: dict[str, str] = attrs.Factory(dict)
    secrets: Callable[[], list[str]] = list


@attrs.define
class CrashParams:
    kills: int = 10
    sessions: int = 3
    seed: int = 0
    break_mode: str | None = None
    time_limit: float = 900.0
    verbose: bool = True


@attrs.define
class CrashResult:
    params: CrashParams
    violations: list[str]
    report: dict[str, Any]

    def text(self) -> str:
        p = self.params
        title = f"crash loop: seed={p.seed} kills={p.kills} sessions={p.sessions} break={p.break_mode}"
        return format_report(title, self.report, self.violations)


class Notify:
    """The test-owned NOTIFY_SOCKET: collects datagrams, wakes waiters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)
        self.messages: list[str] = []
        self._lot = trio.lowlevel.ParkingLot()

    async def bind(self) -> None:
        await self.sock.bind(str(self.path))

    async def run(self) -> None:
        while True:
            data = await self.sock.recv(65536)
            self.messages.append(data.decode(errors="replace"))
            self._lot.unpark_all()

    async def wait_ready(self, pid: int, timeout: float) -> bool:
        want = f"MAINPID={pid}"
        with trio.move_on_after(timeout):
            while not any("READY=1" in m and want in m for m in self.messages):
                await self._lot.park()
            return True
        return False


class Daemon:
    def __init__(self, workdir: Path, url: str, sock: Path, key: str, notify: Notify,
                 break_mode: str | None, extra_env: Mapping[str, str] | None = None) -> None:
        self.workdir, self.url, self.sock, self.notify = workdir, url, sock, notify
        self.state_dir = workdir / "state"
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        env.update(FAST_ENV)
        env.update(GEMINI_API_KEY=key, NOTIFY_SOCKET=str(notify.path),
                   XDG_CONFIG_HOME=str(workdir / "xdg"), PYTHONUNBUFFERED="1")
        env.update(extra_env or {})
        self.env = env
        #: The real daemon, or a broken build of it (tests/soak/broken_build.py runs the same cli).
        self.command = [sys.executable, "-m", "geminid.daemon.cli"]
        if break_mode:
            self.command = [sys.executable, str(Path(__file__).with_name("broken_build.py")), break_mode]
        self.proc: trio.Process | None = None
        self.runs = 0
        self.ready_s: list[float] = []
        self._log = None

    async def start(self) -> bool:
        self.runs += 1
        self._log = open(self.logdir / f"run{self.runs:03d}.log", "wb")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = await trio.lowlevel.open_process(
            [*self.command, "run", "--endpoint", self.url,
             "--socket", str(self.sock), "--state-dir", str(self.state_dir), "--log-format", "json"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        ok = await self.notify.wait_ready(self.proc.pid, 30)
        self.ready_s.append(time.monotonic() - t0)
        return ok

    def kill_now(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def reap(self) -> int:
        assert self.proc is not None
        with trio.CancelScope(shield=True):
            code = await self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            return await self.reap()
        self.kill_now()
        await self.reap()
        return -999

    def log_lines(self) -> list[tuple[str, dict | None, str]]:
        out = []
        for path in sorted(self.logdir.glob("run*.log")):
            for raw in path.read_text(errors="replace").splitlines():
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = None
                out.append((path.name, obj if isinstance(obj, dict) else None, raw))
        return out


class Killer:
    """Decides where the next SIGKILL lands; drivers and clients report what they are doing."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mode: str | None = None
        self.fire = trio.Event()
        self.counts: Counter[str] = Counter()

    def arm(self, mode: str) -> None:
        self.mode = mode
        self.fire = trio.Event()

    def sending(self) -> None:
        if self.mode == "after_send" and not self.fire.is_set():
            self.fire.set()

    def chunk(self) -> None:
        if self.mode == "streaming" and not self.fire.is_set():
            self.fire.set()


class CrashDriver:
    def __init__(self, sc: SoakClient, view: SessionView, session: str, log: SentLog,
                 killer: Killer, rng: random.Random) -> None:
        self.sc, self.view, self.session, self.log = sc, view, session, log
        self.killer, self.rng = killer, rng
        self.n = 0
        self.stop = False
        self.client_kills = 0

    async def turn(self, final: bool = False, timeout: float = 5.0) -> None:
        self.n += 1
        tok = token(self.session, self.n)
        text = f"{tok} " + ("that is all" if final else f"note {self.rng.randrange(10**6)}")
        sent = Sent(self.session, self.n, "final" if final else "text", text,
                    t_send=trio.current_time(), losses_before=len(self.view.context_lost))
        self.log.sent.append(sent)
        mark = len(self.view.text)
        self.killer.sending()
        message = live.client_content(text)
        msg_id = f"{tok}-{self.rng.randrange(16**8):08x}"  # the idempotent send's id
        try:
            with trio.fail_after(60):
                if self.rng.random() < CLIENT_KILL_RATE:
                    await self._client_dies_mid_send(message, msg_id)
                # The client repeats a send cut off by a daemon kill by itself (same id); after a
                # client death the caller repeats it with the id it kept, like a restarted app.
                sent.seq = await self.sc.client.send(self.session, message, id=msg_id)
        except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
            await trio.sleep(0.05)
            return
        sent.t_ack = trio.current_time()
        if not await self.view.wait_for(lambda: tok in self.view.text[mark:], timeout):
            self.log.reply_timeouts += 1

    async def _client_dies_mid_send(self, message: dict, msg_id: str) -> None:
        """The client process dies 0-5 ms into a send: its call is abandoned and its connection
        cut (the reconnecting client comes back as a new incarnation would)."""
        self.client_kills += 1
        with trio.move_on_after(self.rng.uniform(0, 0.005)):
            await self.sc.client.send(self.session, message, id=msg_id)
            return  # acked before it could die: the repeat below is a duplicate, answered so
        stream = self.sc.client._stream  # (test code: the socket the dead process held)
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def run(self) -> None:
        while not self.stop:
            await self.turn()
            await trio.sleep(self.rng.uniform(0, 0.05))


class _ChunkSpy(SessionView):
    """A view that tells the killer when a reply chunk arrives."""

    killer: Killer | None = None

    def on_event(self, method: str, params: dict) -> dict | None:
        before = self.first_chunk_seen
        out = super().on_event(method, params)
        if self.first_chunk_seen != before and _ChunkSpy.killer is not None:
            _ChunkSpy.killer.chunk()
        return out


async def run_crash_loop(params: CrashParams, workdir: Path | None = None, *,
                         backend: CrashBackend | None = None) -> CrashResult:
    backend = backend or CrashBackend()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="geminid-crash-"))
    shortdir = Path(tempfile.mkdtemp(prefix="gcrash-", dir="/tmp"))
    rng = random.Random(params.seed)
    key = "SENTINEL-" + secrets.token_hex(12)
    names = [f"k{i}" for i in range(params.sessions)]
    logs = {n: SentLog(n) for n in names}
    if params.verbose:
        print(f"\ncrash loop: seed={params.seed} (GEMINID_SOAK_SEED={params.seed}), "
              f"kills={params.kills}, sessions={params.sessions}, break={params.break_mode}",
              flush=True)
    started = time.monotonic()
    violations: list[str] = []
    report: dict[str, Any] = {}
    try:
        with trio.fail_after(params.time_limit):
            async with trio.open_nursery() as nursery:
                # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
                # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
                fake = await nursery.start(FakeUpstream(FakeOptions(catalogue=text_catalogue(),
                    api_key=key, reply_pace=0.02, reply_chunks=4, seed=params.seed,
                    **backend.fake_options,
                )).serve)
                notify = Notify(shortdir / "notify")
                with notify.sock:
                    await notify.bind()
                    nursery.start_soon(notify.run)
                    url = backend.url(fake) if backend.url is not None else fake.url()
                    daemon = Daemon(workdir, url, shortdir / "geminid.sock", key, notify,
                                    params.break_mode, backend.env)
                    try:
                        report = await _loop(params, rng, fake, daemon, names, logs, violations)
                    finally:
                        if daemon.proc is not None and daemon.proc.returncode is None:
                            daemon.kill_now()
                            await daemon.reap()
                    check(fake, daemon, names, logs, key, violations, report,
                          tokens=backend.secrets())
                    nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        violations.append(f"crash loop did not finish within {params.time_limit} s")
    report["duration_s"] = round(time.monotonic() - started, 1)
    res = CrashResult(params, violations, report)
    if params.verbose:
        print(res.text(), flush=True)
    return res


async def _loop(params, rng, fake, daemon, names, logs, violations) -> dict[str, Any]:
    killer = Killer(random.Random(rng.random()))
    _ChunkSpy.killer = killer
    if not await daemon.start():
        violations.append("K6 the first daemon never sent READY=1")
        return {}
    report: dict[str, Any] = {"kills": 0, "exit_codes": Counter()}
    views: dict[str, SessionView] = {}
    clients: list[SoakClient] = []
    drivers: list[CrashDriver] = []
    async with contextlib.AsyncExitStack() as stack:
        outer = await stack.enter_async_context(trio.open_nursery())
        for name in names:
            client = await stack.enter_async_context(open_client(
                daemon.sock, reconnect=True, backoff_initial=0.05, backoff_cap=0.3,
                client_name=f"crash-{name}"))
            sc = SoakClient(client, name, rng.randrange(2**32))
            clients.append(sc)
            outer.start_soon(sc.consume, outer)
            await sc.client.open(name, make_setup(name, tools=False))
            view = sc.views[name] = _ChunkSpy(name)
            result = await sc.client.attach(name)
            view.attached(int(result["last_seq"]))
            views[name] = view
            drivers.append(CrashDriver(sc, view, name, logs[name], killer,
                                       random.Random(rng.random())))
        # One answered turn each first, so that every session has a handle on disk.
        async with trio.open_nursery() as warm:
            for d in drivers:
                warm.start_soon(d.turn, False, 10.0)
        async with trio.open_nursery() as work:
            for d in drivers:
                work.start_soon(d.run)
            for _ in range(params.kills):
                await trio.sleep(rng.uniform(0.2, 1.0))
                mode = rng.choice(("after_send", "after_send", "streaming", "random"))
                killer.arm(mode)
                if mode == "random":
                    await trio.sleep(rng.uniform(0.0, 0.5))
                else:
                    with trio.move_on_after(5):
                        await killer.fire.wait()
                    if mode == "after_send":
                        await trio.sleep(rng.uniform(0, 0.005))
                killer.arm("")
                daemon.kill_now()
                code = await daemon.reap()
                report["exit_codes"][str(code)] += 1
                report["kills"] += 1
                killer.counts[mode] += 1
                if not await daemon.start():
                    violations.append(f"K6 restart {daemon.runs} never sent READY=1")
                    break
            for d in drivers:
                d.stop = True
        # Quiesce and one last turn each, then a graceful stop.
        async with trio.open_nursery() as fin:
            for d in drivers:
                fin.start_soon(d.turn, True, 20.0)
        listed = await _wait_quiet(clients[0], names, 30)
        if not all(listed.get(n, {}).get("status") == "live" and listed[n].get("buffered") == 0
                   for n in names):
            violations.append("K3 sessions did not quiesce (live, empty buffer) within 30 s: "
                              + repr({k: (v.get("status"), v.get("buffered"))
                                      for k, v in listed.items()}))
        for s in listed.values():
            report.setdefault("replayed", 0)
            report["replayed"] += int(s.get("replayed") or 0)
    code = await daemon.stop()
    if code != 0:
        violations.append(f"K6 the final SIGTERM ended the daemon with {code}, not 0")
    for d in drivers:
        report.setdefault("reply_timeouts", 0)
        report["reply_timeouts"] += d.log.reply_timeouts
    report["client_kills"] = sum(d.client_kills for d in drivers)
    report["views"] = views
    report["clients"] = clients
    report["kill_points"] = dict(killer.counts)
    report["exit_codes"] = dict(report["exit_codes"])
    report["daemon_starts"] = daemon.runs
    report["ready_s_max"] = round(max(daemon.ready_s), 2)
    report["ready_s_mean"] = round(sum(daemon.ready_s) / len(daemon.ready_s), 2)
    return report


async def _wait_quiet(sc: SoakClient, names: list[str], timeout: float) -> dict[str, dict]:
    listed: dict[str, dict] = {}
    with trio.move_on_after(timeout):
        while True:
            try:
                listed = {s["session"]: s for s in await sc.client.sessions()}
            except (ConnectionLost, RemoteError):
                listed = {}
            if all(n in listed and listed[n]["status"] == "live" and listed[n]["buffered"] == 0
                   for n in names):
                return listed
            await trio.sleep(0.05)
    return listed


def secret_leaks(paths: Iterable[Path], secrets: Mapping[str, Iterable[str]]) -> list[str]:
    """K5: ``what -> strings`` that must appear in none of ``paths`` (read as bytes, whole)."""
    needles = [(what, s.encode()) for what, strings in secrets.items() for s in strings if s]
    found = []
    for path in paths:
        if not path.is_file():
            continue
        data = path.read_bytes()
        for what, needle in needles:
            if needle in data:
                found.append(f"K5 {what} appears in {path}")
    return found


def check(fake, daemon: Daemon, names, logs, key: str, violations: list[str],
          report: dict[str, Any], tokens: list[str] = ()) -> None:
    views: dict[str, SessionView] = report.pop("views", {})
    clients: list[SoakClient] = report.pop("clients", [])
    # K1: checkpoints
    lines = daemon.log_lines()
    levels: Counter[str] = Counter()
    for name, obj, _raw in lines:
        if obj is None:
            continue
        event, level = obj.get("event"), obj.get("level")
        levels[level] += 1
        if event in ("checkpoint.quarantined", "checkpoint.unusable"):
            violations.append(f"K1 {name}: {event} {obj.get('path') or obj.get('session')}: "
                              f"{obj.get('reason') or obj.get('error')}")
        elif level in ("error", "critical"):
            violations.append(f"K6 {name}: error-level log line: {event} {obj}")
    non_json = [raw for _n, obj, raw in lines if obj is None and raw.strip()]
    if non_json:
        violations.append(f"K6 {len(non_json)} non-JSON lines in daemon output, e.g. {non_json[0][:200]!r}")
    state = daemon.state_dir
    for path in sorted(state.iterdir()) if state.exists() else []:
        if ".corrupt-" in path.name:
            violations.append(f"K1 quarantined checkpoint file {path.name}")
        elif path.name.endswith(".ckpt"):
            try:
                decode_record(path.read_bytes(), path.name[: -len(".ckpt")])
            except Exception as exc:  # noqa: BLE001 - any failure to decode is the finding
                violations.append(f"K1 {path.name} does not decode: {exc!r}")
    report["checkpoint_files"] = len(list(state.glob("*.ckpt"))) if state.exists() else 0
    # K5: the sentinel key and the backend's tokens, in logs and state; handles, in logs.
    log_files = list(daemon.logdir.rglob("*"))
    state_files = list(state.rglob("*")) if state.exists() else []
    violations.extend(secret_leaks(log_files + state_files, {"the API key": [key], "a token": tokens}))
    handles = [h for r in fake.accepted for h in r.handles]
    violations.extend(secret_leaks(log_files, {"a resumption handle": handles}))
    report["secrets_checked"] = 1 + len(tokens) + len(handles)
    # K2/K3: conversations
    convs: dict[str, list[str]] = {}
    records: dict[str, list] = {}
    for rec in fake.accepted:
        sess = session_of_setup(rec.setup)
        if sess is None:
            continue
        records.setdefault(sess, []).append(rec)
        if rec.conversation_id and rec.conversation_id not in convs.get(sess, []):
            convs.setdefault(sess, []).append(rec.conversation_id)
    totals: Counter[str] = Counter()
    for name in names:
        cids = convs.get(name, [])
        view = views.get(name)
        if len(cids) != 1:
            violations.append(f"K2 {name}: {len(cids)} conversations on the fake (want 1: resumed "
                              "every time)")
        recs = records.get(name, [])
        fresh_dials = [r.id for r in recs[1:] if r.resumed_handle is None]
        if fresh_dials:
            violations.append(f"K2 {name}: connections {fresh_dials} started fresh instead of resuming")
        if view is not None and view.context_lost:
            violations.append(f"K2 {name}: {len(view.context_lost)} session.context_lost notices")
        if not cids:
            continue
        conv_turns = [list(fake.conversations[c].user_turns) for c in cids]
        t = check_turns(name, conv_turns, logs[name].turns(), 0, violations)
        totals.update(t)
        totals["rollbacks"] += sum(fake.conversations[c].rollbacks for c in cids)
        totals["conn_resumed"] += sum(1 for r in recs if r.resumed_handle)
        if view is not None:
            for g in view.gaps_unannounced:
                violations.append(f"K4 {name}: {g}")
            totals["lagged"] += len(view.lagged)
        for s in logs[name].sent:
            if s.error:
                totals["send_errors"] += 1
                # K7: send() is idempotent and retries across daemon restarts by itself (and the
                # driver repeats it with its id after a client death): it never fails here.
                violations.append(f"K7 {name}: send() of turn #{s.n} failed instead of retrying: {s.error}")
    report.update({
        "turns_acked": totals["acked"],
        "turns_unacked_at_kill": totals["unacked"],
        "unacked_present_once": totals["unacked_present"],
        "duplicates": totals["duplicates"],
        "connections_accepted": len(fake.accepted),
        "connections_resumed": totals["conn_resumed"],
        "rollbacks_on_fake": totals["rollbacks"],
        "lagged_notices": totals["lagged"],
        "send_errors": totals["send_errors"],
        "client_disconnects": sum(c.disconnects for c in clients),
        "log_levels": dict(levels),
    })
