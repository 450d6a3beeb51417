"""One Live-protocol client over one session: the shell that translates.

A Live client is just another client of a session: it binds (by ``/sessions/NAME``, a local
handle or a new anonymous session), then every client message goes through ``send_now`` (the
rules of ``session.send``: validation, seqs, durability, replay after a reconnect) and every
session event goes through :func:`~.translate.translate` to the client. It is the session's
EventSink, so ``deliver`` never blocks: past ``queue_cap`` frames waiting, the client is too slow
and is closed (1013) rather than holding the session up.

What the client has seen survives the daemon: at each reply end it was given whole, the seq of
the client message that reply answers is recorded with its local handle
(:meth:`~.handles.LocalHandles.note_answered`, durable soon after, off the loop). A client that
comes back to a restarted daemon is attached from the new daemon's event-ring start, so that a
reply produced before it came back reaches it, and the replies to turns it had already seen
answered (which the restarted daemon re-asks: it resumed from a handle up to ~1 s old) are left
out. Only replayed replies are ever left out; a kill between a reply end and its record means
that reply comes again (a repeat, never a loss).

Closes, in the protocol's own terms: 1007 for a bad first message, a bad client message or a
setup that differs from the named session's (as the service would); 1008 "Requested entity was
not found." for a local handle that names no session; 1000 on geminid's planned shutdown (after
a ``goAway``) or when a newer connection takes the session over.
"""

from __future__ import annotations

import collections
import json
import secrets
from typing import TYPE_CHECKING, Any

import structlog
import trio

from geminid.daemon.events import Event
from geminid.daemon.live import translate as tr
from geminid.daemon.live.handles import split_seen, with_seen
from geminid.daemon.live.paths import Target
from geminid.daemon.live.replies import ReplyView
from geminid.daemon.live.toolreuse import ToolReuse
from geminid.protocol import live
from geminid.protocol.errors import (
    GeminidError,
    LiveMessageError,
    SetupMismatch,
    ShuttingDown,
    ToolCallLost,
)

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

    from geminid.daemon.live.server import LiveServer

log = structlog.get_logger("geminid.live")

#: How long a client has to send its setup after the upgrade.
SETUP_TIMEOUT = 30.0
_NOT_FOUND = "Requested entity was not found."


def _decode(data: str | bytes) -> dict[str, Any] | None:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        msg = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return msg if isinstance(msg, dict) else None


class LiveConnection:
    """See the module docstring. ``server`` owns the registry, the handles and the positions."""

    def __init__(self, ws: WebSocketConnection, server: LiveServer, target: Target, *,
                 client_id: int, queue_cap: int) -> None:
        self._ws = ws
        self._server = server
        self._target = target
        self._cap = max(16, queue_cap)
        #: (event seq or 0, text frame or None: only the position, the seq of the client message
        #: whose reply this frame ends or 0) waiting for the writer.
        self._out: collections.deque[tuple[int, str | None, int]] = collections.deque()
        #: The seq of the last client message whose reply this session's Live client was given
        #: whole (on this daemon or, recorded with the handle, on an earlier one).
        self._answered = 0
        #: ...as it will be once the frames queued now are written (for the handles it is given).
        self._queued_answered = 0
        self._view = ReplyView()
        self._tools = ToolReuse()
        #: Tool responses geminid sends itself (reused answers), for the answerer task.
        self._answers: collections.deque[dict[str, Any]] = collections.deque()
        self._answer_lot = trio.lowlevel.ParkingLot()
        self._closing: tr.Close | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self._handle: str | None = None
        self.name: str | None = None
        self.client_id = client_id
        self.forwarded = 0
        self._log = log.bind(client=client_id, version=target.version)

    # -- EventSink ----------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if self._closing is not None:
            return
        if self._seen_whole(event):
            self._out.append((event.seq, None, 0))  # a replayed reply the client saw whole
            self._lot.unpark_all()
            return
        action = tr.translate(event.method, event.params, self._view, self._tools,
                              continue_on_context_loss=self._target.continue_on_context_loss)
        if isinstance(action, tr.Close):
            self.close(action)
            return
        if len(self._out) >= self._cap:
            self.close(tr.Close(1013, "geminid: the client reads too slowly; reconnect with the handle"))
            return
        forwards = [a for a in action if isinstance(a, tr.Forward)]
        answers = [a.message for a in action if isinstance(a, tr.Answer)]
        if answers:
            self._answers.extend(answers)
            self._answer_lot.unpark_all()
        if not forwards and event.method == "session.message":
            self._out.append((event.seq, None, 0))  # nothing for the client: only the position
        for forward in forwards:
            ends = (event.answers or 0) if forward.turn_complete else 0
            self._out.append((event.seq, forward.text, ends))
            self._queued_answered = max(self._queued_answered, ends)
            if forward.turn_complete and self._handle is not None:
                self._out.append((0, self._resumption_update(), 0))
        self._lot.unpark_all()

    def _resumption_update(self) -> str:
        """A ``sessionResumptionUpdate``: the handle, with what the client will have seen once the
        frames queued before it are written (it is written after them)."""
        assert self._handle is not None
        return tr.resumption_update(with_seen(self._handle, self._queued_answered))

    def _seen_whole(self, event: Event) -> bool:
        """A frame of a replayed reply to a client message whose reply this client was given
        whole already (the restarted daemon re-asked a turn its checkpoint did not show as
        answered). Only replayed replies: a fresh one is never left out."""
        return (event.method == "session.message" and bool(event.params.get("replayed"))
                and event.answers is not None and event.answers <= self._answered)

    def close(self, close: tr.Close) -> None:
        """Close once the frames already queued are written (the first close wins)."""
        if self._closing is None:
            self._closing = close
            self._lot.unpark_all()

    def go_away(self, time_left: float, reason: str) -> None:
        """geminid's planned shutdown: ``goAway`` then close 1000, as the service does."""
        if self._closing is None and self.name is not None:
            self._out.append((0, tr.go_away(time_left), 0))
        self.close(tr.Close(1000, reason))

    # -- life ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            name = await self._bind()
            if name is not None:
                await self._pump(name)
            else:
                await self._writer()
        finally:
            if self.name is not None:
                self._server.unbind(self.name, self)
            self._log.info("live.client_disconnected", session=self.name, forwarded=self.forwarded,
                           repeats_hidden=self._view.hidden, restarts_shown=self._view.diverged,
                           tool_answers_reused=self._tools.reused,
                           close=None if self._closing is None else self._closing.code)

    async def _bind(self) -> str | None:
        from trio_websocket import ConnectionClosed

        data: str | bytes | None = None
        with trio.move_on_after(SETUP_TIMEOUT):
            try:
                data = await self._ws.get_message()
            except ConnectionClosed:
                return None
        if data is None:
            self.close(tr.Close(1008, "geminid: no setup message within 30 s"))
            return None
        msg = _decode(data)
        if msg is None or not isinstance(msg.get("setup"), dict) or len(msg) != 1:
            self.close(tr.Close(1007, "the first message must be a setup message"))
            return None
        setup = dict(msg["setup"])
        resumption = setup.pop("sessionResumption", None) or setup.pop("session_resumption", None)
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        try:
            live.validate_client_message({"setup": setup})
        except LiveMessageError as exc:
            self.close(tr.Close(1007, tr.reason_text(exc.message)))
            return None
        registry = self._server.registry
        if self._target.session is not None:
            name = self._target.session
        elif isinstance(handle, str) and handle:
            found = self._server.handles.session_of(handle)
            if found is None or found not in registry:
                self._log.info("live.unknown_handle")
                self.close(tr.Close(1008, _NOT_FOUND))
                return None
            name = found
        else:
            name = "live-" + secrets.token_hex(6)
        try:
            await registry.open(name, setup)
        except SetupMismatch:
            self.close(tr.Close(1007, tr.reason_text(
                f"geminid: session {name!r} is open with a different setup")))
            return None
        except LiveMessageError as exc:
            self.close(tr.Close(1007, tr.reason_text(exc.message)))
            return None
        except ShuttingDown:
            self.close(tr.Close(1001, "geminid is shutting down"))
            return None
        except GeminidError as exc:
            self.close(tr.Close(1011, tr.reason_text(f"geminid: {exc.message}")))
            return None
        handles = self._server.handles
        self._handle = await handles.issue(name, set(registry.names()))
        self.name = name
        self._server.bind(name, self)
        self._out.append((0, tr.setup_complete(), 0))
        # A handle given with a reply end says that reply was seen whole (handles.with_seen).
        presented = split_seen(handle)[1] if isinstance(handle, str) and handles.session_of(handle) == name else 0
        self._answered = self._queued_answered = max(handles.answered(name), presented)
        self._out.append((0, self._resumption_update(), 0))
        since = self._server.positions.get(name)
        if since is None and (handles.seen_before(name) is not None or presented):
            # A Live client of this session was served by an earlier daemon: whatever this one
            # produced is news to it, except the replies it saw whole (see _seen_whole).
            since = 0
        sub = registry.attach(name, self, since)
        for event in sub.backlog:
            self.deliver(event)
        self._log.info("live.client_bound", session=name, named=self._target.session is not None,
                       resumed=handle is not None, backlog=len(sub.backlog))
        return name

    async def _pump(self, name: str) -> None:
        try:
            async with trio.open_nursery() as nursery:

                async def writer() -> None:
                    await self._writer()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(writer)
                nursery.start_soon(self._answerer, name)
                if await self._reader(name):
                    nursery.cancel_scope.cancel()
        finally:
            self._server.registry.detach(name, self)

    async def _writer(self) -> None:
        from trio_websocket import ConnectionClosed

        try:
            while True:
                if self._out:
                    seq, text, ends = self._out.popleft()
                    if text is not None:
                        await self._ws.send_message(text)
                        self.forwarded += 1 if seq else 0
                    if seq and self.name is not None:
                        self._server.positions[self.name] = seq
                    if ends and self.name is not None:
                        self._answered = max(self._answered, ends)
                        self._server.handles.note_answered(self.name, ends)
                    continue
                if self._closing is not None:
                    with trio.move_on_after(5):
                        await self._ws.aclose(self._closing.code, self._closing.reason)
                    return
                await self._lot.park()
        except ConnectionClosed:
            return

    async def _answerer(self, name: str) -> None:
        """Send the reused tool responses (decided in ``deliver``, which may not block)."""
        while True:
            while not self._answers:
                await self._answer_lot.park()
            if not await self._submit(name, self._answers.popleft()):
                return

    async def _submit(self, name: str, msg: dict[str, Any]) -> bool:
        """One client message into the session, by ``session.send``'s rules. False: closing."""
        try:
            outcome = self._server.registry.send_now(name, msg)
            if not isinstance(outcome, int):
                await outcome
        except LiveMessageError as exc:
            self.close(tr.Close(1007, tr.reason_text(exc.message)))
            return False
        except ToolCallLost:
            # The call was lost to a reconnect and the model will ask again: drop the answer.
            self._log.info("live.tool_response_dropped", session=name)
        except ShuttingDown:
            return False  # the server's drain sends goAway and closes
        except GeminidError as exc:
            self.close(tr.Close(1011, tr.reason_text(f"geminid: {exc.message}")))
            return False
        return True

    async def _reader(self, name: str) -> bool:
        """Client messages into the session. True when the client went away."""
        from trio_websocket import ConnectionClosed

        while True:
            try:
                data = await self._ws.get_message()
            except ConnectionClosed:
                return True
            if self._closing is not None:
                return False
            msg = _decode(data)
            if msg is None:
                self.close(tr.Close(1007, "a client message must be a JSON object"))
                return False
            if "setup" in msg:
                self.close(tr.Close(1007, "setup may be sent only once, as the first message"))
                return False
            if "toolResponse" in msg or "tool_response" in msg:  # (the SDK sends snake_case)
                try:
                    self._tools.client_responded(live.validate_client_message(msg)[1])
                except LiveMessageError:
                    pass  # send_now says why, with a 1007
            if not await self._submit(name, msg):
                return False
