"""geminid.daemon: everything that runs (actors, stores, servers, the fake upstream).

The daemon is an application, not a library: its importable surfaces are its subpackages and a
few modules, each with its own ``__all__`` (``tests/protocol/test_exports.py`` lists them):

- ``geminid.daemon.config``: ``Config`` and its sections (what can be configured);
- ``geminid.daemon.upstream``: one connection to Gemini (link, endpoint, credentials, endings,
  classification, backoff);
- ``geminid.daemon.fake``: the fake Gemini Live upstream, for tests (it imports only
  ``geminid.protocol``);
- ``geminid.daemon.errors``: the daemon-only errors.

This ``__init__`` re-exports only the version and the errors, on purpose: every import of a
submodule (the fake's in a test, ``geminid.daemon.config`` in a tool) runs it first, so it must
stay cheap and must not pull the session core in.
"""

from .errors import CheckpointCorrupt as CheckpointCorrupt
from .errors import CheckpointError as CheckpointError
from .errors import CheckpointWriteError as CheckpointWriteError
from .errors import ConfigError as ConfigError
from .errors import EscalationError as EscalationError

__version__ = "0.1.0"

__all__ = [
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointWriteError",
    "ConfigError",
    "EscalationError",
    "__version__",
]
