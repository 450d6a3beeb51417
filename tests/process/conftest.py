from __future__ import annotations

import pytest
import trio

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeUpstream:
    # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
    # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
    return await nursery.start(FakeUpstream(FakeOptions(catalogue=text_catalogue(), reply_pace=0.005)).serve)
