"""The chaos soak: the whole daemon core under random upstream faults, checked against the fake's
own record of every conversation.

Set-up (in-process, see README.md, "Chaos soak and crash loop", for why): the fake upstream listens on real
loopback TCP; the session registry, the checkpoint store (real files, real fsync) and the REAL
Unix-socket server run in this trio loop; ``sessions`` driver clients plus one observer client
talk to the daemon only over the Unix socket with the trio client library. A seeded fault
injector hits the fake's live connections while the drivers send turns, audio streams and tool
calls. In-process means one trio clock for everybody, so the checker can compare the time an
audio chunk was sent with the time the fake accepted a connection (the staleness rule), and the
fake's records can be read directly.

Forms (``SoakParams.form``, soak_client.FORMS): the run is against one catalogue entry of the 2026
fake: "3.8-text" (TEXT on gemini-3.8-live, as before), "3.8-audio" (audio only, the reply text read
from ``outputTranscription``) or "3.8-extended" (gemini-3.8-live-extended-thinking: a filler ending
``turnComplete`` + IN_PROGRESS, then the answer ending IDLE). The tool share has BLOCKING calls
(where the model takes them) and NON_BLOCKING ones, answered WHEN_IDLE, SILENT, INTERRUPT or as
``willContinue`` generators, often only after the user spoke again. A driver waits for a turn's
token in the reply (a filler never carries it: fillers are not answers) and, to let a reply finish,
for the end of the interaction (a ``turnComplete`` that is not IN_PROGRESS).

What is checked (``check``), per session; ``C_0..C_m`` are the fake conversations that belong to
the session (mapped through the setup's systemInstruction), in creation order:

T1  every turn whose ``session.send`` returned ``{seq}`` is in the final ``user_turns`` of at
    least one ``C_j`` (no loss);
T2  within each ``C_j`` every turn appears at most once, in send order (no duplicate, no reorder);
T3  ``home(t)`` = the last ``C_j`` holding turn ``t`` never decreases along the send order (a
    later turn never lives only in an older conversation);
T4  a turn sent after the client had received ``k`` ``session.context_lost`` notices has
    ``home(t) >= k``, and every turn sent after the last notice is in the final conversation;
C1  every fresh conversation after the first that received any client message was announced:
    ``#notices >= #used fresh conversations`` and ``#notices <= #conversations - 1`` (no false
    alarm); the observer client got the same notices as the driver;
K1  every toolCall delivered to the driver was answered (its toolResponse reached the fake) or
    reported: ``session.tool_call_lost`` / a ToolCallLost error / toolCallCancellation;
K2  a NON_BLOCKING call is never cancelled (no toolCallCancellation, no "cancelled" refusal of its
    response): new input does not end it, only a reconnect loses it (reported, K1);
A1  an acknowledged audio chunk that never reached the fake was stale: no connection of the session
    that received later input opened before the chunk was sent or less than
    ``audio_staleness`` (- 0.25 s of setup slack) after it;
A2  (report) chunks missing vs ``dropped_stale + dropped_full`` from ``session.list``;
E1  every client saw contiguous event seqs, or a ``session.lagged`` covering each gap;
S1  every session ends live with an empty replay buffer; no send of a turn failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio
from broken_build import broken
from soak_client import (
    FORMS,
    NON_BLOCKING_TOOL,
    Form,
    Sent,
    SentLog,
    SessionView,
    SoakClient,
    format_report,
    make_setup,
    parse_pcm_chunk,
    parse_token,
    pcm_chunk,
    session_of_setup,
    token,
)

from geminid.daemon import logsetup
from geminid.daemon.config import Config, ServerConfig, SessionConfig, UpstreamConfig
from geminid.daemon.fake import CANCELLED_REASON, FakeOptions, FakeUpstream, Fault, text_catalogue
from geminid.daemon.fake.catalogue import catalogue_2026
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import start_core
from geminid.daemon.server import serve_unix
from geminid.daemon.upstream import BackoffPolicy, Dial, Endpoint, FixedKey
from geminid.protocol import live
from geminid.protocol.client import ConnectionLost, RemoteError, open_client

KEY = "soak-test-key"
CITIES = ("Paris", "Lagos", "Lima", "Oslo", "Pune", "Quito")
FAULT_1011 = (
    "Internal error encountered.",
    "The service is currently unavailable.",
    "Deadline expired before operation could complete.",
)

#: fault kind -> weight. Live faults hit one random open connection (or all, for *_all).
FAULT_WEIGHTS: dict[str, float] = {
    "drop": 14,
    "drop_all": 3,
    "close_1000": 8,
    "close_1011": 10,
    "close_quota": 2,
    "goaway": 10,
    "goaway_all": 2,
    "stall": 6,
    "refuse_429": 3,
    "refuse_503": 4,
    "expire_handles": 3,
    "script_mid_turn": 8,
    "script_mid_tool_call": 6,
    "script_after_turns": 4,
    "script_after_setup": 3,
    "script_mid_stream": 4,
}


@attrs.define
class SoakParams:
    turns: int = 1000
    sessions: int = 4
    seed: int = 0
    #: seconds between faults: uniform in this range
    fault_gap: tuple[float, float] = (0.08, 0.35)
    audio_staleness: float = 1.0
    #: a deliberately broken build (tests/soak/broken_build.py), None for the real one
    break_mode: str | None = None
    time_limit: float = 900.0
    #: how long a driver waits for the reply to a turn before moving on (counted, not fatal)
    reply_timeout: float = 10.0
    #: how long the end of the run waits for every session to be live with an empty buffer
    quiet_timeout: float = 30.0
    #: faults the run must have injected while turns were being sent (None: ``turns // 20``).
    #: Faults come by the clock and turns as fast as the daemon answers, so a fast run would
    #: otherwise see fewer faults: the drivers send extra turns until this many have landed.
    min_faults: int | None = None
    #: the catalogue entry and fake options (soak_client.FORMS): "3.8-text", "3.8-audio",
    #: "3.8-extended"
    form: str = "3.8-text"
    verbose: bool = True


@attrs.define
class SoakResult:
    params: SoakParams
    violations: list[str]
    report: dict[str, Any]

    def text(self) -> str:
        p = self.params
        title = (f"chaos soak: form={p.form} seed={p.seed} turns={p.turns} sessions={p.sessions} "
                 f"break={p.break_mode}")
        return format_report(title, self.report, self.violations)


def soak_config(state_dir: Path, socket_path: Path, staleness: float) -> Config:
    return Config(
        state_dir=state_dir,
        backoff=BackoffPolicy(
            initial=0.05, cap=0.4, stable_after=0.5, quick_failure=0.1, max_attempts=100_000,
            quota_initial=0.2, quota_cap=0.5, max_failed_resumes=3,
            rotation_limit=6, rotation_window=2.0,
        ),
        upstream=UpstreamConfig(
            connect_timeout=3, setup_timeout=3, stall_timeout=1.0, keepalive_interval=0,
        ),
        session=SessionConfig(inactivity_timeout=0, goaway_margin=0.2, audio_staleness=staleness),
        server=ServerConfig(socket_path=socket_path),
    )


class _QuietLogs:
    """Only warnings and errors from the in-process daemon while the soak runs (a 10,000-turn
    run logs ~100 lines per second at info); restored afterwards."""

    def __init__(self) -> None:
        self.level = logsetup.get_level()
        self.configured = structlog.is_configured()
        logsetup.set_level("warning")  # loggers cached by logsetup's own pipeline
        if not self.configured:
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    def restore(self) -> None:
        logsetup.set_level(self.level)
        if not self.configured:
            structlog.reset_defaults()


class Injector:
    def __init__(self, fake: FakeUpstream, rng: random.Random, gap: tuple[float, float]) -> None:
        self.fake = fake
        self.rng = rng
        self.gap = gap
        self.counts: Counter[str] = Counter()
        self.kinds = list(FAULT_WEIGHTS)
        self.weights = [FAULT_WEIGHTS[k] for k in self.kinds]

    def _one(self):
        conns = self.fake.open_sessions()  # (not a pre-dialled connection without its setup yet)
        return self.rng.choice(conns) if conns else None

    @property
    def injected(self) -> int:
        return sum(self.counts.values())

    async def run(self) -> None:
        while True:
            await trio.sleep(self.rng.uniform(*self.gap))
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if await self.apply(kind):
                self.counts[kind] += 1

    async def apply(self, kind: str) -> bool:
        fake, rng = self.fake, self.rng
        if kind.startswith("script_"):
            if len(fake._script) >= 3:  # only the next few connections are scripted
                return False
            fault = rng.choice([
                Fault.drop(), Fault.close(1011, rng.choice(FAULT_1011)),
                Fault.goaway(rng.uniform(0.2, 1.5)), Fault.close(1000, CANCELLED_REASON),
            ])
            trigger = {
                "script_mid_turn": {"after_chunks": rng.randint(1, 2)},
                "script_mid_tool_call": {"after_tool_call": True},
                "script_after_turns": {"after_turns": rng.randint(1, 3)},
                "script_after_setup": {"after_setup": True},
                "script_mid_stream": {"after_messages": rng.randint(1, 6)},
            }[kind]
            fake.script(fault, **trigger)
            return True
        if kind in ("drop_all", "goaway_all"):
            if kind == "drop_all":
                await fake.drop_all()
            else:
                await fake.goaway_all(rng.uniform(0.2, 1.5))
            return True
        if kind in ("refuse_429", "refuse_503"):
            fake.refuse_next(rng.randint(1, 3), 429 if kind == "refuse_429" else 503)
            conn = self._one()
            if conn is not None:
                conn.drop_now()
            return True
        if kind == "expire_handles":
            fake.expire_handles()
            conn = self._one()
            if conn is not None:
                conn.drop_now()
            return True
        conn = self._one()
        if conn is None:
            return False
        if kind == "drop":
            conn.drop_now(rst=rng.random() < 0.3)
        elif kind == "close_1000":
            conn.queue_fault(Fault.close(1000, CANCELLED_REASON))
        elif kind == "close_1011":
            conn.queue_fault(Fault.close(1011, rng.choice(FAULT_1011)))
        elif kind == "close_quota":
            conn.queue_fault(Fault.close(1011, "RESOURCE_EXHAUSTED: Maximum concurrent sessions"))
        elif kind == "goaway":
            conn.queue_fault(Fault.goaway(rng.uniform(0.2, 1.5)))
        elif kind == "stall":
            conn.stall_now(rng.uniform(0.5, 2.5))
        return True


def fake_options(form: Form, seed: int) -> FakeOptions:
    """The fake of one soak form: its catalogue entry, its UNCONFIRMED handle rules."""
    # TEXT on gemini-3.8-live (text_catalogue): the text form reads text replies; Vertex lists
    # text output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it
    # there. The audio forms use the 2026 catalogue as it is (audio only).
    return FakeOptions(
        catalogue=text_catalogue() if form.text_catalogue else catalogue_2026(),
        reply_pace=0.004, reply_chunks=3, seed=seed, lifetime=6.0, goaway_before=1.5,
        resumable_in_progress=form.resumable_in_progress,
        resumable_pending_calls=form.resumable_pending_calls,
    )


#: plan -> weight for a NON_BLOCKING tool turn's response (soak_client.SCHEDULINGS)
PLAN_WEIGHTS = {"WHEN_IDLE": 4, "SILENT": 3, "INTERRUPT": 2, "CONTINUE": 2}


class Driver:
    """Drives one session from one client: text turns, tool turns (BLOCKING and NON_BLOCKING)
    and audio streams."""

    def __init__(self, sc: SoakClient, view: SessionView, session: str, index: int,
                 log: SentLog, rng: random.Random, staleness: float, reply_timeout: float,
                 form: Form) -> None:
        self.sc, self.view, self.session, self.index = sc, view, session, index
        self.log, self.rng = log, rng
        self.reply_timeout = reply_timeout
        self.form = form
        self.chunk = 0
        self.staleness = staleness
        #: the number of the last turn ``run`` sent
        self.last = 0

    async def _send(self, sent: Sent, message: dict) -> bool:
        sent.t_send = trio.current_time()
        sent.losses_before = len(self.view.context_lost)
        self.log.sent.append(sent)
        try:
            sent.seq = await self.sc.client.send(self.session, message)
        except (RemoteError, ConnectionLost) as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
            return False
        sent.t_ack = trio.current_time()
        return True

    async def turn(self, n: int, kind: str, timeout: float | None = None) -> None:
        timeout = self.reply_timeout if timeout is None else timeout
        tok = token(self.session, n)
        view = self.view
        plan = None
        if kind == "tool":
            text = f"{tok} what is the weather in {self.rng.choice(CITIES)}?"
        elif kind == "nbtool":
            text = f"{tok} {NON_BLOCKING_TOOL} in {self.rng.choice(CITIES)}?"
            plan = view.plans[n] = self.rng.choices(list(PLAN_WEIGHTS), list(PLAN_WEIGHTS.values()))[0]
        elif kind == "final":
            text = f"{tok} thanks, that is all"
        else:
            text = f"{tok} note {self.rng.randrange(10**6)}"
        mark = len(view.text)
        # A reply is over at the end of the model's interaction (IDLE), not at a filler.
        waited_for: Callable[[], bool] = lambda: tok in view.text[mark:]  # noqa: E731
        if plan == "SILENT":
            # Context only: no reply will carry the token; the response reaching the daemon is
            # the end of the round trip.
            waited_for = lambda: (any(view.tool_outcome.get(i) == "acked" for i in view.calls_of(n))  # noqa: E731
                                  or tok in view.text[mark:])
        if plan is not None and plan != "INTERRUPT" and self.rng.random() < 0.4:
            # The user goes on talking as soon as the call is out: the NON_BLOCKING call must
            # survive the next turn (and its response still reach the model).
            waited_for = lambda: bool(view.calls_of(n)) or tok in view.text[mark:]  # noqa: E731
        if plan == "INTERRUPT":
            view.waiting_turn = n  # an INTERRUPT cuts what the model says: only this turn's filler
        if not await self._send(Sent(self.session, n, kind, text), live.client_content(text)):
            return
        t0 = trio.current_time()
        if not await view.wait_for(lambda: waited_for() or view.call_given_up(n), timeout):
            self.log.reply_timeouts += 1
        elif self.rng.random() < 0.5:
            # Half the time let the interaction finish; otherwise the next turn interrupts it.
            ends = view.interaction_ends
            await view.wait_for(lambda: view.interaction_ends > ends, 2.0)
        view.waiting_turn = None
        if trio.current_time() - t0 > 1.0:
            self.log.slow.append((n, kind, round(trio.current_time() - t0, 2)))

    async def audio(self, n: int) -> None:
        mark = len(self.view.text)
        for _ in range(self.rng.randint(3, 8)):
            self.chunk += 1
            ms = self.rng.choice((20, 30, 40))
            sent = Sent(self.session, n, "audio", chunk=self.chunk)
            await self._send(sent, live.realtime_audio(pcm_chunk(self.index, self.chunk, ms)))
            await trio.sleep(ms / 4000)  # 4x faster than real time
        await self._send(Sent(self.session, n, "audio_end"), live.audio_stream_end())
        t0 = trio.current_time()
        if not await self.view.wait_for(lambda: "ms of audio)" in self.view.text[mark:],
                                        min(3.0, self.reply_timeout)):
            self.log.reply_timeouts += 1
        if trio.current_time() - t0 > 1.0:
            self.log.slow.append((n, "audio", round(trio.current_time() - t0, 2)))

    async def run(self, turns: int, more: Callable[[], bool] = lambda: False) -> None:
        """``turns`` turns, then more while ``more()`` says so (the run is not yet under fire)."""
        n = 0
        while n < turns or more():
            n += 1
            r = self.rng.random()
            if r < 0.15:
                await self.audio(n)
            elif r < 0.32:
                # The tool share: BLOCKING and NON_BLOCKING calls (NON_BLOCKING only where the
                # model takes no other).
                blocking = self.form.blocking_tool and self.rng.random() < 0.5
                await self.turn(n, "tool" if blocking else "nbtool")
            else:
                await self.turn(n, "text")
            self.last = n


@attrs.define
class SoakBackend:
    """How the soak's daemon reaches the fake. The default: the Developer API path with a fixed
    key. ``fake_options`` are extra ``FakeOptions`` fields; ``wire(cfg, fake)`` returns the
    config and the ``Dial`` to use instead (tests/soak/test_vertex_soak.py: the Vertex path,
    google-auth bearer tokens, transparent mode)."""

    fake_options: dict[str, Any] = attrs.Factory(dict)
    wire: Callable[[Config, FakeUpstream], tuple[Config, Dial]] | None = None


async def run_soak(params: SoakParams, workdir: Path | None = None, *,
                   backend: SoakBackend | None = None) -> SoakResult:
    """Run one soak and check it; never raises for a violation (see ``SoakResult.violations``)."""
    backend = backend or SoakBackend()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="geminid-soak-"))
    sockdir = Path(tempfile.mkdtemp(prefix="gsoak-", dir="/tmp"))  # short sun_path
    state_dir = workdir / "state"
    rng = random.Random(params.seed)
    names = [f"s{i}" for i in range(params.sessions)]
    per_session = [params.turns // params.sessions + (1 if i < params.turns % params.sessions else 0)
                   for i in range(params.sessions)]
    if params.verbose:
        print(f"\nchaos soak: seed={params.seed} (GEMINID_SOAK_SEED={params.seed} to reproduce the "
              f"fault sequence), form={params.form}, turns={params.turns}, sessions={params.sessions}, "
              f"break={params.break_mode}", flush=True)
    quiet = _QuietLogs()
    started = time.monotonic()
    violations: list[str] = []
    logs = {s: SentLog(s) for s in names}
    global LAST_LOGS
    LAST_LOGS = logs
    try:
        with broken(params.break_mode), trio.fail_after(params.time_limit):
            async with trio.open_nursery() as nursery:
                fake = await nursery.start(FakeUpstream(attrs.evolve(
                    fake_options(FORMS[params.form], params.seed), **backend.fake_options)).serve)
                cfg = soak_config(state_dir, sockdir / "geminid.sock", params.audio_staleness)
                metrics = Metrics()
                if backend.wire is not None:
                    cfg, dial = backend.wire(cfg, fake)
                else:
                    dial = Dial(Endpoint.parse(fake.url()), FixedKey(KEY), cfg.upstream.connect_timeout,
                                cfg.upstream.setup_timeout, cfg.upstream.max_message_size)
                registry = await start_core(nursery, cfg, dial, metrics, upstream_kind="fake", records={})
                sock = await nursery.start(serve_unix, registry, cfg.server)
                global LAST_FAKE  # post-mortem debugging of the last run (see LAST_LOGS)
                LAST_FAKE = fake
                result = await _drive(params, rng, fake, registry, metrics, sock, names,
                                      per_session, logs)
                violations, report = result
                nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        violations.append(f"soak did not finish within {params.time_limit} s")
        report = {}
    finally:
        quiet.restore()
    report["duration_s"] = round(time.monotonic() - started, 1)
    if report.get("turns"):
        report["turns_per_s"] = round(report["turns"] / report["duration_s"], 1)
    res = SoakResult(params, violations, report)
    if params.verbose:
        print(res.text(), flush=True)
    return res


async def _drive(params, rng, fake, registry, metrics, sock, names, per_session, logs):
    injector = Injector(fake, random.Random(rng.random()), params.fault_gap)
    form = FORMS[params.form]
    async with contextlib.AsyncExitStack() as stack:
        outer = await stack.enter_async_context(trio.open_nursery())
        clients: list[SoakClient] = []
        drivers: list[Driver] = []
        observer_views: dict[str, SessionView] = {}
        for name in names + ["observer"]:
            client = await stack.enter_async_context(open_client(sock, client_name=f"soak-{name}"))
            sc = SoakClient(client, name, rng.randrange(2**32))
            clients.append(sc)
            outer.start_soon(sc.consume, outer)
        for i, name in enumerate(names):
            await clients[i].client.open(name, make_setup(name, tools=True, form=form))
            view = await clients[i].attach(name, answer_tools=True)
            drivers.append(Driver(clients[i], view, name, i, logs[name],
                                  random.Random(rng.random()), params.audio_staleness,
                                  params.reply_timeout, form))
            observer_views[name] = await clients[-1].attach(name)
        # Let every session reach live once before the chaos starts.
        for d in drivers:
            await d.view.wait_for(lambda d=d: "live" in d.view.statuses, 10)
        min_faults = params.turns // 20 if params.min_faults is None else params.min_faults
        async with trio.open_nursery() as inner:
            inner.start_soon(injector.run)
            async with trio.open_nursery() as work:
                for d, turns in zip(drivers, per_session, strict=True):
                    work.start_soon(d.run, turns, lambda: injector.injected < min_faults)
            inner.cancel_scope.cancel()
        # Quiesce: no new faults; clear what is armed; one last turn per session.
        fake._script.clear()
        fake._refusals.clear()
        async with trio.open_nursery() as work:
            for d in drivers:
                work.start_soon(d.turn, d.last + 1, "final", params.quiet_timeout)
        # The listing that showed the quiet point is the one checked: a later one may catch a
        # session in a lifetime rotation (the fake cuts every 6 s), which is no violation.
        quiet, sessions = await _wait_quiet(clients[0], names, params.quiet_timeout)
        violations: list[str] = []
        if not quiet:
            violations.append(f"S1 sessions did not quiesce (live, empty buffer) within "
                              f"{params.quiet_timeout} s: "
                              + repr({k: (v["status"], v["buffered"]) for k, v in sessions.items()}))
        report = check(fake, names, logs, drivers, observer_views, sessions, metrics, injector,
                       params.audio_staleness, violations, form)
    return violations, report


async def _wait_quiet(sc: SoakClient, names: list[str], timeout: float) -> tuple[bool, dict[str, dict]]:
    """Wait until every session is live with an empty buffer and no pending call; returns
    whether that came, and the last ``session.list``."""
    listed: dict[str, dict] = {}
    with trio.move_on_after(timeout):
        while True:
            listed = {s["session"]: s for s in await sc.client.sessions()}
            if all(n in listed and listed[n]["status"] == "live" and listed[n]["buffered"] == 0
                   and not listed[n]["pending_tool_calls"] for n in names):
                return True, listed
            await trio.sleep(0.05)
    return False, listed


def session_conversations(fake: FakeUpstream) -> tuple[dict[str, list[str]], dict[str, list]]:
    """session -> its conversation ids in creation order; session -> its accepted records."""
    conv_of: dict[str, str] = {}
    records: dict[str, list] = {}
    for rec in fake.accepted:
        sess = session_of_setup(rec.setup)
        if sess is None:
            continue
        records.setdefault(sess, []).append(rec)
        if rec.conversation_id:
            conv_of[rec.conversation_id] = sess
    convs: dict[str, list[str]] = {}
    for cid in sorted(conv_of, key=lambda c: int(c[1:])):
        convs.setdefault(conv_of[cid], []).append(cid)
    return convs, records


def check_turns(session: str, conv_turns: list[list[str]], turns: list[Sent], notices: int,
                violations: list[str], *, strict_unacked: bool = False) -> dict[str, int]:
    """T1-T4 for one session. ``conv_turns``: the user_turns of C_0..C_m."""
    acked = {s.n: s for s in turns if s.seq is not None}
    home: dict[int, int] = {}
    dupes = 0
    for j, user_turns in enumerate(conv_turns):
        seen: list[int] = []
        for text in user_turns:
            tok = parse_token(text)
            if tok is None:
                continue  # audio label "(N ms of audio)"
            sess, n = tok
            if sess != session:
                violations.append(f"T2 {session}: conversation {j} holds a turn of {sess}: {text!r}")
                continue
            if n in seen:
                dupes += 1
                violations.append(f"T2 {session}: turn #{n} appears twice in conversation {j}")
            elif seen and n < seen[-1]:
                violations.append(f"T2 {session}: turn #{n} after #{seen[-1]} in conversation {j}")
            seen.append(n)
            home[n] = j
    last = len(conv_turns) - 1
    prev_home, prev_n = -1, None
    for n in sorted(acked):
        s = acked[n]
        if n not in home:
            violations.append(f"T1 {session}: acknowledged turn #{n} (seq {s.seq}) is in no conversation")
            continue
        if home[n] < prev_home:
            violations.append(f"T3 {session}: turn #{n} lives in conversation {home[n]} but the "
                              f"earlier turn #{prev_n} in {prev_home}")
        prev_home, prev_n = home[n], n
        if home[n] < s.losses_before:
            violations.append(f"T4 {session}: turn #{n} sent after {s.losses_before} context losses "
                              f"lives in conversation {home[n]}")
        if s.losses_before >= notices and home[n] != last and notices > 0:
            violations.append(f"T4 {session}: turn #{n} sent after the last context loss is not in "
                              "the final conversation")
    unacked = [s for s in turns if s.seq is None]
    present_unacked = sum(1 for s in unacked if s.n in home)
    return {"acked": len(acked), "unacked": len(unacked), "unacked_present": present_unacked,
            "duplicates": dupes}


def check(fake, names, logs, drivers, observer_views, sessions, metrics, injector, staleness,
          violations, form: Form) -> dict[str, Any]:
    convs, records = session_conversations(fake)
    totals: Counter[str] = Counter()
    suspected: list[str] = []
    for i, name in enumerate(names):
        log, view = logs[name], drivers[i].view
        cids = convs.get(name, [])
        summary = sessions.get(name, {})
        if summary.get("status") != "live":
            violations.append(f"S1 {name}: ended {summary.get('status')} ({summary.get('reason')})")
        for s in log.sent:
            if s.error is not None and s.kind != "audio_end":
                violations.append(f"S1 {name}: send of {s.kind} #{s.n} failed: {s.error}")
        if not cids:
            violations.append(f"T1 {name}: the fake has no conversation for it")
            continue
        conv_turns = [list(fake.conversations[c].user_turns) for c in cids]
        notices = len(view.context_lost)
        t = check_turns(name, conv_turns, log.turns(), notices, violations)
        totals.update(t)
        # C1: announcements
        used = set()
        for rec in records.get(name, []):
            if rec.conversation_id and any(next(iter(m)) != "setup" for m in rec.messages):
                used.add(rec.conversation_id)
        used_fresh = sum(1 for c in cids[1:] if c in used)
        if notices < used_fresh:
            violations.append(f"C1 {name}: {used_fresh} fresh conversations were used but only "
                              f"{notices} session.context_lost notices arrived")
        if notices > len(cids) - 1:
            violations.append(f"C1 {name}: {notices} context_lost notices for {len(cids) - 1} "
                              "fresh conversations")
        obs = observer_views[name]
        if len(obs.context_lost) != notices:
            violations.append(f"C1 {name}: observer saw {len(obs.context_lost)} context_lost, "
                              f"driver {notices}")
        totals["context_lost"] += notices
        totals["suspected_context_lost"] += len(view.suspected_lost)
        suspected.extend(f"{name}: {p.get('reason')}" for p in view.suspected_lost)
        totals["conversations"] += len(cids)
        totals["conversations_used"] += len(used)
        totals["rollbacks"] += sum(fake.conversations[c].rollbacks for c in cids)
        # K1: tool calls
        received_responses = set()
        for rec in records.get(name, []):
            for m in rec.messages:
                for fr in (m.get("toolResponse") or {}).get("functionResponses") or []:
                    received_responses.add(fr.get("id"))
        for call_id in view.tool_calls:
            outcome = view.tool_outcome.get(call_id)
            # A ToolCallLost refusal is a report: "lost" to a reconnect, or "cancelled" by input
            # written while a BLOCKING call was pending (e.g. turns held behind a replay, released
            # when the replayed turn made the call); K2 below still forbids it for NON_BLOCKING.
            reported = (call_id in view.tool_call_lost_ids or call_id in view.cancelled_ids
                        or outcome in ("lost", "cancelled"))
            if outcome == "acked" and call_id in received_responses:
                totals["tool_answered"] += 1
            elif reported:
                totals["tool_reported_lost_or_cancelled"] += 1
            elif outcome == "acked":
                violations.append(f"K1 {name}: tool call {call_id} answered (acked) but the response "
                                  "never reached the server and no loss was reported")
            else:
                violations.append(f"K1 {name}: tool call {call_id} neither answered nor reported "
                                  f"lost (outcome {outcome})")
        totals["tool_calls"] += len(view.tool_calls)
        # K2: a NON_BLOCKING call survives new input (only a reconnect loses it)
        sends = sorted(s.t_send for s in log.turns())
        for call_id, call in view.tool_calls.items():
            if not view.non_blocking(call):
                continue
            totals["nb_calls"] += 1
            outcome = view.tool_outcome.get(call_id)
            if call_id in view.cancelled_ids or outcome == "cancelled":
                violations.append(f"K2 {name}: NON_BLOCKING call {call_id} was cancelled "
                                  f"({'toolCallCancellation' if call_id in view.cancelled_ids else 'refused'})")
            if outcome == "acked":
                totals["nb_answered"] += 1
                t0, t1 = view.call_at.get(call_id, 0.0), view.answered_at.get(call_id, 0.0)
                if any(t0 < t < t1 for t in sends):
                    totals["nb_answered_after_new_input"] += 1
        for plan in view.plans.values():
            totals[f"nb_plan_{plan.lower()}"] += 1
        totals["fillers"] += view.in_progress_ends
        totals["interaction_ends"] += view.interaction_ends
        totals["audio_reply_chunks"] += view.audio_chunks
        # A1/A2: audio
        sent_chunks = {s.chunk: s for s in log.audio() if s.seq is not None}
        got: Counter[int] = Counter()
        later_by_conn: list[tuple[float, int, int]] = []  # (opened_at, max chunk, max turn n)
        for rec in records.get(name, []):
            max_chunk, max_n = 0, 0
            for m in rec.messages:
                pc = parse_pcm_chunk(m)
                if pc is not None and pc[0] == i:
                    got[pc[1]] += 1
                    max_chunk = max(max_chunk, pc[1])
                elif "clientContent" in m:
                    for turn in m["clientContent"].get("turns") or []:
                        for part in turn.get("parts") or []:
                            tok = parse_token(part.get("text") or "")
                            if tok and tok[0] == name:
                                max_n = max(max_n, tok[1])
            later_by_conn.append((rec.opened_at, max_chunk, max_n))
        missing = [c for c in sent_chunks if c not in got]
        for c in missing:
            s = sent_chunks[c]
            for opened, max_chunk, max_n in later_by_conn:
                # Only connections that received input sent after the chunk tell anything: the
                # daemon writes in seq order, so such a connection skipped the chunk. Fine if the
                # chunk was stale when the connection went live; a connection that was already
                # open when the chunk was sent has no excuse.
                if (max_chunk > c or max_n > s.n) and opened - s.t_send < staleness - 0.25:
                    violations.append(
                        f"A1 {name}: audio chunk {c} skipped by a connection opened "
                        f"{opened - s.t_send:+.2f} s after it was sent (staleness {staleness} s)")
                    break
        totals["audio_sent"] += len(sent_chunks)
        totals["audio_received_unique"] += len(got)
        totals["audio_duplicates"] += sum(v - 1 for v in got.values())
        totals["audio_missing"] += len(missing)
        totals["dropped_stale"] += int(summary.get("dropped_stale") or 0)
        totals["dropped_full"] += int(summary.get("dropped_full") or 0)
        totals["reply_timeouts"] += log.reply_timeouts
        # E1: event seqs, for the driver and the observer
        for v, who in ((view, "driver"), (obs, "observer")):
            for g in v.gaps_unannounced:
                violations.append(f"E1 {name} ({who}): {g}")
            totals["lagged_notices"] += len(v.lagged)
    m = metrics.as_dict()
    turns_total = sum(len({x.n for x in logs[name].sent if x.seq is not None}) for name in names)
    report: dict[str, Any] = {
        "form": form.name,
        "turns": turns_total,
        "turns_acked": totals["acked"],  # text and tool turns (audio turns are not acked as such)
        "turns_unacked": totals["unacked"],
        "duplicates": totals["duplicates"],
        "faults_injected": sum(injector.counts.values()),
        "dials": fake.dials,
        "connections_accepted": len(fake.accepted),
        "resumes": m["resumes"],
        "fresh_starts": m["fresh_fallbacks"],
        "conversations": totals["conversations"],
        "context_lost_notices": totals["context_lost"],
        "suspected_context_lost": totals["suspected_context_lost"],
        "rollbacks_on_fake": totals["rollbacks"],
        "replayed_messages": m["replayed"],
        "tool_calls": totals["tool_calls"],
        "tool_answered": totals["tool_answered"],
        "tool_reported_lost_or_cancelled": totals["tool_reported_lost_or_cancelled"],
        "tool_calls_lost_metric": m["tool_calls_lost"],
        "nb_calls": totals["nb_calls"],
        "nb_answered": totals["nb_answered"],
        "nb_answered_after_new_input": totals["nb_answered_after_new_input"],
        "nb_plans": {k[len("nb_plan_"):]: v for k, v in totals.items() if k.startswith("nb_plan_")},
        "fillers_in_progress": totals["fillers"],
        "interaction_ends": totals["interaction_ends"],
        "audio_reply_chunks": totals["audio_reply_chunks"],
        "audio_chunks_sent": totals["audio_sent"],
        "audio_chunks_received": totals["audio_received_unique"],
        "audio_duplicates": totals["audio_duplicates"],
        "audio_missing": totals["audio_missing"],
        "dropped_stale": totals["dropped_stale"],
        "dropped_full": totals["dropped_full"],
        "reply_timeouts": totals["reply_timeouts"],
        "lagged_notices": totals["lagged_notices"],
        "suspected_reasons": {str(i): r for i, r in enumerate(suspected[:5])},
        "faults": dict(injector.counts),
        "reconnects_by_cause": dict(m["reconnects_by_cause"]),
    }
    return report


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def soak_seed() -> int:
    raw = os.environ.get("GEMINID_SOAK_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**31)
