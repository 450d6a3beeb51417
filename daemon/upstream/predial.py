"""A connection dialled ahead of use: TCP, TLS and the WebSocket handshake now, the setup later.

During a goAway drain the session dials its next connection in the background
(:class:`PreDialled`), so that once the old connection is closed (the real service refuses a
resume while the old socket is still open, GEMINI_LIVE.md §5) only the setup is left to do.
Whether to pre-dial, and whether a pre-dialled connection may still be used, is the session
core's decision; this module is the I/O: it owns the nursery the connection's websocket reader
runs in, for as long as the connection lives (the pre-dial's own task, in a nursery of the
session that outlives each connection), and closes the connection when it is released unused.
"""

from __future__ import annotations

from typing import Any

import trio

from .endings import Ended, Ending, EndingKind
from .link import Dial, Handshaken, dial_socket
from .translate import beside_transport_errors, ending_from_group

#: How long the end of a session waits for a pre-dialled connection's close (1000; the link's
#: own close is bounded by 2 s).
CLOSE_WAIT = 3.0


class PreDialled:
    """One pre-dial: :meth:`run` it in a long-lived nursery, :meth:`wait` for it, then either
    use its socket (and :meth:`release` it once the connection that used it has ended) or
    :meth:`release` it unused (it is then closed with 1000)."""

    def __init__(self, dial: Dial) -> None:
        self._dial = dial
        self.socket: Handshaken | None = None
        #: Why the dial failed (a transport ending), if it did.
        self.failure: Ending | None = None
        self.used = False
        self._ready = trio.Event()
        self._released = trio.Event()
        self._scope = trio.CancelScope()
        #: Set when run() has returned: the socket (if any) is closed by then.
        self.finished = trio.Event()

    async def run(self) -> None:
        """Dial (bounded by the dial's connect timeout), then hold the connection until released."""
        try:
            with self._scope:
                try:
                    async with trio.open_nursery() as ws_nursery:
                        try:
                            self.socket = await dial_socket(ws_nursery, self._dial)
                        except Ended as exc:
                            self.failure = exc.ending
                            return
                        finally:
                            self._ready.set()
                        await self._released.wait()
                        if not self.used:
                            await self.socket.close(1000)
                        ws_nursery.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    # The websocket reader task raises in its nursery: a refused upgrade
                    # (ConnectionRejected) while dialling, rarely anything after it.
                    found = ending_from_group(group, stage="connect")
                    if found is None:
                        # (a transport error beside a cancellation is moot: raise the rest)
                        raise beside_transport_errors(group, stage="connect")  # noqa: B904
                    self.failure = self.failure or found
        finally:
            if self.socket is not None:
                await trio.aclose_forcefully(self.socket.stream)
            if self.failure is None and self.socket is None:
                self.failure = Ending(EndingKind.LOCAL, reason="pre-dial cancelled")
            self._ready.set()
            self.finished.set()

    async def wait(self) -> Handshaken | None:
        """The handshaken connection once the dial is over (the dial's own connect timeout bounds
        the wait), or None if it failed (then :attr:`failure` says why)."""
        await self._ready.wait()
        return self.socket if self.failure is None else None

    def release(self) -> None:
        """Done with it: an unused connection is closed with 1000 (a dial still under way is
        cancelled); a used one's nursery ends (the link has been closed by its user)."""
        if not self._ready.is_set():
            self._scope.cancel()
        self._released.set()


class PreDialSlot:
    """A session's pre-dial: at most one pending (dialled, not yet taken by a dial), run in
    ``nursery`` (the session actor's: it outlives each connection; set before the first start)."""

    def __init__(self, dial: Dial, log: Any) -> None:
        self._dial = dial
        self._log = log
        self.nursery: trio.Nursery | None = None
        self._pending: PreDialled | None = None

    def start(self) -> None:
        """Dial the next connection now (the core's :class:`PreDial`)."""
        if self.nursery is None or self._pending is not None:
            return
        self._pending = PreDialled(self._dial)
        self.nursery.start_soon(self._pending.run)
        self._log.info("upstream.predial")

    def take(self) -> PreDialled | None:
        """The pending pre-dial, for the dial now due (its user releases it when done)."""
        predial, self._pending = self._pending, None
        return predial

    def drop(self, reason: str) -> None:
        """Close the pending pre-dial unused (the core's :class:`DropPreDial`)."""
        predial = self.take()
        if predial is not None:
            self._log.info("upstream.predial_dropped", reason=reason)
            predial.release()

    async def aclose(self, reason: str) -> None:
        """The session is over: drop what is pending and wait (briefly) until it is closed."""
        predial = self._pending
        self.drop(reason)
        if predial is not None:
            with trio.move_on_after(CLOSE_WAIT):
                await predial.finished.wait()
