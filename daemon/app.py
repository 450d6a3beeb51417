"""The daemon: wires the checkpoint store, the session registry, the socket server, systemd and
signals into one trio program.

Shutdown order matters and is explicit here (hypercorn's pattern):

1. stop taking work: new requests are refused with -32009 (shutting down);
2. every session closes its upstream with 1000 and flushes its checkpoint, within
   ``shutdown_timeout`` (handles stay valid, so the restarted daemon resumes); sends already
   in flight are acknowledged once durable;
3. clients are disconnected (the server's scope is cancelled);
4. the store's writer does a final flush, everything else is cancelled, and the process exits 0.

An escalation from a supervisor (a session crashing past its intensity limit) ends the daemon
with a non-zero status, so that systemd restarts it and every session resumes from disk.

READY=1 means: the socket accepts connections and every checkpointed session has been restored
(its actor is running and its seq reservation durable). It does not wait for Gemini: a session
that cannot reach the service must not hold the daemon's readiness hostage.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import structlog
import trio

from geminid.daemon import __version__, logsetup, pidlock, sdnotify, statedir
from geminid.daemon.backend import Backend, build_backend, vertex_endpoint
from geminid.daemon.checkpoint import CheckpointStore
from geminid.daemon.config import Config
from geminid.daemon.config_load import load_config, reload_api_key
from geminid.daemon.errors import ConfigError, EscalationError
from geminid.daemon.metrics import Metrics
from geminid.daemon.registry import SessionRegistry, start_core
from geminid.daemon.server import lock_socket, serve_unix
from geminid.daemon.upstream import ApiKey, Credentials, Dial, Endpoint, FixedKey

log = structlog.get_logger("geminid.daemon")

#: Exit status when a supervisor escalates (EX_SOFTWARE): systemd's Restart=on-failure restarts.
EXIT_ESCALATED = 70
#: The key given to the embedded fake (it accepts any non-empty key).
_FAKE_KEY = "embedded-fake-upstream"


async def run_daemon(
    cfg: Config,
    *,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    listen_sock: socket.socket | None = None,
    notifier: sdnotify.Notifier | None = None,
    task_status: trio.TaskStatus[SessionRegistry] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or an escalation (EXIT_ESCALATED)."""
    environ = os.environ if environ is None else environ
    notifier = notifier or sdnotify.Notifier()
    metrics = Metrics()
    # The backend (issue #14): an API key, an ephemeral token file or Vertex AI credentials
    # (resolved here: ADC may ask the metadata server; a failure is one line, exit 2).
    backend = None if cfg.embedded_fake else build_backend(cfg)
    credentials: Credentials = FixedKey(_FAKE_KEY) if backend is None else backend.credentials
    log.info("daemon.starting", **starting_fields(cfg))
    # Before anything is created or loaded: the socket's lock (a second daemon on this socket
    # stops here), then the state dir's (a second daemon on another socket stops here) and its
    # writability probe. Each failure is a one-line ConfigError (exit 2).
    socket_lock = None
    if listen_sock is None:
        socket_lock = await trio.to_thread.run_sync(
            lock_socket, cfg.server.socket_path, cfg.server.socket_group
        )
    try:
        state = await trio.to_thread.run_sync(statedir.claim, cfg.state_dir)
    except BaseException:
        if socket_lock is not None:
            pidlock.release(socket_lock)
        raise
    try:
        return await _run_claimed(
            cfg, credentials, metrics, notifier, environ, args, listen_sock, socket_lock, task_status,
            backend,
        )
    finally:
        state.release()
        if socket_lock is not None:
            pidlock.release(socket_lock)


def starting_fields(cfg: Config) -> dict[str, object]:
    """What ``daemon.starting`` says: where it will talk to and where the key came from (the
    variable or file, never the value), the socket and the state dir."""
    parts = urllib.parse.urlsplit(cfg.upstream.endpoint)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "upstream": "embedded-fake" if cfg.embedded_fake else upstream_kind(cfg),
        # Scheme, host and path only: a query string could carry a credential.
        "endpoint": "embedded-fake" if cfg.embedded_fake
        else urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")),
        "key_source": cfg.upstream.api_key_source,
        **backend_fields(cfg),
        "socket": str(cfg.server.socket_path),
        "state_dir": str(cfg.state_dir),
    }


def upstream_kind(cfg: Config) -> str:
    """The backend's name for logs and status: ``gemini``, ``gemini-ephemeral`` or ``vertex``."""
    if cfg.upstream.backend == "vertex":
        return "vertex"
    return "gemini-ephemeral" if cfg.upstream.auth_token_file is not None else "gemini"


def backend_fields(cfg: Config) -> dict[str, object]:
    """Vertex's project and location, the token file's path (never a token)."""
    up = cfg.upstream
    if up.backend == "vertex":
        ep = vertex_endpoint(up)
        return {
            "endpoint": f"{ep.scheme}://{ep.authority}{ep.resource.partition('?')[0]}",
            "vertex_project": up.vertex_project, "vertex_location": up.vertex_location,
            "credentials": str(up.vertex_credentials_file) if up.vertex_credentials_file
            else "application default credentials",
            "transparent": up.transparent,
        }
    if up.auth_token_file is not None:
        return {"token_file": str(up.auth_token_file)}
    return {}


async def _run_claimed(
    cfg: Config,
    credentials: Credentials,
    metrics: Metrics,
    notifier: sdnotify.Notifier,
    environ: Mapping[str, str],
    args: argparse.Namespace | None,
    listen_sock: socket.socket | None,
    socket_lock: int | None,
    task_status: trio.TaskStatus[SessionRegistry],
    backend: Backend | None = None,
) -> int:
    live_cfg = cfg  # swapped on SIGHUP
    try:
        async with trio.open_nursery() as root:
            if backend is None:
                endpoint = Endpoint.parse(await _start_embedded_fake(root))
            else:
                endpoint = backend.endpoint
            dial = Dial(
                endpoint=endpoint,
                credentials=credentials,
                model_name=backend.model_name if backend is not None else None,
                connect_timeout=cfg.upstream.connect_timeout,
                setup_timeout=cfg.upstream.setup_timeout,
                max_message_size=cfg.upstream.max_message_size,
            )
            store = CheckpointStore(cfg.state_dir)
            # Corrupt files are quarantined (moved aside, logged) by the store; the start goes on.
            report = await trio.to_thread.run_sync(store.load_all)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as core:
                    # The store runs in root: it outlives the sessions, to flush at the end.
                    registry = await start_core(
                        core, cfg, dial, metrics, store=store, store_nursery=root, records=report.records,
                        upstream_kind=backend.kind if backend is not None else "embedded-fake",
                    )
                    server_scope = trio.CancelScope()
                    live_box: list[Any] = []  # the Live endpoint, once it listens
                    live_scope = trio.CancelScope()
                    socket_path = await core.start(
                        _serve, registry, cfg, listen_sock, socket_lock, store, server_scope,
                        lambda: {"live": live_box[0].info() if live_box else None},
                    )
                    notifier.ready(registry.status_line())
                    log.info("daemon.ready", sessions=len(report.records), socket=str(socket_path))
                    if _live_wanted(cfg):
                        # Just after READY: its imports (trio-websocket) stay off the start path.
                        live_box.append(await core.start(_serve_live, registry, _beside(cfg, socket_path), live_scope))
                    core.start_soon(sdnotify.run_watchdog, notifier, sdnotify.watchdog_interval(environ))
                    core.start_soon(_status_loop, notifier, registry.status_line)
                    task_status.started(registry)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            live_cfg = _reload(live_cfg, args, environ, notifier)
                            registry.reconfigure(live_cfg)
                            if isinstance(credentials, ApiKey):
                                credentials.rotate(live_cfg.upstream.api_key)
                            continue
                        name = signal.Signals(signum).name
                        log.info("daemon.stopping", signal=name)
                        notifier.stopping(f"stopping on {name}")
                        if live_box:  # Live clients: goAway, then 1000, like the service
                            await live_box[0].drain(cfg.shutdown_timeout)
                        # New requests now get -32009 (shutting down); sends in flight finish
                        # and are acknowledged while every session closes upstream with 1000
                        # and flushes its checkpoint. Only then are clients disconnected.
                        await registry.shutdown(cfg.shutdown_timeout)
                        server_scope.cancel()
                        live_scope.cancel()
                        core.cancel_scope.cancel()
                        break
                with trio.move_on_after(cfg.shutdown_timeout, shield=True):
                    await store.flush()
            root.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        escalations, rest = group.split(EscalationError)
        if escalations is None:
            raise
        if rest is not None:
            raise rest from None
        log.critical("daemon.escalated", error=str(escalations.exceptions[0]))
        return EXIT_ESCALATED
    except EscalationError as exc:
        log.critical("daemon.escalated", error=str(exc))
        return EXIT_ESCALATED
    log.info("daemon.stopped")
    return 0


async def _serve(
    registry: SessionRegistry,
    cfg: Config,
    listen_sock: socket.socket | None,
    socket_lock: int | None,
    store: CheckpointStore,
    scope: trio.CancelScope,
    status_extra: Callable[[], dict[str, Any]],
    *,
    task_status: trio.TaskStatus[object],
) -> None:
    with scope:
        await serve_unix(
            registry, cfg.server, sock=listen_sock, lock_fd=socket_lock, health=store,
            status_extra=status_extra, task_status=task_status,
        )


def _beside(cfg: Config, socket_path: Any) -> Config:
    """``cfg`` naming the JSON-RPC socket the daemon really serves: under socket activation that
    is systemd's socket, not ``server.socket_path``, and the Live socket goes beside it."""
    if str(socket_path) == str(cfg.server.socket_path):
        return cfg
    return attrs.evolve(cfg, server=attrs.evolve(cfg.server, socket_path=socket_path))


def _live_wanted(cfg: Config) -> bool:
    return cfg.live.unix or cfg.live.listen is not None


async def _serve_live(
    registry: SessionRegistry, cfg: Config, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Any]
) -> None:
    """The drop-in Gemini Live endpoint (geminid.daemon.live), imported only when it is on."""
    from geminid.daemon.live.server import serve_live

    with scope:
        await serve_live(registry, cfg, task_status=task_status)


async def _start_embedded_fake(nursery: trio.Nursery) -> str:
    """No key configured: serve sessions from the in-process fake upstream, and say so loudly."""
    from geminid.daemon.fake import FakeOptions, FakeUpstream

    fake = await nursery.start(FakeUpstream(FakeOptions()).serve)
    url: str = fake.url()
    log.warning(
        "upstream.embedded_fake",
        url=url,
        note="no API key configured (GEMINI_API_KEY or --api-key-file): sessions talk to the "
        "embedded FAKE Gemini upstream, not to Google",
    )
    return url


async def _status_loop(notifier: sdnotify.Notifier, line: Callable[[], str], period: float = 5.0) -> None:
    last = None
    while True:
        text = line()
        if text != last:
            notifier.status(text)
            last = text
        await trio.sleep(period)


def _reload(cfg: Config, args: argparse.Namespace | None, environ: Mapping[str, str],
            notifier: sdnotify.Notifier) -> Config:
    """SIGHUP: re-read the config for the log level, and the key file. Sessions are untouched;
    a rotated key takes effect at each session's next reconnect."""
    notifier.reloading()
    try:
        new = load_config(args, environ) if args is not None else cfg
        new = reload_api_key(new)
    except ConfigError as exc:
        log.error("config.reload_failed", error=logsetup.redact_text(exc.message))
        notifier.ready()
        return cfg
    logsetup.set_level(new.log.level)
    old_key = cfg.upstream.api_key.reveal() if cfg.upstream.api_key else None
    new_key = new.upstream.api_key.reveal() if new.upstream.api_key else None
    log.info("config.reloaded", log_level=new.log.level, key_rotated=old_key != new_key)
    notifier.ready()
    # Only what can change safely at run time is taken over: the log level and the key.
    upstream = cfg.upstream
    if not cfg.embedded_fake:
        upstream = attrs.evolve(cfg.upstream, api_key=new.upstream.api_key)
    return attrs.evolve(cfg, upstream=upstream, log=new.log)
