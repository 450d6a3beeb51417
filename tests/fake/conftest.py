from __future__ import annotations

import pytest

from geminid.daemon.fake import FakeOptions, FakeUpstream, text_catalogue


@pytest.fixture
async def start_fake(nursery):
    """``await start_fake(**FakeOptions kwargs)`` -> a FakeUpstream serving on loopback."""

    async def start(**kwargs) -> FakeUpstream:
        kwargs.setdefault("reply_pace", 0.001)
        kwargs.setdefault("catalogue", text_catalogue())  # see helpers.MODEL
        return await nursery.start(FakeUpstream(FakeOptions(**kwargs)).serve)

    return start
