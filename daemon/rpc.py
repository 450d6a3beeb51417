"""The JSON-RPC method table: validates params and calls the :class:`SessionService`.

I/O-free apart from the service calls; the socket server (``geminid.daemon.server``) owns the
connection, ordering and delivery. Every handler is split in two:

1. :meth:`Dispatcher.prepare` validates ``params`` synchronously and returns a :class:`Call`
   (or raises :class:`RpcError` ``-32602`` naming the field, or ``-32601``);
2. the connection runs ``await call.run()``, inline (in request order) or, for
   ``session.send`` (``call.concurrent``), in its own task so that a slow durable ack does not
   hold up the next request. ``service.send`` is entered in request order either way.

Errors: a :class:`GeminidError` becomes its ``rpc_code``/``message``/``data``; anything else is
``-32603 internal error`` with an incident id, and the traceback goes to the log only
(:func:`error_reply`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import attrs
import structlog
import trio

from geminid.daemon import __version__
from geminid.daemon.errors import CheckpointWriteError
from geminid.daemon.events import Event, EventSink
from geminid.daemon.service import SessionService
from geminid.protocol.acks import MAX_ID_LENGTH, SendAck
from geminid.protocol.constants import PROTOCOL_VERSION, valid_session_name
from geminid.protocol.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    GeminidError,
    NotDurable,
    RpcError,
)
from geminid.protocol.notifications import SessionLagged

log = structlog.get_logger("geminid.rpc")
T = TypeVar("T")

SUPPORTED_PROTOCOLS = (1,)

#: Setup members the daemon owns (it resumes sessions itself with the server's handles).
DAEMON_OWNED_SETUP = ("sessionResumption", "session_resumption")


class StoreHealth(Protocol):
    """What the dispatcher asks the checkpoint store (:class:`~.checkpoint.CheckpointStore`)."""

    @property
    def healthy(self) -> bool: ...

    def check_healthy(self) -> None:
        """Raise :class:`CheckpointWriteError` while the store cannot write."""

    async def wait_unhealthy(self) -> CheckpointWriteError: ...


def _not_durable(exc: CheckpointWriteError, what: str) -> NotDurable:
    return NotDurable(
        f"{what} refused: the checkpoint could not be written ({exc.message})",
        data={"reason": "state directory not writable", **exc.data},
    )


class ClientContext(Protocol):
    """What handlers need from the connection they serve."""

    @property
    def sink(self) -> EventSink: ...

    def subscribed(self, name: str, since: int | None) -> None:
        """Called right after ``service.attach`` succeeded (before its backlog is queued)."""

    def unsubscribed(self, name: str) -> None: ...


@attrs.frozen
class Result:
    """A handler's result plus lines to queue right after the reply, before any live event."""

    value: Any
    follow: tuple[bytes, ...] = ()


@attrs.frozen
class Call:
    method: str
    run: Callable[[], Awaitable[Result]]
    #: Run in its own task (replies may then come out of order; ids disambiguate).
    concurrent: bool = False


def _bad(field: str, what: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"{field}: {what}", data={"field": field})


class _Params:
    """Reads named params, each read names its field in the error; :meth:`done` refuses extras."""

    def __init__(self, params: Any) -> None:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RpcError(
                INVALID_PARAMS, "params: must be an object (by-name)", data={"field": "params"}
            )
        self._p: dict[str, Any] = params
        self._seen: set[str] = set()

    def session(self) -> str:
        self._seen.add("session")
        if "session" not in self._p or not isinstance(self._p["session"], str):
            raise _bad("params.session", "required string")
        name = self._p["session"]
        if not valid_session_name(name):
            raise _bad(
                "params.session",
                "must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'",
            )
        return name

    def obj(self, key: str) -> dict[str, Any]:
        self._seen.add(key)
        value = self._p.get(key)
        if not isinstance(value, dict):
            raise _bad(f"params.{key}", "required object")
        return value

    def opt_uint(self, key: str) -> int | None:
        self._seen.add(key)
        value = self._p.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(f"params.{key}", "must be a non-negative integer or null")
        return value

    def int_(self, key: str) -> int:
        self._seen.add(key)
        value = self._p.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(f"params.{key}", "required integer")
        return value

    def opt_str(self, key: str) -> str | None:
        self._seen.add(key)
        value = self._p.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(f"params.{key}", "must be a string")
        return value

    def done(self) -> None:
        extra = sorted(set(self._p) - self._seen)
        if extra:
            raise _bad(f"params.{extra[0]}", "unknown field")


class Dispatcher:
    """Method table of the local protocol, bound to one SessionService (shared by all clients)."""

    def __init__(
        self,
        service: SessionService,
        *,
        server_info: Callable[[], dict[str, Any]] | None = None,
        max_line_bytes: int | None = None,
        health: StoreHealth | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """``status_extra``: more top-level members of ``daemon.status`` (the Live endpoint's
        ``live``). ``health``: the checkpoint store. While it cannot write, ``session.send`` and
        ``session.open`` are answered ``-32007`` at once, before anything is accepted (so a
        retry cannot duplicate), instead of waiting on a write that cannot succeed."""
        self.service = service
        self._health = health
        self._server_info = server_info or dict
        self._status_extra = status_extra
        self._max_line_bytes = max_line_bytes
        self._table: dict[str, Callable[[ClientContext, _Params], Call]] = {
            "rpc.hello": self._hello,
            "session.open": self._open,
            "session.send": self._send,
            "session.attach": self._attach,
            "session.detach": self._detach,
            "session.close": self._close,
            "session.list": self._list,
            "daemon.status": self._status,
        }

    def _check_durable(self, what: str) -> None:
        if self._health is None:
            return
        try:
            self._health.check_healthy()
        except CheckpointWriteError as exc:
            raise _not_durable(exc, what) from None

    async def _unless_unhealthy(self, work: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``work``, but give up with ``-32007`` the moment the store turns unhealthy: an
        open waits for a durable seq reservation that a failing disk never provides."""
        if self._health is None:
            return await work()
        health = self._health
        result: list[T] = []
        raised: list[Exception] = []
        failure: list[CheckpointWriteError] = []
        async with trio.open_nursery() as nursery:

            async def do() -> None:
                try:
                    result.append(await work())
                except Exception as exc:  # re-raised below, bare (not in an ExceptionGroup)
                    raised.append(exc)
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                failure.append(await health.wait_unhealthy())
                nursery.cancel_scope.cancel()

            nursery.start_soon(do)
            nursery.start_soon(watch)
        if raised:
            raise raised[0]
        if result:
            return result[0]
        raise _not_durable(failure[0], what)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._table)

    def prepare(self, ctx: ClientContext, method: str, params: Any) -> Call:
        handler = self._table.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "method not found", data={"method": method[:200]})
        return handler(ctx, _Params(params))

    # -- handlers -----------------------------------------------------------------------------

    def _hello(self, ctx: ClientContext, p: _Params) -> Call:
        version = p.int_("protocol")
        p.opt_str("client")
        p.done()
        if version not in SUPPORTED_PROTOCOLS:
            raise RpcError(
                INVALID_PARAMS,
                f"params.protocol: version {version} is not supported",
                data={"field": "params.protocol", "supported": list(SUPPORTED_PROTOCOLS)},
            )

        async def run() -> Result:
            info: dict[str, Any] = {
                "protocol": PROTOCOL_VERSION,
                "daemon": "geminid",
                "version": __version__,
                "methods": list(self._table),
            }
            if self._max_line_bytes is not None:
                info["max_line_bytes"] = self._max_line_bytes
            return Result(info)

        return Call("rpc.hello", run)

    def _open(self, ctx: ClientContext, p: _Params) -> Call:
        name = p.session()
        setup = p.obj("setup")
        p.done()
        for key in DAEMON_OWNED_SETUP:
            if key in setup:
                raise _bad(
                    f"params.setup.{key}",
                    "is owned by the daemon (it resumes sessions itself); remove it",
                )

        async def run() -> Result:
            self._check_durable("session.open")
            r = await self._unless_unhealthy(lambda: self.service.open(name, setup), "session.open")
            return Result(
                {
                    "session": r.session,
                    "status": r.status,
                    "created": r.created,
                    "restored": r.restored,
                    "last_seq": r.last_seq,
                    **({"warnings": list(r.warnings)} if r.warnings else {}),
                }
            )

        return Call("session.open", run)

    def _send(self, ctx: ClientContext, p: _Params) -> Call:
        name = p.session()
        message = p.obj("message")
        msg_id = p.opt_str("id")
        p.done()
        if msg_id is not None and not 1 <= len(msg_id) <= MAX_ID_LENGTH:
            raise _bad("params.id", f"must be 1-{MAX_ID_LENGTH} characters")
        self._check_durable("session.send")
        # Entered here, in request order; errors are raised here too. Audio is acknowledged at
        # once (no task: the hot path); durable kinds are awaited in their own task.
        outcome = self.service.send_now(name, message, msg_id)
        if isinstance(outcome, SendAck):
            result = Result(outcome.to_result())

            async def done() -> Result:
                return result

            return Call("session.send", done)

        async def run() -> Result:
            return Result((await outcome).to_result())

        return Call("session.send", run, concurrent=True)

    def _attach(self, ctx: ClientContext, p: _Params) -> Call:
        name = p.session()
        since = p.opt_uint("since")
        p.done()

        async def run() -> Result:
            # Synchronous from here to the return: no live event can slip in before the backlog.
            sub = self.service.attach(name, ctx.sink, since)
            ctx.subscribed(name, since)
            follow: list[bytes] = []
            if sub.gap is not None:
                follow.append(lagged_line(name, sub.gap.first, sub.gap.last, sub.gap.missed))
            follow.extend(e.line for e in sub.backlog)
            value = {
                "session": sub.session,
                "last_seq": sub.last_seq,
                "backlog": len(sub.backlog),
                "gap": None if sub.gap is None else SessionLagged(sub.gap.first, sub.gap.last, sub.gap.missed).to_params(),
            }
            return Result(value, tuple(follow))

        return Call("session.attach", run)

    def _detach(self, ctx: ClientContext, p: _Params) -> Call:
        name = p.session()
        p.done()

        async def run() -> Result:
            self.service.detach(name, ctx.sink)
            ctx.unsubscribed(name)
            return Result({"session": name})

        return Call("session.detach", run)

    def _close(self, ctx: ClientContext, p: _Params) -> Call:
        name = p.session()
        p.done()

        async def run() -> Result:
            result = await self.service.close(name)
            self.service.detach(name, ctx.sink)
            ctx.unsubscribed(name)
            return Result({"session": name, **(result or {})})

        return Call("session.close", run)

    def _list(self, ctx: ClientContext, p: _Params) -> Call:
        p.done()

        async def run() -> Result:
            return Result({"sessions": list(self.service.list())})

        return Call("session.list", run)

    def _status(self, ctx: ClientContext, p: _Params) -> Call:
        p.done()

        async def run() -> Result:
            status = dict(self.service.status())
            status["server"] = {"protocol": PROTOCOL_VERSION, **self._server_info()}
            if self._status_extra is not None:
                status.update(self._status_extra())
            return Result(status)

        return Call("daemon.status", run)


def lagged_line(session: str, first: int, last: int, missed: int | None = None) -> bytes:
    """The ``session.lagged`` notification: events ``first..last`` were not delivered
    (``missed`` of them, when known: see :class:`~geminid.protocol.notifications.SessionLagged`)."""
    note = SessionLagged(first, last, missed)
    return Event.build(0, note.METHOD, {"session": session, **note.to_params()}).line


def error_reply(exc: BaseException, *, method: str | None = None) -> tuple[int, str, Any]:
    """(code, message, data) for an exception raised by a handler. Logs unexpected ones."""
    if isinstance(exc, GeminidError):
        return exc.rpc_code, exc.message, (exc.data or None)
    incident = secrets.token_hex(4)
    log.error("rpc.internal_error", method=method, incident=incident, exc_info=exc)
    return INTERNAL_ERROR, "internal error", {"incident": incident}
