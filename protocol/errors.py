"""The one exception hierarchy of geminid.

Every error geminid raises on purpose derives from :class:`GeminidError`. Errors that a local
client can cause carry a JSON-RPC ``rpc_code`` so that the socket server can turn any of them
into a precise error reply without a table of special cases. The codes in -32000..-32099 are
the project's own (see protocol/PROTOCOL.md); the rest are JSON-RPC 2.0's.
"""

from __future__ import annotations

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


class ConfigError(GeminidError):
    """Bad configuration: refused at start with the key's name and the reason."""


class LiveMessageError(GeminidError):
    """A Gemini Live message is malformed; ``path`` names the bad field (e.g. ``setup.foo``)."""

    rpc_code = INVALID_MESSAGE

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message, data={"path": path} if path else None)
        self.path = path


class FrameError(LiveMessageError):
    """A server frame could not be decoded (not UTF-8, not JSON, not an object)."""


class RpcError(GeminidError):
    """An error that maps directly onto a JSON-RPC error object."""

    def __init__(self, code: int, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        self.rpc_code = code


class SessionError(GeminidError):
    """Base for errors about a named session."""

    rpc_code = SESSION_FAILED


class UnknownSession(SessionError):
    rpc_code = UNKNOWN_SESSION


class SessionFailed(SessionError):
    """The session is in a terminal state (failed or closed) and takes no more input."""

    rpc_code = SESSION_FAILED


class SetupMismatch(SessionError):
    rpc_code = SETUP_MISMATCH


class BufferFull(SessionError):
    rpc_code = BUFFER_FULL


class ToolCallLost(SessionError):
    """A toolResponse names a call the server no longer knows (lost to a resume)."""

    rpc_code = TOOL_CALL_LOST


class NotDurable(SessionError):
    """A turn could not be made durable (disk full, I/O error): it was not acknowledged."""

    rpc_code = NOT_DURABLE


class ShuttingDown(GeminidError):
    rpc_code = SHUTTING_DOWN


class CheckpointError(GeminidError):
    """Base for checkpoint store failures."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint file failed its checksum or schema: it gets quarantined."""


class CheckpointWriteError(CheckpointError):
    """A write or fsync failed; the state stays dirty and is rewritten whole later."""


class UpstreamError(GeminidError):
    """Problems talking to Gemini that are reported as outcomes, not raised to clients."""


class EscalationError(GeminidError):
    """A supervised actor crashed more often than its restart intensity allows."""
