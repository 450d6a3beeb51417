from __future__ import annotations

import pytest
import trio

from geminid.daemon.fake import FakeOptions, FakeUpstream


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeUpstream:
    return await nursery.start(FakeUpstream(FakeOptions(reply_pace=0.005)).serve)
