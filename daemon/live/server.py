"""The Live endpoint's listeners and its set of connections.

Two listeners, each optional: a Unix socket beside the JSON-RPC one (default on; a peer is
admitted by its credentials, exactly as the JSON-RPC socket admits it) and a loopback TCP
listener (``live.listen``, off by default; TLS unless ``live.tls = false``; a client presents the
local token). Both speak the same WebSocket protocol on Google's paths (:mod:`.paths`).

The server owns what outlives one connection: the local handles (with what each session's Live
client has seen, durable: it outlives the daemon, see :mod:`.handles`), the token, and per session
the seq of the last event a Live client was given (in memory: so that a client that comes back to
the same daemon gets exactly what it missed, when the daemon still holds it). A session has at most one Live client: a newer
connection takes it over and the older one is closed (1000).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import attrs
import structlog
import trio
from trio_websocket import WebSocketRequest, WebSocketServer

from geminid.daemon import logsetup
from geminid.daemon.config import Config
from geminid.daemon.errors import ConfigError
from geminid.daemon.live import tls
from geminid.daemon.live import token as tokens
from geminid.daemon.live.connection import LiveConnection
from geminid.daemon.live.handles import LocalHandles
from geminid.daemon.live.listen import HostPort
from geminid.daemon.live.paths import parse_target
from geminid.daemon.registry import SessionRegistry
from geminid.daemon.server import peer_credentials

log = structlog.get_logger("geminid.live")

TOKEN_NAME = "live_token"
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107


def socket_path(cfg: Config) -> Path:
    """``live.socket_path``, else beside the JSON-RPC socket and named after it
    (``geminid.sock`` -> ``geminid-live.sock``), so that it is as unique as that socket is
    (the JSON-RPC socket's lock is held by one daemon only)."""
    if cfg.live.socket_path is not None:
        return cfg.live.socket_path
    rpc = Path(cfg.server.socket_path)
    return rpc.with_name(f"{rpc.stem}-live{rpc.suffix}")


def token_path(cfg: Config) -> Path:
    return cfg.live.token_file or cfg.state_dir / TOKEN_NAME


class _PeerChecked(trio.abc.Listener[trio.SocketStream]):
    """A Unix listener that admits only the uids the JSON-RPC socket admits."""

    def __init__(self, inner: trio.SocketListener, allowed: Callable[[int], bool]) -> None:
        self.inner = inner
        self._allowed = allowed
        self.refused = 0

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self.inner.accept()
            try:
                pid, uid, _gid = peer_credentials(stream.socket)
            except OSError:
                pid, uid = 0, -1
            if self._allowed(uid):
                return stream
            self.refused += 1
            log.warning("live.client_refused", uid=uid, pid=pid, reason="uid not allowed")
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.frozen
class _Tcp:
    listener: trio.SocketListener | trio.SSLListener[trio.SocketStream]
    base_url: str
    ca_file: Path | None


class LiveServer:
    def __init__(self, registry: SessionRegistry, cfg: Config) -> None:
        self.registry = registry
        self.cfg = cfg
        self.handles = LocalHandles(cfg.state_dir)
        self.positions: dict[str, int] = {}
        self._bound: dict[str, LiveConnection] = {}
        self._conns: set[LiveConnection] = set()
        self._ids = itertools.count(1)
        self._token: str | None = None
        self._tcp: _Tcp | None = None
        self._unix: Path | None = None
        self._own_uid = os.geteuid()
        self._done = trio.Event()
        self._emptied = trio.Event()
        self.refused = 0

    # -- status -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``daemon.status``'s ``live``: where a client points and what it trusts."""
        return {
            "base_url": None if self._tcp is None else self._tcp.base_url,
            "ca_file": None if self._tcp is None or self._tcp.ca_file is None else str(self._tcp.ca_file),
            "token_file": None if self._tcp is None else str(token_path(self.cfg)),
            "socket": None if self._unix is None else str(self._unix),
            "clients": len(self._conns),
            "refused": self.refused,
        }

    # -- sessions -----------------------------------------------------------------------------

    def bind(self, name: str, conn: LiveConnection) -> None:
        old = self._bound.get(name)
        if old is not None and old is not conn:
            from geminid.daemon.live.translate import Close

            old.close(Close(1000, "geminid: a newer connection took this session over"))
        self._bound[name] = conn

    def unbind(self, name: str, conn: LiveConnection) -> None:
        if self._bound.get(name) is conn:
            del self._bound[name]

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[LiveServer] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self.handles.load)
        #: (listener, needs the token): the Unix socket's peers are admitted by credentials.
        listeners: list[tuple[trio.abc.Listener[Any], bool]] = []
        cleanup: list[Callable[[], None]] = []
        try:
            if self.cfg.live.unix:
                try:
                    unix, undo = await trio.to_thread.run_sync(self._bind_unix)
                except ConfigError as exc:
                    if self.cfg.live.socket_path is not None:
                        raise  # asked for by name: a configuration error
                    # The default socket (beside the JSON-RPC one) is an add-on: the daemon, already
                    # READY for its JSON-RPC clients, goes on without it rather than dying.
                    log.error("live.unix_unavailable", reason=exc.message)
                else:
                    listeners.append((unix, False))
                    cleanup.append(undo)
            if self.cfg.live.listen is not None:
                self._tcp = await self._open_tcp(self.cfg.live.listen)
                listeners.append((self._tcp.listener, True))
            if not listeners:
                task_status.started(self)
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.handles.flusher)
                for listener, with_token in listeners:
                    server = WebSocketServer(
                        functools.partial(self._handle, with_token), cast(Any, [listener]),
                        handler_nursery=nursery, max_message_size=self.cfg.upstream.max_message_size,
                    )
                    await nursery.start(server.run)
                log.info("live.listening", socket=None if self._unix is None else str(self._unix),
                         base_url=None if self._tcp is None else self._tcp.base_url)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.handles.flush()  # what the clients have seen, for the next daemon
            for undo in cleanup:
                undo()
            self._done.set()

    def _bind_unix(self) -> tuple[_PeerChecked, Callable[[], None]]:
        path = socket_path(self.cfg)
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ConfigError(f"live.socket_path: {path} is too long for a Unix socket")
        with contextlib.suppress(FileNotFoundError):
            if path.is_socket():
                path.unlink()  # stale: the JSON-RPC socket's lock says no other daemon runs here
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, 0o660 if self.cfg.server.socket_group else 0o600)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"live.socket_path: cannot listen on {path}: {exc.strerror}") from None
        st = os.stat(path)
        self._unix = path

        def undo() -> None:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == st.st_ino:
                    os.unlink(path)

        inner = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        return _PeerChecked(inner, self._allowed), undo

    def _allowed(self, uid: int) -> bool:
        return uid == self._own_uid or uid == 0 or uid in self.cfg.server.allowed_uids

    async def _open_tcp(self, listen: str) -> _Tcp:
        hp = HostPort.parse(listen)
        self._token = await trio.to_thread.run_sync(tokens.load_or_create, token_path(self.cfg))
        logsetup.register_secret(self._token, pin=True)
        try:
            listeners = await trio.open_tcp_listeners(hp.port, host=hp.host)
        except OSError as exc:
            raise ConfigError(f"live.listen: cannot listen on {listen}: {exc.strerror}") from None
        raw = listeners[0]
        port = raw.socket.getsockname()[1]
        for extra in listeners[1:]:
            await extra.aclose()
        live = self.cfg.live
        if not live.tls:
            return _Tcp(raw, f"http://{hp.url_host()}:{port}", None)
        if live.tls_cert is not None and live.tls_key is not None:
            pair = tls.CertPair(live.tls_cert, live.tls_key, None)
        elif live.tls_cert is not None or live.tls_key is not None:
            raise ConfigError("live.tls_cert and live.tls_key: set both, or neither")
        else:
            pair = await trio.to_thread.run_sync(tls.ensure_self_signed, self.cfg.state_dir)
        ctx: ssl.SSLContext = tls.server_context(pair)
        return _Tcp(trio.SSLListener(raw, ctx), f"https://{hp.url_host()}:{port}", pair.ca_file)

    async def _handle(self, with_token: bool, request: WebSocketRequest) -> None:
        cid = next(self._ids)
        target = parse_target(request.path, request.headers)
        if target is None:
            self.refused += 1
            await request.reject(404, body=b"not a Gemini Live path\n")
            return
        if with_token:
            assert self._token is not None
            given = tokens.presented(request.headers, target.query)
            status = tokens.check(self._token, given)
            if status is not None:
                self.refused += 1
                log.warning("live.client_refused", client=cid, status=status,
                            reason="no local token" if status == 401 else "wrong local token")
                await request.reject(status, body=b"geminid: present the local token (live.token_file)\n")
                return
        ws = await request.accept()
        conn = LiveConnection(ws, self, target, client_id=cid, queue_cap=self.cfg.server.client_queue)
        self._conns.add(conn)
        try:
            await conn.run()
        except Exception:
            log.exception("live.client_crashed", client=cid)
        finally:
            self._conns.discard(conn)
            if not self._conns:
                self._emptied.set()

    async def drain(self, time_left: float, grace: float = 5.0) -> None:
        """Planned shutdown: every client gets ``goAway`` then a 1000 close; wait for them."""
        for conn in list(self._conns):
            conn.go_away(time_left, "geminid is shutting down")
        with trio.move_on_after(grace):
            while self._conns:
                self._emptied = trio.Event()
                await self._emptied.wait()


async def serve_live(registry: SessionRegistry, cfg: Config, *,
                     task_status: trio.TaskStatus[LiveServer] = trio.TASK_STATUS_IGNORED) -> None:
    server = LiveServer(registry, cfg)
    await server.serve(task_status=task_status)


__all__ = ["LiveServer", "serve_live", "socket_path", "token_path"]
