"""geminid.protocol: the two wire formats geminid speaks, and the client side. Never imports
``geminid.daemon`` (``tests/test_layering.py`` checks it), so a client needs nothing of the daemon.

- ``live``: the Gemini Live (BidiGenerateContent) message codec and client-message validator.
- ``jsonrpc`` and ``framing``: the local JSON-RPC 2.0 line protocol (pure).
- ``constants``: the protocol version, the session-name rule, the default socket path.
- ``errors``: the client-visible exception tree and the JSON-RPC error codes.
- ``client`` (trio), ``aio_client`` (asyncio) and ``ctl`` (``geminictl``).

The names below are the public surface, re-exported here (``tests/protocol/test_exports.py``
lists them); the modules stay importable under their own names (``geminid.protocol.client``...).
"""

import typing as _typing

from . import constants as constants
from . import errors as errors
from . import framing as framing
from . import jsonrpc as jsonrpc
from . import live as live
from .acks import SendAck as SendAck
from .client import Client as Client
from .client import default_socket_path as default_socket_path
from .client import open_client as open_client
from .constants import PROTOCOL_VERSION as PROTOCOL_VERSION
from .constants import valid_session_name as valid_session_name
from .errors import BufferFull as BufferFull
from .errors import ConnectionLost as ConnectionLost
from .errors import DaemonUnreachable as DaemonUnreachable
from .errors import FrameError as FrameError
from .errors import GeminidError as GeminidError
from .errors import LiveMessageError as LiveMessageError
from .errors import NotDurable as NotDurable
from .errors import RemoteError as RemoteError
from .errors import RpcError as RpcError
from .errors import SessionError as SessionError
from .errors import SessionFailed as SessionFailed
from .errors import SetupMismatch as SetupMismatch
from .errors import ShuttingDown as ShuttingDown
from .errors import ToolCallLost as ToolCallLost
from .errors import UnknownSession as UnknownSession

if _typing.TYPE_CHECKING:
    from .aio_client import AioClient as AioClient


def __getattr__(name: str) -> object:
    """``AioClient`` on first use: it imports asyncio (~45 ms), which the daemon never needs
    and would otherwise pay at every start (``tests/test_startup_imports.py``)."""
    if name == "AioClient":
        from .aio_client import AioClient as AioClient

        return AioClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "PROTOCOL_VERSION",
    "AioClient",
    "BufferFull",
    "Client",
    "ConnectionLost",
    "DaemonUnreachable",
    "FrameError",
    "GeminidError",
    "LiveMessageError",
    "NotDurable",
    "RemoteError",
    "RpcError",
    "SendAck",
    "SessionError",
    "SessionFailed",
    "SetupMismatch",
    "ShuttingDown",
    "ToolCallLost",
    "UnknownSession",
    "constants",
    "default_socket_path",
    "errors",
    "framing",
    "jsonrpc",
    "live",
    "open_client",
    "valid_session_name",
]
