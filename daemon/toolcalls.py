"""Old import path of :mod:`geminid.daemon.session.toolcalls` (tool-call bookkeeping moved there)."""

from geminid.daemon.session.toolcalls import (
    REMEMBERED as REMEMBERED,
)
from geminid.daemon.session.toolcalls import (
    ToolCalls as ToolCalls,
)

__all__ = ["REMEMBERED", "ToolCalls"]
