"""Facts of the local protocol that both sides need, each written once.

The daemon (``geminid.daemon``) and the clients (``geminid.protocol.client``, ``aio_client``,
``geminictl``) import these from here, so that the client side never has to import the daemon
to learn where its socket is, and a rule such as "what is a session name" cannot drift between
the RPC layer, the registry and the checkpoint store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

#: Version of the local protocol (PROTOCOL.md, "Versioning"). Bumped on incompatible changes only;
#: additions (new methods, new optional params, new result members) keep the number.
PROTOCOL_VERSION = 1

#: A session name: 1-64 characters of ``[A-Za-z0-9._-]`` (ASCII), not starting with ``.``. It is
#: also the checkpoint file's stem, hence no ``/``, no leading dot and no ``..``. Match it with
#: ``fullmatch`` (``valid_session_name``): ``match`` or a ``$`` anchor would let a trailing
#: newline through.
SESSION_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def valid_session_name(name: object) -> bool:
    """True when ``name`` is a string that satisfies :data:`SESSION_NAME`."""
    return isinstance(name, str) and SESSION_NAME.fullmatch(name) is not None


#: The environment variable the clients (and geminictl) read for the socket path.
SOCKET_ENV = "GEMINID_SOCKET"
#: The socket's file name inside the runtime directory.
SOCKET_NAME = "geminid.sock"


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """systemd's RuntimeDirectory= first, then the user's runtime dir, then /run/geminid."""
    environ = os.environ if environ is None else environ
    if base := environ.get("RUNTIME_DIRECTORY"):
        return Path(base.split(":")[0])
    if xdg := environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "geminid"
    return Path("/run/geminid")


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """The daemon's default socket: ``runtime_dir(environ) / SOCKET_NAME``."""
    return runtime_dir(environ) / SOCKET_NAME
