"""Fixtures for the Live endpoint's tests: the fake upstream in this process (text catalogue,
so replies can be read), and geminid as a real subprocess dialing it, with the Live endpoint on
a loopback TCP port (TLS, self-signed) and on its Unix socket."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "process"))

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue  # noqa: E402


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeUpstream:
    return await nursery.start(FakeUpstream(FakeOptions(catalogue=text_catalogue(), reply_pace=0.002)).serve)
