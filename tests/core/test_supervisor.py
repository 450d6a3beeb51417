"""supervise(): one-for-one restarts under MockClock(autojump_threshold=0)."""

from __future__ import annotations

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from geminid.daemon.errors import EscalationError
from geminid.daemon.supervisor import RestartPolicy, supervise


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Boom(Exception):
    pass


def crashes(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "actor.crashed"]


async def test_restarts_after_crash_then_returns(clock: trio.testing.MockClock) -> None:
    runs = []

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        runs.append(trio.current_time())
        if len(runs) <= 2:
            raise Boom(f"crash {len(runs)}")

    with capture_logs() as logs:
        await supervise("worker", run)
    assert len(runs) == 3
    # Growing delays: 0.1 s then 0.2 s.
    assert runs[1] - runs[0] == pytest.approx(0.1)
    assert runs[2] - runs[1] == pytest.approx(0.2)
    logged = crashes(logs)
    assert [e["restarts"] for e in logged] == [0, 1]
    assert all(e["actor"] == "worker" and e["log_level"] == "error" for e in logged)
    assert isinstance(logged[0]["exc_info"], Boom)


async def test_crash_is_rendered_with_traceback_as_data() -> None:
    # With dict_tracebacks (the JSON log setup), the crash carries a structured traceback.
    events: list[dict] = []
    processors = [structlog.processors.add_log_level, structlog.processors.dict_tracebacks]

    def sink(logger, name, event_dict):  # type: ignore[no-untyped-def]
        events.append(event_dict)
        raise structlog.DropEvent

    logger = structlog.wrap_logger(None, processors=[*processors, sink])
    try:
        raise Boom("x")
    except Boom:
        logger.error("actor.crashed", actor="a", restarts=0, exc_info=True)
    exc = events[0]["exception"]
    assert exc[0]["exc_type"] == "Boom" and exc[0]["frames"]


async def test_neighbours_untouched(clock: trio.testing.MockClock) -> None:
    ticks = 0
    runs = 0

    async def neighbour() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.05)
            ticks += 1

    async def flaky(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        await trio.sleep(1.0)
        if runs < 4:
            raise Boom("flaky")

    with capture_logs():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(neighbour)
            await supervise("flaky", flaky)
            ticks_at_end = ticks
            nursery.cancel_scope.cancel()
    assert runs == 4
    # The neighbour ran the whole time (4 s of runs + 0.7 s of delays), never restarted.
    assert ticks_at_end >= 90


async def test_intensity_overflow_escalates(clock: trio.testing.MockClock) -> None:
    runs = 0

    async def always(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        raise Boom(f"crash {runs}")

    policy = RestartPolicy(max_restarts=3, window=60.0)
    with capture_logs() as logs, pytest.raises(EscalationError) as info:
        await supervise("bad", always, policy)
    assert runs == 4  # 3 restarts allowed, the 4th crash escalates
    assert isinstance(info.value.__cause__, Boom)
    assert str(info.value.__cause__) == "crash 4"
    assert len(crashes(logs)) == 4
    assert [e["event"] for e in logs].count("actor.escalated") == 1


async def test_crashes_spread_beyond_window_do_not_escalate(clock: trio.testing.MockClock) -> None:
    runs = 0

    async def slow_crash(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        if runs > 20:
            return
        await trio.sleep(30.0)
        raise Boom("once in a while")

    with capture_logs():
        await supervise("slow", slow_crash, RestartPolicy(max_restarts=2, window=60.0))
    assert runs == 21


async def test_delay_is_capped(clock: trio.testing.MockClock) -> None:
    times = []

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        times.append(trio.current_time())
        if len(times) < 8:
            raise Boom()

    with capture_logs():
        await supervise("c", run, RestartPolicy(max_restarts=10, initial_delay=1.0, max_delay=4.0))
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


async def test_cancellation_is_not_a_crash(clock: trio.testing.MockClock) -> None:
    async def forever(task_status=trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep_forever()

    with capture_logs() as logs:
        with trio.move_on_after(5.0) as scope:
            await supervise("idle", forever)
    assert scope.cancelled_caught
    assert crashes(logs) == []


async def test_cancellation_during_restart_delay(clock: trio.testing.MockClock) -> None:
    async def crash(task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise Boom()

    with capture_logs() as logs:
        with trio.move_on_after(0.05) as scope:
            await supervise("x", crash, RestartPolicy(initial_delay=1.0))
    assert scope.cancelled_caught
    assert len(crashes(logs)) == 1


@pytest.mark.parametrize(
    "exc",
    [KeyboardInterrupt(), SystemExit(3), BaseExceptionGroup("mixed", [Boom(), KeyboardInterrupt()])],
    ids=["KeyboardInterrupt", "SystemExit", "BaseExceptionGroup"],
)
async def test_base_exceptions_pass_through(exc: BaseException) -> None:
    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise exc

    with capture_logs() as logs, pytest.raises(type(exc)):
        await supervise("x", run)
    assert crashes(logs) == []


async def test_exception_group_of_ordinary_errors_is_a_crash(clock: trio.testing.MockClock) -> None:
    runs = 0

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_raise, Boom("child"))
                nursery.start_soon(_raise, ValueError("other child"))

    with capture_logs() as logs:
        await supervise("group", run)
    assert runs == 2
    assert isinstance(crashes(logs)[0]["exc_info"], ExceptionGroup)


async def _raise(exc: Exception) -> None:
    raise exc


async def test_started_reported_once_by_first_run(clock: trio.testing.MockClock) -> None:
    runs = 0
    later_started_calls = []

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        await trio.sleep(0.5)
        task_status.started(f"ready-{runs}")  # a dummy after the first run: a no-op
        later_started_calls.append(runs)
        if runs < 3:
            await trio.sleep(1.0)
            raise Boom()
        await trio.sleep_forever()

    with capture_logs():
        async with trio.open_nursery() as nursery:
            value = await nursery.start(supervise, "svc", run)
            assert value == "ready-1"
            assert trio.current_time() == pytest.approx(0.5)
            await trio.sleep(10.0)
            assert later_started_calls == [1, 2, 3]
            nursery.cancel_scope.cancel()


async def test_crash_before_started_restarts_then_reports(clock: trio.testing.MockClock) -> None:
    runs = 0

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise Boom("not ready yet")
        task_status.started("ready")
        await trio.sleep_forever()

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            value = await nursery.start(supervise, "svc", run)
            assert value == "ready" and runs == 2
            assert trio.current_time() == pytest.approx(0.1)
            nursery.cancel_scope.cancel()
    assert len(crashes(logs)) == 1


async def test_escalation_before_started_reaches_the_starter(clock: trio.testing.MockClock) -> None:
    async def never_ready(task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("cannot start")

    with capture_logs(), pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "svc", never_ready, RestartPolicy(max_restarts=2))
    [exc] = info.value.exceptions
    assert isinstance(exc, EscalationError)


async def test_return_without_started_is_trios_usual_error() -> None:
    async def quits(task_status=trio.TASK_STATUS_IGNORED) -> None:
        return

    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "svc", quits)
    [exc] = info.value.exceptions
    assert isinstance(exc, RuntimeError) and "started" in str(exc)


async def test_started_twice_in_one_run_is_an_error(clock: trio.testing.MockClock) -> None:
    async def twice(task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        task_status.started()

    # The RuntimeError is a crash of the run (a bug in it): restarted, then escalated.
    with capture_logs(), pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "svc", twice, RestartPolicy(max_restarts=1))
    [exc] = info.value.exceptions
    assert isinstance(exc, EscalationError) and isinstance(exc.__cause__, RuntimeError)
