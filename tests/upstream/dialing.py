"""One real dial for the upstream tests: how it ended, or None when it reached setupComplete.

The auth, ephemeral and Vertex tests all ask the same question of a live loopback fake ("does
this credential get through the upgrade, and if not, what Ending does the daemon see?"), so the
dial, the link close and the unwrapping of a connect-stage ExceptionGroup live here once.
"""

from __future__ import annotations

import trio

from geminid.daemon.upstream import Dial, Ended, Endpoint, open_link
from geminid.daemon.upstream.endings import Ending
from geminid.daemon.upstream.translate import ending_from_group
from geminid.protocol import live


async def dial_once(
    endpoint: Endpoint, credentials, *, model: str = "models/gemini-3.8-live", timeout: float = 10,
    setup: bytes | None = None,
) -> Ending | None:
    dial = Dial(endpoint, credentials, timeout, timeout, 1 << 20)
    first = setup if setup is not None else live.encode(live.setup(model))
    try:
        async with trio.open_nursery() as nursery:
            link, _ = await open_link(nursery, dial, first)
            await link.close()
            nursery.cancel_scope.cancel()
    except Ended as exc:
        return exc.ending
    except BaseExceptionGroup as group:
        found = ending_from_group(group, stage="connect")
        assert found is not None, group
        return found
    return None
