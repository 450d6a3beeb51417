"""One-for-one supervision: restart a crashed actor, alone, within an intensity limit.

A trio nursery cancels every child when one raises. To restart one actor without touching its
neighbours, the crash must be caught inside that actor's own task: ``supervise`` is that task
(TRIO_NOTES.md "One-for-one restarts"). It catches ``Exception`` only - which includes
exception groups of ordinary errors - and never ``trio.Cancelled``, ``KeyboardInterrupt``,
``SystemExit`` or a ``BaseExceptionGroup`` holding any of them: those are how trio and the
user stop things, not crashes.

Start it with ``await nursery.start(supervise, name, run)``. ``run`` is called as
``await run(task_status=ts)``; the first ``ts.started(value)`` of any run is forwarded to the
supervisor's own ``task_status``, so the caller's ``nursery.start`` returns when the actor is
really ready (READY=1 follows real readiness). Runs after that get a dummy ``ts``.

Decision: if a run crashes *before* calling ``started()``, the supervisor does not propagate
the error to the starter; it counts it as a crash and restarts, and reports started only when
a later run calls ``started()``. A transient error at boot (a busy disk, a slow socket) then
does not take the daemon down, while a persistent one still escalates after
``max_restarts`` crashes within ``window`` seconds - to the caller's ``nursery.start``, since
nothing was reported yet. If a run *returns* without calling ``started()``, the supervisor
returns too, and the caller's ``nursery.start`` raises trio's usual RuntimeError.

Restart delays grow: ``initial_delay * 2**(crashes in window - 1)``, capped at ``max_delay``.
No jitter: these are local restarts, not a thundering herd against a shared server.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

from geminid.daemon.errors import EscalationError

log = structlog.get_logger("geminid.supervisor")


@attrs.frozen
class RestartPolicy:
    """More than ``max_restarts`` crashes within ``window`` seconds escalate."""

    max_restarts: int = 5
    window: float = 60.0
    initial_delay: float = 0.1
    max_delay: float = 5.0


class _StartRelay:
    """The ``task_status`` handed to a run: forwards the first ``started()`` upward, once."""

    def __init__(self, outer: trio.TaskStatus[Any] | None) -> None:
        self._outer = outer
        self.called = False

    def started(self, value: Any = None) -> None:
        if self.called:
            raise RuntimeError("called 'started' twice on the same task status")
        self.called = True
        if self._outer is not None:
            outer, self._outer = self._outer, None
            outer.started(value)


async def supervise(
    name: str,
    run: Callable[..., Awaitable[None]],
    policy: RestartPolicy = RestartPolicy(),
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run`` and restart it after each crash; return when it returns.

    Raises :class:`EscalationError` (chained to the last crash) when it crashes more than
    ``policy.max_restarts`` times within ``policy.window`` seconds.
    """
    crashes: collections.deque[float] = collections.deque()
    restarts = 0
    reported = False
    while True:
        relay = _StartRelay(None if reported else task_status)
        try:
            # Awaited in this very task, so that started() moves this task (and the run
            # inside it) into the caller's nursery exactly as nursery.start would.
            await run(task_status=relay)
        except Exception as exc:
            reported = reported or relay.called
            now = trio.current_time()
            crashes.append(now)
            while crashes and crashes[0] <= now - policy.window:
                crashes.popleft()
            log.error(
                "actor.crashed",
                actor=name,
                restarts=restarts,
                crashes_in_window=len(crashes),
                exc_info=exc,
            )
            if len(crashes) > policy.max_restarts:
                log.error(
                    "actor.escalated",
                    actor=name,
                    restarts=restarts,
                    max_restarts=policy.max_restarts,
                    window=policy.window,
                )
                raise EscalationError(
                    f"actor {name!r} crashed {len(crashes)} times within {policy.window:g} s",
                    data={"actor": name, "restarts": restarts},
                ) from exc
            delay = min(policy.max_delay, policy.initial_delay * 2.0 ** (len(crashes) - 1))
        else:
            return
        await trio.sleep(delay)
        restarts += 1
        log.info("actor.restarting", actor=name, restarts=restarts)
