"""The public surfaces: what each package re-exports, spelled so that static tools see it too.

On the pattern of trio's ``_tests/test_exports.py``: the lists below are the surface; changing
one is a deliberate act (a test fails until the list says so).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

PUBLIC: dict[str, list[str]] = {
    "geminid.protocol": [
        "PROTOCOL_VERSION", "AioClient", "BufferFull", "Client", "ConnectionLost",
        "DaemonUnreachable", "FrameError", "GeminidError", "LiveMessageError", "NotDurable",
        "RemoteError", "RpcError", "SendAck", "SessionError", "SessionFailed", "SetupMismatch",
        "ShuttingDown", "ToolCallLost", "UnknownSession", "constants", "default_socket_path",
        "errors", "framing", "jsonrpc", "live", "open_client", "valid_session_name",
    ],
    "geminid.daemon": [
        "CheckpointCorrupt", "CheckpointError", "CheckpointWriteError", "ConfigError",
        "EscalationError", "__version__",
    ],
    "geminid.daemon.upstream": [
        "API_KEY_HEADER", "FATAL_CAUSES", "MESSAGE_QUEUE_SIZE", "Action", "ApiKey", "Backoff",
        "BackoffPolicy", "Context", "Credentials", "Dial", "DialAuth", "DialFault", "DialHistory", "Ended", "Ending",
        "EndingKind", "Endpoint", "FixedKey", "Suspicion", "UpstreamLink", "Verdict", "classify",
        "beside_transport_errors", "ending_from_exception", "ending_from_group", "open_link",
        # issue #13 goAway pre-dial: the dial split in two, and the pre-dialled socket's holder
        "Handshaken", "PreDialSlot", "PreDialled", "dial_socket", "setup_link",
        # issue #14 credentials layer
        "AUTHORIZATION_HEADER", "CREDENTIAL_CAUSES", "CredentialError", "EphemeralToken",
        "VertexCredentials", "vertex_model",
    ],
    "geminid.daemon.errors": [
        "CheckpointCorrupt", "CheckpointError", "CheckpointWriteError", "ConfigError",
        "EscalationError",
    ],
}

#: Import paths used by README's examples: they keep working whatever moves behind them.
README_IMPORTS = [
    ("geminid.protocol.client", ["open_client", "RemoteError", "Client", "DaemonUnreachable"]),
    ("geminid.protocol.aio_client", ["AioClient"]),
    ("geminid.protocol.live", ["setup", "client_content", "ServerMessage", "parse_server_frame"]),
    ("geminid.protocol", ["live"]),
    ("geminid.daemon.config", ["Config", "Secret", "ServerConfig", "UpstreamConfig"]),
    ("geminid.daemon.fake", ["FakeUpstream", "FakeOptions", "Fault"]),
]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_all_is_the_listed_surface(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(PUBLIC[name])
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_exported_name_resolves(name):
    module = importlib.import_module(name)
    for symbol in module.__all__:
        assert hasattr(module, symbol), f"{name}.{symbol}"


PACKAGES = ["geminid.protocol", "geminid.daemon", "geminid.daemon.upstream"]


@pytest.mark.parametrize("name", PACKAGES)
def test_no_public_name_is_left_out_of_all(name):
    """A public name that a package imports or defines but does not list is an accident."""
    module = importlib.import_module(name)
    for symbol, value in vars(module).items():
        if symbol.startswith("_") or symbol == "annotations":
            continue
        if isinstance(value, ModuleType) and value.__name__.startswith(name + "."):
            if symbol not in module.__all__:
                continue  # a submodule bound by importing it; reachable by its own path
        assert symbol in module.__all__, f"{name}.{symbol} is public but not in __all__"


def _init_file(name: str) -> Path:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    return Path(module.__file__)


@pytest.mark.parametrize("name", PACKAGES)
def test_reexports_are_explicit(name):
    """``from .x import Y as Y``: the form that mypy (no implicit re-export) and IDEs follow."""
    tree = ast.parse(_init_file(name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.level == 1, f"{name}: re-export siblings relatively ({ast.unparse(node)})"
            for alias in node.names:
                assert alias.asname == alias.name, f"{name}: {ast.unparse(node)} needs 'as {alias.name}'"


@pytest.mark.parametrize(("module", "names"), README_IMPORTS)
def test_readme_import_paths_keep_working(module, names):
    mod = importlib.import_module(module)
    for symbol in names:
        assert hasattr(mod, symbol), f"{module}.{symbol}"


def test_reexported_objects_are_the_originals():
    import geminid.protocol as protocol
    from geminid.protocol import client, errors

    assert protocol.Client is client.Client and protocol.RemoteError is errors.RemoteError
    assert client.RemoteError is errors.RemoteError  # the old path raises the same class
    for symbol in protocol.__all__:
        value = getattr(protocol, symbol)
        if inspect.isclass(value):
            assert value.__module__.startswith("geminid.protocol."), symbol
