r"""Transport exceptions (trio, trio-websocket, the OS, our codec) as typed :class:`~.endings.Ending`\ s.

Kept apart from :mod:`.endings` so that the value type stays pure: only the link imports this.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

import trio

from geminid.protocol.errors import FrameError

from .auth import CredentialError
from .endings import DialFault, Ended, Ending, EndingKind

if TYPE_CHECKING:
    # trio-websocket (with wsproto and h11) loads on the first dial, not at start-up.
    from trio_websocket import ConnectionClosed, ConnectionRejected


def ending_from_closed(exc: ConnectionClosed) -> Ending:
    """A close frame (or a drop without one, 1006) seen by the library."""
    reason = exc.reason
    code = int(reason.code) if reason is not None else 1006
    text = (reason.reason or "") if reason is not None else ""
    return Ending(EndingKind.CLOSED, code=code, reason=text)


def ending_from_frame_error(exc: FrameError) -> Ending:
    """The peer sent something that is not a JSON object frame: not Gemini, or broken."""
    return Ending(EndingKind.CLOSED, code=1007, reason=f"undecodable server frame: {exc}")


def ending_from_exception(exc: BaseException, *, stage: str) -> Ending | None:
    """Map a transport exception to an Ending; None if it is not one of ours (a real bug)."""
    # Here, not at the top: trio_websocket (+ wsproto, h11) is ~50 ms a start-up can skip.
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

    if isinstance(exc, Ended):
        return exc.ending
    if isinstance(exc, ConnectionRejected):
        return Ending(EndingKind.REJECTED, http_status=exc.status_code, reason=_body(exc))
    if isinstance(exc, ConnectionClosed):
        return ending_from_closed(exc)
    if isinstance(exc, trio.TooSlowError):
        if stage == "tls":
            return Ending(
                EndingKind.CONNECT_TIMEOUT,
                reason="no answer to the TLS handshake within the connect timeout",
                fault=DialFault.TLS_SILENT,
            )
        kind = EndingKind.SETUP_TIMEOUT if stage == "setup" else EndingKind.CONNECT_TIMEOUT
        return Ending(kind, reason=f"no answer within the {stage} timeout")
    if isinstance(exc, CredentialError):
        # No connection was attempted: the credential (token endpoint, token file) failed.
        return Ending(EndingKind.NETWORK, reason=f"credential: {exc}")
    if isinstance(exc, HandshakeError):
        return Ending(EndingKind.CONNECT_TIMEOUT, reason=type(exc).__name__)
    if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError)):
        fault = _fault(exc, stage)
        if fault is DialFault.TLS:
            # trio wraps the SSLError in BrokenResourceError, whose own text is empty.
            cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
            return Ending(EndingKind.NETWORK, reason=f"TLS handshake failed: {cause}", fault=fault)
        return Ending(EndingKind.NETWORK, reason=f"{type(exc).__name__}: {exc}", fault=fault)
    if isinstance(exc, FrameError):
        return ending_from_frame_error(exc)
    return None


def ending_from_group(exc: BaseException, *, stage: str) -> Ending | None:
    """Like :func:`ending_from_exception` but looks through (nested) exception groups.

    trio's nurseries always wrap child errors in groups; the websocket's reader task is such a
    child (it raises ConnectionRejected). Returns None when any leaf is not a transport error,
    so that cancellation and genuine bugs propagate untouched.
    """
    if isinstance(exc, BaseExceptionGroup):
        endings = [ending_from_group(e, stage=stage) for e in exc.exceptions]
        if not endings or any(e is None for e in endings):
            return None
        return endings[0]
    return ending_from_exception(exc, stage=stage)


def beside_transport_errors(group: BaseExceptionGroup[BaseException], *, stage: str) -> BaseException:
    """What to raise for a group that :func:`ending_from_group` did not explain: the group
    without its transport errors.

    A transport error beside a cancellation (the websocket reader's ConnectionRejected racing
    the daemon's own shutdown) is moot; left in, it would turn a clean cancellation into a crash
    of the session, and of the daemon's exit. Other errors (bugs) still propagate, whole.
    """
    _, rest = group.split(
        lambda e: not isinstance(e, BaseExceptionGroup) and ending_from_exception(e, stage=stage) is not None
    )
    return group if rest is None else rest


def _fault(exc: BaseException, stage: str) -> DialFault | None:
    """What a dial's transport error says about the endpoint (stages: connect, tls)."""
    if stage == "tls":
        tls = isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError)
        return DialFault.TLS if tls else None
    if stage != "connect":
        return None
    if isinstance(exc, socket.gaierror):
        return DialFault.DNS
    if _all_refused(exc):
        return DialFault.REFUSED
    return None


def _all_refused(exc: BaseException) -> bool:
    """A refusal, or trio's "all attempts failed" OSError raised from a group of refusals only."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__
    if isinstance(exc, OSError) and isinstance(cause, BaseExceptionGroup):
        leaves = _leaves(cause)
        return bool(leaves) and all(isinstance(e, ConnectionRefusedError) for e in leaves)
    return False


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def _body(exc: ConnectionRejected) -> str:
    body: bytes = exc.body or b""
    return body[:200].decode("utf-8", "replace")
