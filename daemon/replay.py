"""Old import path of :mod:`geminid.daemon.session.replay` (the replay buffer moved there)."""

from geminid.daemon.session.replay import (
    Entry as Entry,
)
from geminid.daemon.session.replay import (
    Kind as Kind,
)
from geminid.daemon.session.replay import (
    ReplayBuffer as ReplayBuffer,
)
from geminid.daemon.session.replay import (
    ReplayStats as ReplayStats,
)
from geminid.daemon.session.replay import (
    classify_message as classify_message,
)

__all__ = ["Entry", "Kind", "ReplayBuffer", "ReplayStats", "classify_message"]
