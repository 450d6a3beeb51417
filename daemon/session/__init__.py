"""geminid.daemon.session: one named Gemini Live conversation held across connections.

The package splits what used to be one god class into one idea per module:

- :mod:`.record`: the checkpoint record schema (``SessionRecord``), validated without an actor;
- :mod:`.activity`: the one definition of "a reply is due" / "quiet point" / "idle";
- :mod:`.durability`: ack waiters and seq/event reservations, the only code that calls the store;
- :mod:`.core`, :mod:`.effects`: the sans-IO ``SessionCore`` (connection-life decisions, acceptance);
- :mod:`.actor`, :mod:`.relay`: :class:`SessionActor`, the trio shell (session life; one connection).

Old import paths (``from geminid.daemon.session import SessionActor, fingerprint``) keep working.
"""

from __future__ import annotations

from geminid.daemon.session.actor import (
    SessionActor as SessionActor,
)
from geminid.daemon.session.record import (
    SessionRecord as SessionRecord,
)
from geminid.daemon.session.record import (
    fingerprint as fingerprint,
)
from geminid.daemon.session.relay import (
    HANDLE_CHECKPOINT_DELAY as HANDLE_CHECKPOINT_DELAY,
)
from geminid.daemon.session.relay import (
    UNSENT_HIGH as UNSENT_HIGH,
)
from geminid.daemon.session.relay import (
    handle_tag as handle_tag,
)

__all__ = [
    "HANDLE_CHECKPOINT_DELAY", "UNSENT_HIGH", "SessionActor", "SessionRecord", "fingerprint", "handle_tag",
]
