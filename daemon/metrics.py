"""Daemon-wide counters and gauges, reported by ``daemon.status`` (and the sd_notify STATUS line).

Plain attributes on one object: the relay path increments integers, nothing more. Gauges that
can be derived (sessions by state) are computed when asked, not maintained; client counts and
lag drops are the socket server's (``daemon.status`` → ``server``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs


@attrs.define
class Metrics:
    reconnects_by_cause: Counter[str] = attrs.field(factory=Counter)
    resumes: int = 0
    fresh_fallbacks: int = 0
    downtime: float = 0.0
    replayed: int = 0
    dropped_stale: int = 0
    not_durable: int = 0
    #: sends answered from the id table (idempotent retries), not sent again.
    duplicate_sends: int = 0
    tool_calls_lost: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    crashes: int = 0

    def reconnect(self, cause: str) -> None:
        self.reconnects_by_cause[cause] += 1

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["reconnects_by_cause"] = dict(self.reconnects_by_cause)
        out["reconnects"] = sum(self.reconnects_by_cause.values())
        out["downtime_s"] = round(out.pop("downtime"), 3)
        return out
