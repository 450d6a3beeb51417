"""What ``geminid run`` imports before its first READY stays small (issue #13: start under 300 ms).

Not a timing test: it checks, in a fresh interpreter, that the modules ``geminid run`` loads at
start (``cli``, ``app``, ``sdnotify``; nothing else is imported before READY) leave out what is
only needed later, so that an eager import added by accident fails here instead of showing up
as a slower start in ``tests/bench/bench_startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Loaded on first use: by the first dial (trio-websocket, wsproto, h11: ~50 ms), the embedded
# fake or ``geminid fake-upstream`` (~100 ms), a misspelt config key (difflib), the tests only
# (jsonschema, the SDK), the asyncio client (structlog imports asyncio anyway).
DEFERRED = (
    "trio_websocket", "wsproto", "h11", "geminid.daemon.fake", "difflib", "jsonschema", "google.genai",
    "geminid.protocol.aio_client",
    # Only with a config file; the Live schema file is read on the first validation.
    "tomllib", "importlib.resources",
)

PROBE = """
import json, sys
import geminid.daemon.cli, geminid.daemon.app, geminid.daemon.sdnotify
print(json.dumps(sorted(sys.modules)))
"""


def test_start_up_leaves_the_deferred_modules_out() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert "trio" in loaded  # the probe imported the daemon
    assert sorted(m for m in DEFERRED if m in loaded) == []



def test_start_up_does_not_load_the_live_schema() -> None:
    """The SDK-derived message tree (``schemas/live_schema.json``, ~8 ms to index) is loaded by
    the first validation, not by the import (a start with nothing to restore validates nothing)."""
    probe = (
        "import sys, geminid.daemon.cli, geminid.daemon.app, geminid.daemon.sdnotify\n"
        "print(sys.modules['geminid.protocol.live_schema']._schema.cache_info().currsize)\n"
        "from geminid.protocol import live\n"
        "live.validate_client_message(live.realtime_text('hi'))\n"
        "print(sys.modules['geminid.protocol.live_schema']._schema.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "1"]
