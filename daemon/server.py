"""The Unix-socket server of the local protocol.

:func:`serve_unix` owns the listening socket (creation, permissions, live-socket detection, cleanup)
and starts one :class:`ClientConnection` actor per accepted, credential-checked peer.

A ``ClientConnection`` has exactly one reader task and one writer task:

- the **reader** splits lines (:class:`LineFramer`), parses them and dispatches requests in
  order. ``session.send`` is entered in order but awaited in its own task (at most
  ``max_inflight_sends`` at once), so a slow durable ack does not hold up the next request;
  its reply may overtake or be overtaken by others (ids disambiguate).
- the **writer** is the only task that calls ``send_all``; it drains a bounded outbox.

Slow-client policy (PROTOCOL.md, "Slow clients"):

- Replies are never dropped. When the outbox holds ``client_queue`` lines or more, the reader stops
  reading this client's requests (back-pressure on this client only).
- Events never block a session: :meth:`ClientConnection.deliver` is synchronous. When the outbox
  is full, events are dropped and counted per session; once the outbox has drained to half its
  size, the client gets ONE ``session.lagged {session, first, last}`` per session naming the
  dropped seq range, then delivery resumes. ``session.attach {since}`` fetches the range again
  while the session's event ring still holds it.
- The backlog of an attach is queued whole, right after the attach reply and its gap notice,
  before any live event.

End of stream: a half-closed client gets the replies to everything it sent (including pending
``session.send`` acks); then the connection is closed. Bytes after the last newline at end of stream
get one ``-32700`` error (``id: null``) and are not executed. All sinks are detached on the way out.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import grp
import itertools
import os
import secrets
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
import trio

from geminid.daemon import pidlock
from geminid.daemon.config import ServerConfig
from geminid.daemon.errors import ConfigError
from geminid.daemon.events import Event
from geminid.daemon.rpc import Call, Dispatcher, StoreHealth, error_reply, lagged_line
from geminid.daemon.service import SessionService
from geminid.protocol.errors import (
    LINE_TOO_LONG,
    PARSE_ERROR,
    PERMISSION_DENIED,
)
from geminid.protocol.framing import LineFramer, Oversize
from geminid.protocol.jsonrpc import (
    Notification,
    Request,
    RpcFault,
    encode_error,
    encode_response,
    parse_line,
)

log = structlog.get_logger("geminid.server")

#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
READ_CHUNK = 64 * 1024
WRITE_BATCH = 256 * 1024
MAX_INFLIGHT_SENDS = 64
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class ClientConnection:
    """One attached local program: reader + writer actor, and the EventSink of its sessions."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        dispatcher: Dispatcher,
        *,
        max_line_bytes: int,
        client_queue: int,
        max_inflight_sends: int = MAX_INFLIGHT_SENDS,
        client_id: int = 0,
        uid: int | None = None,
        pid: int | None = None,
    ) -> None:
        self._stream = stream
        self._dispatcher = dispatcher
        self._service = dispatcher.service
        self._framer = LineFramer(max_line_bytes)
        self._max_line_bytes = max_line_bytes
        self._cap = max(1, client_queue)
        self._low = self._cap // 2
        self._out: collections.deque[bytes] = collections.deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        #: The writer waits in its lot with nothing queued and has not been woken: a line may go
        #: straight to the socket (:meth:`_write_through`).
        self._writer_parked = False
        #: Another complete line of the read being handled follows: its reply waits for theirs.
        self.more_lines = False
        self._room_lot = trio.lowlevel.ParkingLot()
        #: session -> [first, last] seq range dropped and not yet announced.
        self._lag: dict[str, list[int]] = {}
        self._inflight = trio.Semaphore(max(1, max_inflight_sends))
        self._read_scope = trio.CancelScope()
        self._finishing = False
        self._broken = False
        self.closed = False
        self.attached: set[str] = set()
        self.client_id = client_id
        self.uid = uid
        self.pid = pid
        #: Counters (exposed through daemon.status and the disconnect log line).
        self.events_dropped = 0
        self.lagged_sent = 0
        self.requests = 0
        self._log = log.bind(client=client_id, uid=uid, pid=pid)

    # -- ClientContext (for the dispatcher) ---------------------------------------------------

    @property
    def sink(self) -> ClientConnection:
        return self

    def subscribed(self, name: str, since: int | None) -> None:
        self.attached.add(name)
        lag = self._lag.get(name)
        if lag is not None and since is not None and since < lag[0]:
            # The backlog (or its gap notice) about to be queued covers the dropped range.
            del self._lag[name]

    def unsubscribed(self, name: str) -> None:
        self.attached.discard(name)
        self._lag.pop(name, None)

    # -- EventSink ----------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Queue one event; never blocks, drops (and later announces) when the outbox is full."""
        if self.closed or self._broken:
            return
        name = event.params.get("session", "")
        lag = self._lag.get(name)
        if lag is not None:
            if len(self._out) > self._low:
                lag[1] = event.seq
                self.events_dropped += 1
                return
            self._announce(name)
        elif len(self._out) >= self._cap:
            self._lag[name] = [event.seq, event.seq]
            self.events_dropped += 1
            self._log.info("client.lagging", session=name, first=event.seq)
            return
        self._push(event.line)

    def _announce(self, name: str) -> None:
        first, last = self._lag.pop(name)
        self.lagged_sent += 1
        self._push(lagged_line(name, first, last, last - first + 1))

    def _flush_lag(self) -> None:
        if self._lag and len(self._out) <= self._low:
            for name in list(self._lag):
                self._announce(name)

    # -- outbox -------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._out)

    def _push(self, line: bytes) -> None:
        if self._broken:
            return
        # (Not while more lines of the same read follow: their replies then go in one write.)
        if self._writer_parked and not self.more_lines and self._write_through(line):
            return
        self._out.append(line)
        self._wake_writer()

    def _push_all(self, lines: Iterable[bytes]) -> None:
        if self._broken:
            return
        self._out.extend(lines)
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._writer_parked = False
        self._writer_lot.unpark_all()

    def _write_through(self, line: bytes) -> bool:
        """Write ``line`` to the socket now, from the task that produced it, when the writer
        is parked with nothing queued (so no ``send_all`` is in flight and nothing queued can
        be overtaken). Why: an event line otherwise waits for one more pass of trio's
        scheduler (wake the writer, let it run), a measurable share of the relay's added
        latency. Synchronous (``deliver`` must never block a session): a non-blocking
        ``os.write`` of the socket's descriptor, looked up at each write (-1 once the stream is
        closed). Whatever the kernel does not take now is queued for the writer, which also
        meets and reports any error: False leaves the line to the caller's queue."""
        if not isinstance(self._stream, trio.SocketStream):
            return False
        fd = self._stream.socket.fileno()
        if fd < 0:
            return False
        try:
            sent = os.write(fd, line)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < len(line):
            self._out.append(line[sent:])
            self._wake_writer()
        return True

    async def _wait_room(self) -> None:
        while len(self._out) >= self._cap and not self._broken:
            await self._room_lot.park()

    async def _writer(self) -> None:
        try:
            while True:
                if not self._out:
                    self._flush_lag()
                if not self._out:
                    if self._finishing:
                        return
                    self._writer_parked = True
                    await self._writer_lot.park()
                    continue
                batch: list[bytes] = []
                size = 0
                while self._out and size < WRITE_BATCH:
                    line = self._out.popleft()
                    batch.append(line)
                    size += len(line)
                self._room_lot.unpark_all()
                await self._stream.send_all(b"".join(batch))
                self._flush_lag()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._log.debug("client.write_failed", error=repr(exc))
            self._broken = True
            self._out.clear()
            self._lag.clear()
            self._room_lot.unpark_all()
            self._read_scope.cancel()

    # -- reader -------------------------------------------------------------------------------

    async def _reader(self, inflight: trio.Nursery) -> None:
        while True:
            await self._wait_room()
            try:
                data = await self._stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._log.debug("client.read_failed", error=repr(exc))
                return
            if not data:
                truncated = self._framer.eof()
                if truncated is not None:
                    self._push(
                        encode_error(
                            None,
                            PARSE_ERROR,
                            "truncated line at end of stream (no newline): not executed",
                            {"length": truncated.length},
                        )
                    )
                return
            items = self._framer.feed(data)
            last = len(items) - 1
            for i, item in enumerate(items):
                self.more_lines = i < last
                if isinstance(item, Oversize):
                    self._log.info("client.line_too_long", length=item.length)
                    self._push(
                        encode_error(
                            None,
                            LINE_TOO_LONG,
                            f"line longer than {self._max_line_bytes} bytes: skipped",
                            {"max_line_bytes": self._max_line_bytes, "length": item.length},
                        )
                    )
                    continue
                if not item.strip():
                    continue  # blank lines are allowed as keep-alives
                await self._wait_room()
                await self._handle_line(item, inflight)

    async def _handle_line(self, line: bytes, inflight: trio.Nursery) -> None:
        msg = parse_line(line)
        if isinstance(msg, RpcFault):
            self._push(msg.encode())
            return
        self.requests += 1
        try:
            call = self._dispatcher.prepare(self, msg.method, msg.params)
        except Exception as exc:
            self._reply_error(msg, exc)
            return
        if call.concurrent:
            await self._inflight.acquire()
            await inflight.start(self._run_concurrent, call, msg)
        else:
            await self._execute(call, msg)

    async def _run_concurrent(
        self, call: Call, msg: Request | Notification, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            # started() does not yield: the service call is entered before the reader resumes,
            # so sends are entered (and get their seqs) in request order.
            task_status.started()
            await self._execute(call, msg)
        finally:
            self._inflight.release()

    async def _execute(self, call: Call, msg: Request | Notification) -> None:
        try:
            result = await call.run()
            reply = encode_response(msg.id, result.value) if isinstance(msg, Request) else None
        except Exception as exc:
            self._reply_error(msg, exc)
            return
        if reply is not None:
            self._push(reply)
        if result.follow:
            self._push_all(result.follow)

    def _reply_error(self, msg: Request | Notification, exc: Exception) -> None:
        code, message, data = error_reply(exc, method=msg.method)
        if isinstance(msg, Request):
            self._push(encode_error(msg.id, code, message, data))
        else:
            self._log.info("client.notification_failed", method=msg.method[:100], code=code)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        self._log.info("client.connected")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                async with trio.open_nursery() as inflight:
                    with self._read_scope:
                        await self._reader(inflight)
                self._finishing = True
                self._wake_writer()
        finally:
            self.closed = True
            for name in list(self.attached):
                with contextlib.suppress(Exception):
                    self._service.detach(name, self)
            self.attached.clear()
            self._log.info(
                "client.disconnected",
                requests=self.requests,
                events_dropped=self.events_dropped,
                lagged_sent=self.lagged_sent,
            )


# -- listening socket -------------------------------------------------------------------------


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of a connected AF_UNIX peer, as of its connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(raw)


def _resolve_group(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"server.socket_group: no such group {group!r}") from None


def _check_not_live(path: Path) -> None:
    """Refuse a path where something is listening; allow a stale socket; refuse non-sockets."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: nobody listening
    except TimeoutError:
        raise ConfigError(f"another geminid is listening on {path} (busy)") from None
    except OSError as exc:
        raise ConfigError(f"cannot probe existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ConfigError(f"another geminid is listening on {path}")


class _Listening:
    def __init__(self, sock: socket.socket, ino: tuple[int, int], lock_fd: int | None) -> None:
        self.sock = sock
        self.ino = ino
        #: The socket lock, when this server took it (None: the caller holds it).
        self.lock_fd = lock_fd


def lock_socket(path: Path, group: str | None) -> int:
    """Take ``<path>.lock`` (blocking; run in a thread) and return its descriptor.

    The daemon calls this before it creates or loads anything else, so that a second daemon on
    the same socket stops before touching any state. Creates the socket's parent directory
    (0700; 0750 and group-owned with ``group``) if missing. Raises :class:`ConfigError`.
    """
    raw = os.fsencode(path)
    if len(raw) > MAX_UNIX_PATH:
        raise ConfigError(
            f"server.socket_path: {path} is {len(raw)} bytes; AF_UNIX allows {MAX_UNIX_PATH}"
        )
    gid = _resolve_group(group) if group else None
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        if gid is not None:
            os.chown(parent, -1, gid)
            os.chmod(parent, 0o750)
        else:
            os.chmod(parent, 0o700)
    lock_path = parent / (path.name + ".lock")
    try:
        return pidlock.acquire(lock_path)
    except pidlock.LockHeld as held:
        who = f", pid {held.pid}" if held.pid is not None else ""
        raise ConfigError(
            f"another geminid is listening on {path} (it holds {lock_path}{who})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot open {lock_path}: {exc.strerror or exc}") from None


def _bind(path: Path, group: str | None, lock_fd: int | None = None) -> _Listening:
    """Create the listening socket at ``path`` (blocking; run in a thread). With ``lock_fd``
    the caller already holds the socket lock (:func:`lock_socket`) and keeps it."""
    gid = _resolve_group(group) if group else None
    own_lock = lock_socket(path, group) if lock_fd is None else None
    parent = path.parent
    try:
        _check_not_live(path)
        tmp = parent / f".{path.name[:16]}.{secrets.token_hex(4)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(tmp))
            try:
                if gid is not None:
                    os.chown(tmp, -1, gid)
                    os.chmod(tmp, 0o660)
                else:
                    os.chmod(tmp, 0o600)
                sock.listen(128)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            st = os.stat(path)
        except BaseException:
            sock.close()
            raise
    except BaseException:
        if own_lock is not None:
            pidlock.release(own_lock)
        raise
    return _Listening(sock, (st.st_dev, st.st_ino), own_lock)


def _cleanup(path: Path, listening: _Listening) -> None:
    """Unlink the socket file only if it is still the one we created."""
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == listening.ino:
            os.unlink(path)
    except OSError:
        pass
    if listening.lock_fd is not None:
        pidlock.release(listening.lock_fd)


class UnixServer:
    """The socket server. :func:`serve_unix` is the usual entry point."""

    def __init__(
        self,
        service: SessionService,
        cfg: ServerConfig,
        *,
        sock: socket.socket | None = None,
        lock_fd: int | None = None,
        health: StoreHealth | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.service = service
        self.cfg = cfg
        self._given_sock = sock
        self._lock_fd = lock_fd
        self.path: Path | None = None
        self.clients: set[ClientConnection] = set()
        self.refused = 0
        self._ids = itertools.count(1)
        self._own_uid = os.geteuid()
        self.dispatcher = Dispatcher(
            service, server_info=self.info, max_line_bytes=cfg.max_line_bytes, health=health,
            status_extra=status_extra,
        )

    def info(self) -> dict[str, Any]:
        return {
            "socket": None if self.path is None else str(self.path),
            "clients": len(self.clients),
            "clients_refused": self.refused,
            "events_dropped": sum(c.events_dropped for c in self.clients),
        }

    def allowed(self, uid: int) -> bool:
        return uid == self._own_uid or uid == 0 or uid in self.cfg.allowed_uids

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listening: _Listening | None = None
        if self._given_sock is not None:
            raw_sock = self._given_sock
            try:
                name = raw_sock.getsockname()
            except OSError:
                name = ""
            self.path = Path(name) if isinstance(name, str) and name else None
        else:
            path = Path(self.cfg.socket_path)
            listening = await trio.to_thread.run_sync(
                _bind, path, self.cfg.socket_group, self._lock_fd
            )
            raw_sock = listening.sock
            self.path = path
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw_sock))
        try:
            log.info(
                "server.listening",
                path=str(self.path),
                activated=self._given_sock is not None,
                group=self.cfg.socket_group,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        trio.serve_listeners, self._handle, [listener], handler_nursery=nursery
                    )
                )
                task_status.started(self.path)
        finally:
            listener.socket.close()
            if listening is not None and self.path is not None:
                _cleanup(self.path, listening)

    async def _handle(self, stream: trio.SocketStream) -> None:
        cid = next(self._ids)
        conn: ClientConnection | None = None
        try:
            try:
                pid, uid, _gid = peer_credentials(stream.socket)
            except OSError as exc:
                log.warning("client.refused", client=cid, reason=f"no peer credentials: {exc}")
                self.refused += 1
                return
            if not self.allowed(uid):
                self.refused += 1
                log.warning("client.refused", client=cid, uid=uid, pid=pid, reason="uid not allowed")
                with trio.move_on_after(1):
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(
                            encode_error(
                                None,
                                PERMISSION_DENIED,
                                "permission denied: this uid may not use geminid",
                                {"uid": uid},
                            )
                        )
                        # Lingering close: closing with unread input would reset the connection
                        # and could destroy the error line before the peer reads it.
                        await stream.send_eof()
                        drained = 0
                        while drained < 1 << 20:
                            data = await stream.receive_some(READ_CHUNK)
                            if not data:
                                break
                            drained += len(data)
                return
            conn = ClientConnection(
                stream,
                self.dispatcher,
                max_line_bytes=self.cfg.max_line_bytes,
                client_queue=self.cfg.client_queue,
                client_id=cid,
                uid=uid,
                pid=pid,
            )
            self.clients.add(conn)
            await conn.run()
        except Exception:
            # One client's failure must never take the server down.
            log.exception("client.crashed", client=cid)
        finally:
            if conn is not None:
                self.clients.discard(conn)
            await trio.aclose_forcefully(stream)


async def serve_unix(
    service: SessionService,
    cfg: ServerConfig,
    *,
    sock: socket.socket | None = None,
    lock_fd: int | None = None,
    health: StoreHealth | None = None,
    status_extra: Callable[[], dict[str, Any]] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the local protocol until cancelled.

    With ``sock`` (systemd socket activation, already validated by the caller) that listening
    socket is used as is and never unlinked. Otherwise the socket is created at
    ``cfg.socket_path`` (see :func:`_bind`): parent directory created 0700 (0750 and group-owned
    with ``socket_group``) if missing; ``<path>.lock`` flocked for the server's lifetime; a live
    socket at the path is refused with :class:`ConfigError`, a stale one replaced; the new socket
    is bound at a temporary name, set to 0600 (0660 and chgrp'd with ``socket_group``), put into
    listen(), then atomically renamed onto the path. ``task_status.started(path)`` once
    listening. On exit the file is unlinked if it is still ours (same device and inode).

    ``lock_fd``: the socket lock, already taken by the caller with :func:`lock_socket` (the
    caller keeps and releases it). ``health``: the checkpoint store, so that requests needing
    durability are refused at once while it cannot write (see :class:`~.rpc.Dispatcher`).
    """
    server = UnixServer(service, cfg, sock=sock, lock_fd=lock_fd, health=health, status_extra=status_extra)
    await server.serve(task_status=task_status)


__all__ = ["ClientConnection", "UnixServer", "lock_socket", "peer_credentials", "serve_unix"]
