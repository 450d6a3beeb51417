from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.states import ALLOWED, TERMINAL, IllegalTransition, State, transition


def test_terminal_states_have_no_exit():
    for t in TERMINAL:
        assert ALLOWED[t] == frozenset()
        for s in State:
            with pytest.raises(IllegalTransition):
                transition(t, s)


def test_happy_path_and_goaway_rotation():
    s = State.CONNECTING
    for nxt in (State.LIVE, State.DRAINING, State.RESUMING, State.LIVE, State.BACKOFF, State.RESUMING,
                State.LIVE, State.CLOSED):
        s = transition(s, nxt)
    assert s is State.CLOSED


def test_no_shortcuts():
    with pytest.raises(IllegalTransition):
        transition(State.BACKOFF, State.LIVE)  # must dial first
    with pytest.raises(IllegalTransition):
        transition(State.CONNECTING, State.DRAINING)  # goAway needs a live connection


@given(st.lists(st.sampled_from(list(State)), max_size=50))
def test_random_walks_respect_the_table(walk):
    s = State.CONNECTING
    for nxt in walk:
        try:
            s = transition(s, nxt)
        except IllegalTransition:
            assert nxt not in ALLOWED[s]
        else:
            assert s is nxt
    # Every state reachable from CONNECTING can reach a terminal one.
    assert ALLOWED[s] & TERMINAL or s in TERMINAL
