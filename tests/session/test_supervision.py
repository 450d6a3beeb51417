"""A crashing session actor is restarted from its checkpoint snapshot, alone; past the
intensity limit the crash escalates out of the registry (and the daemon exits non-zero)."""

from __future__ import annotations

import pytest
import trio
from session_harness import open_core

from geminid.daemon.errors import EscalationError
from geminid.daemon.session import SessionActor
from geminid.daemon.supervisor import RestartPolicy


class Boom(Exception):
    pass


def crash_on(monkeypatch, session: str, times: int | None) -> list[int]:
    """Make ``session``'s actor raise while handling server content (a bug in our code)."""
    count = [0]
    original = SessionActor._on_server_content

    def patched(self, msg, conn):
        if self.name == session and (times is None or count[0] < times) and msg.turn_boundary:
            count[0] += 1
            raise Boom(f"injected crash {count[0]}")
        return original(self, msg, conn)

    monkeypatch.setattr(SessionActor, "_on_server_content", patched)
    return count


async def test_crashed_actor_restarts_alone_and_keeps_the_conversation(state_dir, monkeypatch):
    async with open_core(state_dir) as core:
        a = await core.open("a")
        b = await core.open("b")
        await core.say("a", "a-one")
        await core.say("b", "b-one")
        await a.wait(lambda r: r.turn_ends() == 1)
        await b.wait(lambda r: r.turn_ends() == 1)
        b_conns = len([c for c in core.fake.accepted if c.setup and c.conversation_id])
        count = crash_on(monkeypatch, "a", times=1)
        await core.say("a", "a-two")
        await a.wait(lambda r: count[0] == 1 and r.statuses().count("live") >= 2)
        await core.say("a", "a-three")
        await a.wait(lambda r: "turn 3" in r.texts(), timeout=15)
        assert core.metrics.crashes == 1
        convs = {c.user_turns[0]: list(c.user_turns) for c in core.fake.conversations.values() if c.user_turns}
        # The restarted actor resumed the same conversation: a-two is in it once.
        assert convs["a-one"] == ["a-one", "a-two", "a-three"]
        # The neighbour never noticed: one connection, still live, no status churn.
        await core.say("b", "b-two")
        await b.wait(lambda r: r.turn_ends() == 2)
        assert b.statuses().count("live") == 1
        assert convs["b-one"][0] == "b-one"
        assert b_conns >= 2


async def test_crash_loop_escalates(state_dir, monkeypatch):
    crash_on(monkeypatch, "a", times=None)
    with pytest.raises(BaseException) as info:
        async with open_core(state_dir) as core:
            core.registry.restart_policy = RestartPolicy(max_restarts=2, window=60, initial_delay=0.01)
            await core.open("a")
            for i in range(10):
                await core.say("a", f"x{i}")
                await trio.sleep(0.2)
    group = info.value
    assert isinstance(group, BaseExceptionGroup)
    assert group.subgroup(EscalationError) is not None
