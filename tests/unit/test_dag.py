"""The pure part of DAG runs: trigger rules against a reference model (hypothesis), a job's
fate independent of the order its parents end in, propagation through random DAGs, run state,
graph checks, the critical path and timeline segments."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import dag, errors
from core.domain.dag import TriggerRule
from core.domain.states import State

OK, FAILED, SKIPPED = State.SUCCEEDED, State.DEAD_LETTERED, State.SKIPPED
OUTCOMES = [State.SUCCEEDED, State.DEAD_LETTERED, State.CANCELED, State.UPSTREAM_FAILED, State.SKIPPED]


def reference(rule: TriggerRule, parents: list[State]) -> State:
    """The simple model: a job's fate from how all its parents ended."""
    ok = sum(p == OK for p in parents)
    failed = sum(p in dag.FAILED for p in parents)
    n = len(parents)
    if n == 0:
        return State.QUEUED
    runs = {
        TriggerRule.ALL_SUCCESS: ok == n,
        TriggerRule.ALL_DONE: True,
        TriggerRule.ONE_SUCCESS: ok > 0,
        TriggerRule.ONE_FAILED: failed > 0,
        TriggerRule.NONE_FAILED: failed == 0,
        TriggerRule.ALL_FAILED: failed == n,
    }[rule]
    if runs:
        return State.QUEUED
    if rule in (TriggerRule.ALL_SUCCESS, TriggerRule.ONE_SUCCESS, TriggerRule.NONE_FAILED) and failed:
        return State.UPSTREAM_FAILED
    return State.SKIPPED


def first_decision(rule: TriggerRule, total: int, ended: list[State]) -> tuple[State | None, int]:
    """The verdict as parents end one by one: the first decision and after how many."""
    for i in range(len(ended) + 1):
        ok, failed, skipped = dag.parent_counts(ended[:i])
        v = dag.verdict(rule, total, ok, failed, skipped)
        if v is not None:
            return v, i
    return None, len(ended)


rules = st.sampled_from(list(TriggerRule))
outcomes = st.lists(st.sampled_from(OUTCOMES), max_size=7)


@given(rules, outcomes)
def test_verdict_once_every_parent_ended_is_the_reference(rule: TriggerRule, parents: list[State]) -> None:
    ok, failed, skipped = dag.parent_counts(parents)
    assert dag.verdict(rule, len(parents), ok, failed, skipped) == reference(rule, parents)


@given(rules, outcomes, st.randoms(use_true_random=False))
def test_early_decisions_agree_with_the_end_whatever_the_order(rule: TriggerRule, parents: list[State], rnd) -> None:
    order = list(parents)
    rnd.shuffle(order)
    decided, at = first_decision(rule, len(order), order)
    assert decided == reference(rule, parents)
    # Once decided, later parents never change the verdict.
    for i in range(at, len(order) + 1):
        ok, failed, skipped = dag.parent_counts(order[:i])
        assert dag.verdict(rule, len(order), ok, failed, skipped) == decided


def test_decisions_come_as_early_as_they_are_certain() -> None:
    assert dag.verdict(TriggerRule.ALL_SUCCESS, 3, 0, 1, 0) is State.UPSTREAM_FAILED
    assert dag.verdict(TriggerRule.ONE_SUCCESS, 3, 1, 0, 0) is State.QUEUED
    assert dag.verdict(TriggerRule.ONE_FAILED, 3, 0, 1, 0) is State.QUEUED
    assert dag.verdict(TriggerRule.NONE_FAILED, 3, 0, 1, 0) is State.UPSTREAM_FAILED
    assert dag.verdict(TriggerRule.ALL_FAILED, 3, 1, 0, 0) is State.SKIPPED
    # A skipped parent of all_success: the child cannot run, but a later failure would make
    # it upstream_failed, so it waits for the others.
    assert dag.verdict(TriggerRule.ALL_SUCCESS, 2, 0, 0, 1) is None
    assert dag.verdict(TriggerRule.ALL_SUCCESS, 2, 1, 0, 1) is State.SKIPPED
    assert dag.verdict(TriggerRule.ALL_DONE, 2, 0, 1, 0) is None


def test_skipped_parents_count_as_neither_success_nor_failure() -> None:
    every_skipped = [SKIPPED, SKIPPED]
    assert reference(TriggerRule.ALL_SUCCESS, every_skipped) is State.SKIPPED
    assert reference(TriggerRule.ONE_SUCCESS, every_skipped) is State.SKIPPED
    assert reference(TriggerRule.ALL_DONE, every_skipped) is State.QUEUED
    assert reference(TriggerRule.NONE_FAILED, every_skipped) is State.QUEUED
    assert reference(TriggerRule.ONE_FAILED, every_skipped) is State.SKIPPED
    assert reference(TriggerRule.ALL_FAILED, every_skipped) is State.SKIPPED


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        dag.verdict(TriggerRule.ALL_DONE, 1, 1, 1, 0)


# -- propagation through random DAGs ------------------------------------------------------


@st.composite
def random_runs(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, TriggerRule], dict[str, State]]:
    n = draw(st.integers(1, 12))
    keys = [f"j{i}" for i in range(n)]
    parents = {k: sorted(draw(st.sets(st.sampled_from(keys[:i]), max_size=3))) if i else [] for i, k in enumerate(keys)}
    rule = {k: draw(rules) for k in keys}
    # What each job's handler would do if it ran.
    ran = {k: draw(st.sampled_from([State.SUCCEEDED, State.DEAD_LETTERED])) for k in keys}
    return parents, rule, ran


def reference_run(
    parents: dict[str, list[str]], rule: dict[str, TriggerRule], ran: dict[str, State]
) -> dict[str, State]:
    final: dict[str, State] = {}
    for key in dag.check_graph(parents):
        verdict = reference(rule[key], [final[p] for p in parents[key]])
        final[key] = ran[key] if verdict is State.QUEUED else verdict
    return final


def event_driven_run(parents, rule, ran, rnd) -> dict[str, State]:
    """What the ledger does: only direct children of the jobs that just ended are evaluated,
    decided children cascade, queued jobs finish in a random order."""
    children: dict[str, list[str]] = {k: [] for k in parents}
    for k, ps in parents.items():
        for p in ps:
            children[p].append(k)
    state: dict[str, State] = {}
    counts = {k: [0, 0, 0] for k in parents}
    ready = [k for k, ps in parents.items() if not ps]
    for k in ready:
        state[k] = State.QUEUED

    def ended(key: str, outcome: State) -> None:
        state[key] = outcome
        frontier = [(key, outcome)]
        while frontier:
            k, o = frontier.pop()
            for c in children[k]:
                ok, failed, skipped = dag.parent_counts([o])
                counts[c][0] += ok
                counts[c][1] += failed
                counts[c][2] += skipped
                if c in state:
                    continue
                v = dag.verdict(rule[c], len(parents[c]), *counts[c])
                if v is State.QUEUED:
                    state[c] = State.QUEUED
                    ready.append(c)
                elif v is not None:
                    state[c] = v
                    frontier.append((c, v))

    while ready:
        rnd.shuffle(ready)
        key = ready.pop()
        ended(key, ran[key])
    return state


@settings(max_examples=300)
@given(random_runs(), st.randoms(use_true_random=False))
def test_event_driven_release_reaches_the_reference_final_states(run, rnd) -> None:
    parents, rule, ran = run
    assert event_driven_run(parents, rule, ran, rnd) == reference_run(parents, rule, ran)


# -- run state, graph checks ----------------------------------------------------------------


def test_run_state_counts_every_job_not_only_the_leaves() -> None:
    # fetch dead-lettered, cleanup (all_done) succeeded: Airflow would call this a success.
    assert dag.run_state([(FAILED, False), (OK, False)], cancel_requested=False) is dag.RunState.FAILED
    assert dag.run_state([(FAILED, True), (OK, False)], cancel_requested=False) is dag.RunState.SUCCEEDED
    assert dag.run_state([(SKIPPED, False), (OK, False)], cancel_requested=False) is dag.RunState.SUCCEEDED
    assert dag.run_state([(State.RUNNING, False), (OK, False)], cancel_requested=False) is dag.RunState.RUNNING
    assert dag.run_state([(State.CANCELED, False)], cancel_requested=True) is dag.RunState.CANCELED


def test_check_graph_names_the_cycle_and_missing_parents() -> None:
    with pytest.raises(
        errors.DagCycle, match=r"cycle \(parent -> child\): (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    ):
        dag.check_graph({"a": ["c"], "b": ["a"], "c": ["b"]})
    with pytest.raises(errors.InvalidInput, match="'x'"):
        dag.check_graph({"a": ["x"]})
    with pytest.raises(errors.InvalidInput, match="twice"):
        dag.check_graph({"a": [], "b": ["a", "a"]})
    with pytest.raises(errors.InvalidInput, match="without spaces"):
        dag.check_graph({"a b": []})
    order = dag.check_graph({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []})
    assert order.index("a") < order.index("b") < order.index("d")
    assert dag.check_graph({"s": ["done"]}, known=["done"]) == ["s"]


def test_downstream_is_the_closure() -> None:
    children = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": ["f"]}
    assert dag.downstream(children, ["b"]) == {"b", "d"}
    assert dag.downstream(children, ["a"]) == {"a", "b", "c", "d"}


def test_critical_path_and_slack() -> None:
    durations = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0}
    parents = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    path = dag.critical_path(durations, parents)
    assert path.keys == ["a", "b", "d"]
    assert path.seconds == pytest.approx(7.0)
    assert path.slack["c"] == pytest.approx(3.0)
    assert path.slack["a"] == path.slack["b"] == path.slack["d"] == 0.0
    assert dag.critical_path({}, {}).keys == []


def test_segments_follow_the_history_and_stay_open_while_running() -> None:
    history = [
        (0.0, "pending", None, 0),
        (1.0, "queued", None, 0),
        (1.5, "throttled", "rate_limited", 0),
        (3.0, "queued", None, 0),
        (3.1, "running", None, 1),
        (5.0, "retrying", None, 1),
        (6.0, "queued", None, 1),
        (6.2, "running", None, 2),
    ]
    segs = dag.segments(history, now=10.0)
    assert [s.kind for s in segs] == [
        "waiting for parents",
        "waiting for a worker",
        "throttled",
        "waiting for a worker",
        "running",
        "retry back-off",
        "waiting for a worker",
        "running",
    ]
    assert segs[2].reason == "rate_limited"
    assert segs[-1].end == 10.0 and segs[-1].attempt == 2
    done = dag.segments([*history, (7.0, "succeeded", None, 2)], now=10.0)
    assert done[-1].end == 7.0


def test_results_are_checked() -> None:
    assert dag.check_result({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    with pytest.raises(errors.InvalidInput, match="at most 65536"):
        dag.check_result({"x": "y" * 70_000})
    with pytest.raises(errors.InvalidInput, match="not JSON"):
        dag.check_result({"x": object()})


def test_parse_rule() -> None:
    assert dag.parse_rule("all_done") is TriggerRule.ALL_DONE
    with pytest.raises(errors.InvalidInput, match="one of"):
        dag.parse_rule("any")


def test_every_rule_and_count_is_covered_by_the_reference() -> None:
    for rule, total in itertools.product(TriggerRule, range(4)):
        for parents in itertools.product(OUTCOMES, repeat=total):
            ok, failed, skipped = dag.parent_counts(parents)
            assert dag.verdict(rule, total, ok, failed, skipped) == reference(rule, list(parents))
