"""Errors from a connection's nursery: which are transport endings, which propagate.

The websocket's reader task raises ConnectionRejected into the per-connection nursery. When that
races the daemon's own cancellation (shutdown, or the core cancelled as by kill -9 in the tests),
the nursery raises a group of both; the rejection is then moot, and must not turn the clean
cancellation into a crash of the session (the CI failure of
test_turns_restored_after_a_restart_get_a_reply_each).
"""

from __future__ import annotations

import trio
from trio_websocket import ConnectionRejected

from geminid.daemon.upstream import EndingKind, beside_transport_errors, ending_from_group


def _rejected() -> ConnectionRejected:
    return ConnectionRejected(503, ((b"content-length", b"2"),), b"{}")


async def _a_real_cancelled() -> trio.Cancelled:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


async def test_a_rejection_beside_a_cancellation_leaves_the_cancellation_alone():
    group = BaseExceptionGroup("conn", [await _a_real_cancelled(), _rejected()])
    assert ending_from_group(group, stage="connect") is None  # not a transport ending as a whole
    rest = beside_transport_errors(group, stage="connect")
    assert isinstance(rest, BaseExceptionGroup)
    assert [type(e) for e in rest.exceptions] == [trio.Cancelled]


async def test_nested_groups_lose_only_their_transport_errors():
    bug = RuntimeError("a genuine bug")
    group = BaseExceptionGroup("conn", [BaseExceptionGroup("inner", [_rejected(), bug]), _rejected()])
    rest = beside_transport_errors(group, stage="relay")
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(rest)
    assert leaves == [bug]  # the bug propagates; no rejection rides along


def test_a_group_of_transport_errors_only_is_an_ending():
    ending = ending_from_group(BaseExceptionGroup("conn", [_rejected()]), stage="connect")
    assert ending is not None and ending.kind is not EndingKind.LOCAL
