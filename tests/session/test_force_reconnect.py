"""SessionActor.force_reconnect: close from our side with 1000, resume with the newest handle,
keep the conversation. This is the path tests/live/test_real_gemini.py drives against the real
service; here it runs against the fake, where the conversation is observable."""

from __future__ import annotations

import trio
from session_harness import conversation_turns, make_config, open_core

from geminid.daemon.fake import FakeOptions, text_catalogue
from geminid.daemon.states import State
from geminid.daemon.upstream import BackoffPolicy


def _live_contexts(rec) -> list[str | None]:
    return [p.get("context") for p in rec.of("session.status") if p["status"] == "live"]


async def test_force_reconnect_resumes_the_same_conversation(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "my secret word is tangerine")
        await rec.wait(lambda r: r.turn_ends() == 1)
        actor = core.actor()
        await rec.wait(lambda r: actor.handle is not None and len(actor.buffer) == 0)
        handle = actor.handle

        assert actor.force_reconnect("test: forced") is True
        await rec.wait(lambda r: _live_contexts(r) == ["fresh", "restored"])

        first, second = core.fake.accepted
        assert (first.closed_by, first.close_code) == ("client", 1000)
        assert second.resumed_handle == handle
        await core.say("s", "recall the secret word")
        await rec.wait(lambda r: r.turn_ends() == 2)
        assert "tangerine" in rec.texts().split("turn 2:")[1]
        assert conversation_turns(core.fake) == [["my secret word is tangerine", "recall the secret word"]]
        assert core.metrics.reconnects_by_cause.get("rotation") == 1
        assert actor.reconnects == 1


async def test_force_reconnect_mid_reply_replays_the_unfinished_turn(state_dir):
    # TEXT on gemini-3.8-live (text_catalogue): these tests read text replies; Vertex lists text
    # output for 3.8 and the Developer API's answer is UNCONFIRMED, so the fake accepts it here.
    async with open_core(state_dir, fake_options=FakeOptions(catalogue=text_catalogue(), reply_pace=0.05, reply_chunks=6)) as core:
        rec = await core.open()
        await core.say("s", "first")
        await rec.wait(lambda r: r.turn_ends() == 1)
        await core.say("s", "second")
        await rec.wait(lambda r: "turn 2" in r.texts())
        assert core.actor().force_reconnect() is True
        await rec.wait(lambda r: r.turn_ends() >= 2 and _live_contexts(r)[-1] == "restored")
        await rec.wait(lambda r: len(core.actor().buffer) == 0)
        # The unfinished turn went again, once, on the resumed conversation.
        assert conversation_turns(core.fake) == [["first", "second"]]


class _High:
    """An rng whose draws make every jittered backoff delay close to its maximum."""

    def random(self) -> float:
        return 0.99


async def test_force_reconnect_cuts_a_backoff_short_and_is_refused_when_closed(state_dir):
    cfg = make_config(state_dir, backoff=BackoffPolicy(initial=20, cap=20, stable_after=1.0, quick_failure=0.2))
    async with open_core(state_dir, cfg=cfg) as core:
        rec = await core.open()
        actor = core.actor()
        # Live, and holding a handle (the first update follows setupComplete), so that the
        # reconnect below can resume rather than start fresh.
        await rec.wait(lambda r: "live" in r.statuses() and actor.handle is not None)
        actor.rng = _High()
        await core.fake.drop_all()  # a network ending: backoff of about 20 s
        await rec.wait(lambda r: actor.state is State.BACKOFF, timeout=5)
        assert rec.of("session.status")[-1]["retry_in"] > 10
        with trio.fail_after(5):  # far less than the backoff
            assert actor.force_reconnect("operator") is True
            await rec.wait(lambda r: actor.state is State.LIVE)
        assert _live_contexts(rec)[-1] == "restored"
        await core.registry.close("s")
        assert actor.force_reconnect() is False
