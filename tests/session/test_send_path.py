"""The send path (issue #13 point 1, issue #11 points 6 and 7): a turn goes upstream at once and
is acknowledged once durable; a client id makes a send idempotent, durably; after a restart the
gap a client is told about is the real one, and downtime counts from the drop."""

from __future__ import annotations

import threading

import trio
from session_harness import Recorder, conversation_turns, open_core, read_checkpoint

from geminid.daemon import checkpoint
from geminid.daemon.events import EventHub, Gap
from geminid.protocol import live


async def test_a_turn_goes_upstream_while_its_checkpoint_is_written_and_is_acked_after(state_dir):
    """The fake has the turn while the checkpoint write is held: the upstream did not wait for
    the disk; the ack did (it arrives only once the write is released)."""
    held = threading.Event()
    release = threading.Event()

    def slow_batch(directory, items):
        if held.is_set():
            release.wait(10)
        return checkpoint.write_batch(directory, items)

    async with open_core(state_dir, write_batch=slow_batch) as core:
        rec = await core.open()
        await rec.wait(lambda r: "live" in r.statuses())
        await trio.sleep(0.2)  # the open's own writes are done
        held.set()
        acks: list = []

        async def send() -> None:
            acks.append(await core.registry.send("s", live.client_content("fast"), "id-1"))

        core.nursery.start_soon(send)
        await rec.wait(lambda r: conversation_turns(core.fake) == [["fast"]])
        assert acks == []  # sent, not yet acknowledged: the checkpoint is not on disk
        release.set()
        with trio.fail_after(10):
            while not acks:
                await trio.sleep(0.01)
        assert acks[0].durable and not acks[0].duplicate
        assert read_checkpoint(state_dir, "s")["ids"] == [["id-1", int(acks[0])]]


async def test_a_repeated_id_is_answered_with_the_original_seq_and_not_sent_again(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        first = await core.registry.send("s", live.client_content("once"), "abc")
        again = await core.registry.send("s", live.client_content("once"), "abc")
        other = await core.registry.send("s", live.client_content("twice"), "def")
        await rec.wait(lambda r: r.turn_ends() == 2)
        await trio.sleep(0.1)
        assert int(again) == int(first) and again.duplicate and not first.duplicate
        assert int(other) == int(first) + 1
        assert conversation_turns(core.fake) == [["once", "twice"]]
        assert core.metrics.duplicate_sends == 1


async def test_a_repeat_while_the_original_is_in_flight_waits_for_its_ack(state_dir):
    async with open_core(state_dir) as core:
        await core.open()
        first = core.registry.send_now("s", live.client_content("x"), "same")
        again = core.registry.send_now("s", live.client_content("x"), "same")
        a, b = await first, await again  # type: ignore[misc]
        assert int(a) == int(b) and b.duplicate


async def test_ids_survive_a_restart_of_the_daemon(state_dir):
    """Kill the daemon (the core is cancelled, as by kill -9) after an ack; the restarted one
    finds the id in the checkpoint and answers a repeat without sending it."""
    async with open_core(state_dir) as core:
        rec = await core.open()
        seq = await core.registry.send("s", live.client_content("before the crash"), "turn-1")
        await rec.wait(lambda r: r.turn_ends() == 1)
    async with open_core(state_dir) as core:
        with trio.fail_after(10):
            while "s" not in core.registry:
                await trio.sleep(0.01)
        again = await core.registry.send("s", live.client_content("before the crash"), "turn-1")
        assert int(again) == int(seq) and again.duplicate
        await trio.sleep(0.5)
        # The restored checkpoint still held the turn (no handle covered it yet): replayed once,
        # by the restore; the repeat added nothing.
        assert sum(t.count("before the crash") for t in conversation_turns(core.fake)) == 1
        assert [e.seq for e in core.actor().buffer].count(int(seq)) <= 1


def test_a_gap_after_a_clean_restart_leaves_out_the_seqs_never_used():
    hub = EventHub("s", ring_size=16)
    hub.restored(60, 4096, clean=True)
    hub.next_seq = 4097

    class Sink:
        def deliver(self, event):
            pass

    assert hub.subscribe(Sink(), 60) == (None, [])  # the client had everything
    assert hub.subscribe(Sink(), 54)[0] == Gap(55, 60, 6)  # a handful, not 4,042
    for _ in range(20):  # the new daemon's events push some out of the ring too
        hub.publish("session.message", {})
    gap = hub.subscribe(Sink(), 54)[0]
    assert gap == Gap(55, 4100, 6 + 4)  # 55..60, and 4097..4100 (the ring holds 4101..4116)


def test_after_a_kill_the_unknowable_range_has_no_count():
    hub = EventHub("s", ring_size=16)
    hub.restored(60, 4096, clean=False)
    hub.next_seq = 4097

    class Sink:
        def deliver(self, event):
            pass

    assert hub.subscribe(Sink(), 54)[0] == Gap(55, 4096, None)
    assert hub.subscribe(Sink(), 4096) == (None, [])


async def test_a_clean_restart_reports_no_gap_to_a_client_that_had_everything(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "hello")
        await rec.wait(lambda r: r.turn_ends() == 1)
        await core.registry.shutdown(5)
        last = core.registry.hub("s").last_seq if "s" in core.registry else max(e["seq"] for e in rec.events)
    record = read_checkpoint(state_dir, "s")
    assert record["clean"] is True and record["event_last"] == last
    async with open_core(state_dir) as core:
        with trio.fail_after(10):
            while "s" not in core.registry:
                await trio.sleep(0.01)
        sub = core.registry.attach("s", type("Sink", (), {"deliver": lambda self, e: None})(), last)
        assert sub.gap is None, sub.gap
        sub = core.registry.attach("s", type("Sink", (), {"deliver": lambda self, e: None})(), last - 1)
        assert sub.gap is not None and (sub.gap.first, sub.gap.last, sub.gap.missed) == (last, last, 1)


async def test_downtime_after_a_restart_counts_from_the_drop_not_from_the_dial(state_dir):
    from geminid.daemon.checkpoint import CheckpointStore

    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "hello")
        await rec.wait(lambda r: r.turn_ends() == 1)
    records = CheckpointStore(state_dir).load_all().records
    records["s"]["last_alive_at"] -= 600  # the connection was last alive ten minutes ago
    async with open_core(state_dir, records=records) as core:
        rec = Recorder()
        with trio.fail_after(10):
            while "s" not in core.registry:
                await trio.sleep(0.01)
        core.registry.attach("s", rec, None)
        await rec.wait(lambda r: "live" in r.statuses())
        live_status = next(p for p in rec.of("session.status") if p["status"] == "live")
        assert live_status["downtime_ms"] >= 600_000


async def test_a_reply_that_starts_again_after_a_replay_is_marked(state_dir):
    async with open_core(state_dir) as core:
        rec = await core.open()
        await core.say("s", "one")
        await rec.wait(lambda r: r.turn_ends() == 1)
        actor = core.actor()
        await core.fake.stall_all()  # the next reply never ends, so no handle covers the turn
        await core.say("s", "two")
        await rec.wait(lambda r: actor.buffer.cursor >= 1)
        await trio.sleep(0.1)
        before = len(rec.events)
        await core.fake.drop_all()
        await rec.wait(lambda r: r.turn_ends() == 2)
        messages = [e.params for e in rec.events if e.method == "session.message"]
        first_reply = [p for p in messages if p["seq"] < rec.events[before].seq]
        assert not any(p.get("replayed") for p in first_reply)
        again = [e.params for e in rec.events[before:] if e.method == "session.message"]
        content = [p for p in again if "serverContent" in p["message"]]
        assert content and all(p.get("replayed") is True for p in content), [(p.get("replayed"), list(p["message"]["serverContent"])) for p in content]
