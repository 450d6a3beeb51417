"""LocalHandles (#12): what a session's Live client has seen outlives the daemon, in its handle
and in ``live_handles.json``, so that a restarted daemon spares it replies it saw whole."""

from __future__ import annotations

import json

import trio

from geminid.daemon.live.handles import PREFIX, LocalHandles, Seen, split_seen, with_seen


def test_a_handle_says_which_reply_was_seen_and_still_names_its_session() -> None:
    assert with_seen("gmdh-abc", 0) == "gmdh-abc"
    assert split_seen(with_seen("gmdh-abc", 12)) == ("gmdh-abc", 12)
    assert split_seen("gmdh-abc") == ("gmdh-abc", 0)
    assert split_seen("gmdh-abc.x1") == ("gmdh-abc.x1", 0)  # not ours: names nothing


async def test_answered_is_durable_coalesced_and_only_goes_up(tmp_path) -> None:
    handles = LocalHandles(tmp_path)
    handles.load()
    handle = await handles.issue("s1")
    assert handle.startswith(PREFIX)
    assert handles.session_of(with_seen(handle, 5)) == "s1"
    assert handles.session_of(with_seen(PREFIX + "forged", 5)) is None
    writes = handles.writes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handles.flusher)
        for seq in (3, 4, 2):  # 2: lower than known, ignored
            handles.note_answered("s1", seq)
        assert handles.answered("s1") == 4
        while handles.writes == writes:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert handles.writes == writes + 1  # three notes, one write
    on_disk = json.loads((tmp_path / "live_handles.json").read_text())
    assert on_disk["seen"] == {"s1": {"answered": 4}} and on_disk["handles"] == {"s1": handle}
    assert (tmp_path / "live_handles.json").stat().st_mode & 0o777 == 0o600

    again = LocalHandles(tmp_path)  # the next daemon
    again.load()
    assert again.seen_before("s1") == Seen(4)
    assert again.answered("s1") == 4
    assert again.seen_before("nobody") is None


async def test_a_session_with_a_handle_but_no_record_had_a_live_client(tmp_path) -> None:
    # The handle is durable before it is handed out; a kill before the first reply end was
    # recorded still leaves the next daemon knowing a Live client was there (answered 0).
    (tmp_path / "live_handles.json").write_text(json.dumps({"version": 1, "handles": {"s1": PREFIX + "x"}}))
    handles = LocalHandles(tmp_path)
    handles.load()
    assert handles.seen_before("s1") == Seen(0)
    assert handles.session_of(PREFIX + "x.7") == "s1"
