"""The daemon's own errors: raised and handled inside the daemon, never sent over the socket.

They share the root of the client-visible tree (``geminid.protocol.errors``), so that one
``except GeminidError`` at the command line catches every deliberate error, but they carry no
JSON-RPC code of their own: a client never sees one (it sees the outcome instead, e.g.
``NotDurable`` for a failed checkpoint write)::

    GeminidError                 (geminid.protocol.errors)
    ├── ConfigError              bad configuration: refused at start (exit 2) or at SIGHUP (kept)
    ├── CheckpointError          the checkpoint store failed:
    │   ├── CheckpointCorrupt      a file failed its checksum or schema: quarantined at load
    │   └── CheckpointWriteError   a write or fsync failed: the state stays dirty, retried whole
    └── EscalationError          a supervised actor crashed past its restart intensity: the
                                 daemon exits non-zero so that systemd restarts it
"""

from __future__ import annotations

from geminid.protocol.errors import GeminidError


class ConfigError(GeminidError):
    """Bad configuration: refused at start with the key's name and the reason."""


class CheckpointError(GeminidError):
    """Base for checkpoint store failures."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint file failed its checksum or schema: it gets quarantined."""


class CheckpointWriteError(CheckpointError):
    """A write or fsync failed; the state stays dirty and is rewritten whole later."""


class EscalationError(GeminidError):
    """A supervised actor crashed more often than its restart intensity allows."""


__all__ = [
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointWriteError",
    "ConfigError",
    "EscalationError",
]
