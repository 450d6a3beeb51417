"""The client-visible exception tree of geminid, and the local protocol's JSON-RPC error codes.

Every error geminid raises on purpose derives from :class:`GeminidError`. Errors that a local
client can cause carry a JSON-RPC ``rpc_code``, so that the socket server turns any of them into a
precise error reply without a table of special cases; the client library raises
:class:`RemoteError` with that ``code``. The codes in -32000..-32099 are the project's own (see
protocol/PROTOCOL.md); the rest are JSON-RPC 2.0's. Errors that only the daemon raises and that
never cross the socket (configuration, checkpoints, supervision) live in ``geminid.daemon.errors``,
under the same root::

    GeminidError
    ├── LiveMessageError        -32004  a Gemini Live message is malformed (``path`` names the field)
    │   └── FrameError                  a server frame is not UTF-8 JSON of an object
    ├── RpcError                (code)  a request is wrong at the JSON-RPC level (params, method)
    ├── SessionError            -32002  about one named session:
    │   ├── UnknownSession      -32001    no session of that name
    │   ├── SessionFailed       -32002    the session is failed or closed; it takes no input
    │   ├── SetupMismatch       -32005    ``session.open`` of a live name with another setup
    │   ├── BufferFull          -32003    the replay buffer is full (the upstream is down too long)
    │   ├── ToolCallLost        -32006    a toolResponse names a call lost to a resume
    │   └── NotDurable          -32007    a turn could not be made durable; it was not acknowledged
    ├── ShuttingDown            -32009  the daemon is stopping and takes no new requests
    │                                   (client side, raised by geminid.protocol.client:)
    ├── RemoteError             (code)  the daemon answered a call with an error (``code``, ``data``)
    ├── DaemonUnreachable               nothing accepts connections at the socket path
    └── ConnectionLost                  the connection dropped while a call waited for its answer
"""

from __future__ import annotations

import os
from typing import Any

# JSON-RPC 2.0 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# geminid's own codes.
UNKNOWN_SESSION = -32001
SESSION_FAILED = -32002
BUFFER_FULL = -32003
INVALID_MESSAGE = -32004
SETUP_MISMATCH = -32005
TOOL_CALL_LOST = -32006
NOT_DURABLE = -32007
LINE_TOO_LONG = -32008
SHUTTING_DOWN = -32009
PERMISSION_DENIED = -32010


class GeminidError(Exception):
    """Base of every deliberate geminid error."""

    rpc_code: int = INTERNAL_ERROR

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class LiveMessageError(GeminidError):
    """A Gemini Live message is malformed; ``path`` names the bad field (e.g. ``setup.foo``)."""

    rpc_code = INVALID_MESSAGE

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message, data={"path": path} if path else None)
        self.path = path


class FrameError(LiveMessageError):
    """A server frame could not be decoded (not UTF-8, not JSON, not an object)."""


class RpcError(GeminidError):
    """A request that is wrong at the JSON-RPC level: bad params (-32602, ``data.field`` names the
    field), an unknown method (-32601), an invalid request (-32600)."""

    def __init__(self, code: int, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        self.rpc_code = code


class SessionError(GeminidError):
    """Base for errors about a named session."""

    rpc_code = SESSION_FAILED


class UnknownSession(SessionError):
    """No session of that name (never opened, or closed and deleted)."""

    rpc_code = UNKNOWN_SESSION


class SessionFailed(SessionError):
    """The session is in a terminal state (failed or closed) and takes no more input."""

    rpc_code = SESSION_FAILED


class SetupMismatch(SessionError):
    """``session.open`` named a live session with a different setup (sessions are not re-set up)."""

    rpc_code = SETUP_MISMATCH


class BufferFull(SessionError):
    """The session's replay buffer is full: the upstream has been down too long to take more."""

    rpc_code = BUFFER_FULL


class ToolCallLost(SessionError):
    """A toolResponse names a call the server no longer knows (lost to a resume)."""

    rpc_code = TOOL_CALL_LOST


class NotDurable(SessionError):
    """A turn could not be made durable (disk full, I/O error): it was not acknowledged."""

    rpc_code = NOT_DURABLE


class ShuttingDown(GeminidError):
    """The daemon is stopping: new requests are refused while sessions close and flush."""

    rpc_code = SHUTTING_DOWN


class RemoteError(GeminidError):
    """Raised by the client library when the daemon answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None, *, method: str = "") -> None:
        super().__init__(message, data=data if isinstance(data, dict) else None)
        self.rpc_code = code
        self.code = code
        self.method = method
        self.raw_data = data

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self.message} (code {self.code})"


class DaemonUnreachable(GeminidError):
    """Raised by the client library when nothing accepts connections at the socket path."""

    def __init__(self, path: os.PathLike[str] | str, reason: str) -> None:
        super().__init__(f"no daemon at {path}: {reason}", data={"path": str(path)})
        self.path = str(path)
        self.reason = reason


class ConnectionLost(GeminidError):
    """Raised by the client library for a call in flight when the connection dropped.

    The daemon may or may not have executed the call; the client cannot tell.
    """
