"""The job state machine table (core/domain/states.py): shape, check() and the generated diagram."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import errors, states
from core.domain.states import Event, State, Transition

ALL_STATES = list(State)
ALL_EVENTS = list(Event)
triples = st.tuples(st.sampled_from(ALL_STATES), st.sampled_from(ALL_EVENTS), st.sampled_from(ALL_STATES))


def test_every_transition_uses_declared_states_and_events() -> None:
    assert states.TRANSITIONS, "the table is empty"
    for t in states.TRANSITIONS:
        assert isinstance(t.from_state, State), t
        assert isinstance(t.event, Event), t
        assert isinstance(t.to_state, State), t
        assert t.from_state != t.to_state, f"self-loop {t}"


def test_special_sets_are_subsets_of_states() -> None:
    for name in ("INITIAL", "TERMINAL", "LEASED_STATES", "DELAYED_STATES"):
        subset = getattr(states, name)
        assert subset, name
        assert subset <= set(State), name
    assert not states.INITIAL & states.TERMINAL
    assert not states.LEASED_STATES & states.TERMINAL
    assert not states.DELAYED_STATES & states.TERMINAL


def test_terminal_states_have_no_outgoing_transition() -> None:
    outgoing = {t for t in states.TRANSITIONS if t.from_state in states.TERMINAL}
    assert outgoing == set()


def test_every_non_terminal_state_has_an_outgoing_transition() -> None:
    sources = {t.from_state for t in states.TRANSITIONS}
    assert set(State) - states.TERMINAL <= sources


def test_submit_is_not_a_transition_between_states() -> None:
    # Creation is recorded with from_state NULL; it never appears in the table.
    assert all(t.event != Event.SUBMIT for t in states.TRANSITIONS)


def _reachable_from_initial() -> set[State]:
    seen = set(states.INITIAL)
    todo = deque(states.INITIAL)
    while todo:
        current = todo.popleft()
        for t in states.TRANSITIONS:
            if t.from_state == current and t.to_state not in seen:
                seen.add(t.to_state)
                todo.append(t.to_state)
    return seen


def test_every_state_is_reachable_from_an_initial_state() -> None:
    reachable = _reachable_from_initial()
    assert set(State) - states.TERMINAL <= reachable
    # And every terminal state is reachable too, or it would be dead weight.
    assert reachable >= states.TERMINAL


def test_every_non_terminal_state_can_reach_a_terminal_state() -> None:
    for start in set(State) - states.TERMINAL:
        seen, todo = {start}, deque([start])
        while todo:
            current = todo.popleft()
            for t in states.TRANSITIONS:
                if t.from_state == current and t.to_state not in seen:
                    seen.add(t.to_state)
                    todo.append(t.to_state)
        assert seen & states.TERMINAL, f"{start} can never finish"


@given(triples)
def test_check_accepts_exactly_the_table(triple: tuple[State, Event, State]) -> None:
    f, e, t = triple
    if Transition(f, e, t) in states.TRANSITIONS:
        states.check([f], e, t)
    else:
        with pytest.raises(errors.InvalidTransition) as info:
            states.check([f], e, t)
        message = str(info.value)
        assert f.value in message and e.value in message and t.value in message


@given(
    st.lists(st.sampled_from(ALL_STATES), min_size=1, max_size=5),
    st.sampled_from(ALL_EVENTS),
    st.sampled_from(ALL_STATES),
)
def test_check_with_several_sources_needs_every_one_allowed(froms: list[State], event: Event, to: State) -> None:
    allowed = all(Transition(f, event, to) in states.TRANSITIONS for f in froms)
    if allowed:
        states.check(froms, event, to)
    else:
        with pytest.raises(errors.InvalidTransition):
            states.check(froms, event, to)


@given(st.sampled_from(ALL_STATES), st.sampled_from(ALL_EVENTS), st.sampled_from(ALL_STATES))
def test_targets_and_sources_agree_with_the_table(f: State, e: Event, t: State) -> None:
    in_table = Transition(f, e, t) in states.TRANSITIONS
    assert (t in states.targets(f, e)) == in_table
    assert (f in states.sources(e, t)) == in_table


def test_check_is_not_vacuous_for_known_pairs() -> None:
    states.check([State.QUEUED], Event.CLAIM, State.LEASED)
    states.check([State.RUNNING], Event.LEASE_EXPIRED, State.DEAD_LETTERED)
    with pytest.raises(errors.InvalidTransition):
        states.check([State.SUCCEEDED], Event.CLAIM, State.LEASED)
    with pytest.raises(errors.InvalidTransition):
        states.check([State.QUEUED, State.SUCCEEDED], Event.CANCEL, State.CANCELED)


def test_mermaid_mentions_every_transition() -> None:
    diagram = states.mermaid()
    lines = diagram.splitlines()
    assert lines[0] == "stateDiagram-v2"
    for t in states.TRANSITIONS:
        assert f"    {t.from_state.value} --> {t.to_state.value}: {t.event.value}" in lines, t
    for s in states.INITIAL:
        assert f"    [*] --> {s.value}: submit" in lines
    for s in states.TERMINAL:
        assert f"    {s.value} --> [*]" in lines
    edges = [ln for ln in lines[1:] if "[*]" not in ln]
    assert len(edges) == len(states.TRANSITIONS), "the diagram draws a transition not in the table"


def test_mermaid_is_deterministic() -> None:
    assert states.mermaid() == states.mermaid()
    assert states.mermaid().endswith("\n")
