"""The clients' bounded event buffer (pure): nothing lost silently, nothing duplicated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from geminid.protocol.eventbuffer import EventBuffer


def msg(seq: int, session: str = "s") -> tuple[str, dict]:
    return "session.message", {"session": session, "seq": seq}


def drain(buf: EventBuffer) -> list[tuple[str, dict]]:
    out = []
    while (item := buf.pop()) is not None:
        out.append(item)
    return out


def test_duplicates_are_dropped_and_last_seq_kept():
    buf = EventBuffer(10)
    assert buf.push(*msg(1)) and buf.push(*msg(2))
    assert not buf.push(*msg(2)) and not buf.push(*msg(1))
    assert buf.last_seq == {"s": 2}
    assert [p["seq"] for _, p in drain(buf)] == [1, 2]


def test_overflow_becomes_one_lagged_per_session_after_draining_to_half():
    buf = EventBuffer(4)
    for seq in range(1, 10):
        buf.push(*msg(seq))
    buf.push(*msg(5, "t"))
    assert len(buf) == 4
    out = drain(buf)
    assert out[:4] == [msg(1), msg(2), msg(3), msg(4)]
    assert sorted(out[4:], key=lambda i: i[1]["session"]) == [
        ("session.lagged", {"session": "s", "first": 5, "last": 9, "missed": 5}),
        ("session.lagged", {"session": "t", "first": 5, "last": 5, "missed": 1}),
    ]


@given(st.integers(1, 8), st.lists(st.tuples(st.sampled_from("ab"), st.booleans()), max_size=60))
def test_every_seq_is_delivered_once_or_inside_a_lagged_range(limit, script):
    """Pushes (True) and pops (False) in any order: every event pushed is either delivered
    exactly once or covered by a session.lagged range; delivered seqs only grow."""
    buf = EventBuffer(limit)
    next_seq = {"a": 1, "b": 1}
    out: list[tuple[str, dict]] = []
    for session, push in script:
        if push:
            buf.push(*msg(next_seq[session], session))
            next_seq[session] += 1
        elif (item := buf.pop()) is not None:
            out.append(item)
    out += drain(buf)
    for session in "ab":
        covered: list[int] = []
        for method, p in out:
            if p["session"] != session:
                continue
            if method == "session.lagged":
                covered += range(p["first"], p["last"] + 1)
            else:
                covered.append(p["seq"])
        assert sorted(covered) == list(range(1, next_seq[session]))
        delivered = [p["seq"] for m, p in out if p["session"] == session and m != "session.lagged"]
        assert delivered == sorted(delivered)
