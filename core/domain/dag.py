"""DAG runs, the pure part (docs/design.md, "DAG runs"): trigger rules and how a job's parents
decide them, a run's state, the checks of a submitted run, the jobs a partial replay re-runs,
and the critical path.

The ledger keeps, for every job of a run, how many of its parents ended and how
(run_jobs.deps_*); `verdict` turns those counts into the job's fate. The database's
orch_trigger_verdict is the same function in SQL (a test compares them on every count).
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.domain import errors, payloads
from core.domain.states import State

#: Keys name jobs within their run: short, printable, no spaces (they appear in DOT and URLs).
MAX_KEY = 128
#: A run's jobs, by default (ORCH_RUN_MAX_JOBS), including those its handlers spawn.
DEFAULT_MAX_JOBS = 10_000
#: A handler's JSON result, encoded.
MAX_RESULT_BYTES = 64 * 1024


class TriggerRule(StrEnum):
    """When a job of a run starts, given how its parents ended (Airflow's names)."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    ALL_FAILED = "all_failed"


TRIGGER_RULES: tuple[str, ...] = tuple(r.value for r in TriggerRule)


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


RUN_STATES: tuple[str, ...] = tuple(r.value for r in RunState)

#: How a parent's end counts for its children's trigger rules. A skipped parent is neither a
#: success nor a failure.
FAILED: frozenset[State] = frozenset({State.DEAD_LETTERED, State.UPSTREAM_FAILED, State.CANCELED})
SUCCEEDED: frozenset[State] = frozenset({State.SUCCEEDED})
SKIPPED: frozenset[State] = frozenset({State.SKIPPED})


def check_result(value: object) -> str:
    """A handler's result as canonical JSON text. Raises InvalidInput when it is not JSON, over
    MAX_RESULT_BYTES encoded, or holds a NUL character (which PostgreSQL's jsonb refuses)."""
    try:
        text = payloads.canonical_json(value)
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(str(exc).replace("payload", "result", 1)) from None
    size = len(text.encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        raise errors.InvalidInput(
            f"result is {size} bytes of JSON; at most {MAX_RESULT_BYTES} (store large data as an artifact)"
        )
    if "\\u0000" in text:
        raise errors.InvalidInput("result holds a NUL character, which the ledger cannot store")
    return text


def parse_rule(value: str) -> TriggerRule:
    try:
        return TriggerRule(value)
    except ValueError:
        raise errors.InvalidInput(f"unknown trigger rule {value!r} (one of: {', '.join(TRIGGER_RULES)})") from None


def verdict(rule: TriggerRule, total: int, ok: int, failed: int, skipped: int) -> State | None:
    """What becomes of a pending job whose `total` parents have so far ended `ok` succeeded,
    `failed` failed (dead-lettered, upstream-failed, canceled) and `skipped` skipped: QUEUED
    (it runs), UPSTREAM_FAILED or SKIPPED (its rule can no longer be met), or None (wait).

    Decided as soon as the outcome is certain whatever the parents still going do, so a
    job's fate depends only on how its parents end, never on the order they end in: a
    failure decides at once (failures only accumulate), but all_success waits for every
    parent before it calls a skipped parent's child skipped (a later failure would make it
    upstream_failed)."""
    done = ok + failed + skipped
    if not 0 <= done <= total or min(ok, failed, skipped) < 0:
        raise ValueError(f"bad parent counts: total={total} ok={ok} failed={failed} skipped={skipped}")
    if total == 0:
        return State.QUEUED
    left = total - done
    if rule is TriggerRule.ALL_SUCCESS:
        if failed:
            return State.UPSTREAM_FAILED
        if left:
            return None
        return State.QUEUED if ok == total else State.SKIPPED
    if rule is TriggerRule.ALL_DONE:
        return State.QUEUED if left == 0 else None
    if rule is TriggerRule.ONE_SUCCESS:
        if ok:
            return State.QUEUED
        if left:
            return None
        return State.UPSTREAM_FAILED if failed else State.SKIPPED
    if rule is TriggerRule.ONE_FAILED:
        if failed:
            return State.QUEUED
        return State.SKIPPED if left == 0 else None
    if rule is TriggerRule.NONE_FAILED:
        if failed:
            return State.UPSTREAM_FAILED
        return State.QUEUED if left == 0 else None
    # ALL_FAILED: only real failures, every one of them.
    if ok or skipped:
        return State.SKIPPED
    return State.QUEUED if failed == total else None


def parent_counts(states: Iterable[State]) -> tuple[int, int, int]:
    """(ok, failed, skipped) among parents in these states (others have not ended)."""
    ok = failed = skipped = 0
    for s in states:
        if s in SUCCEEDED:
            ok += 1
        elif s in FAILED:
            failed += 1
        elif s in SKIPPED:
            skipped += 1
    return ok, failed, skipped


def run_state(jobs: Iterable[tuple[State, bool]], *, cancel_requested: bool) -> RunState:
    """The state of a run from its current jobs, (state, allow_failure) each: running while
    any has not ended; then canceled if an operator canceled it, failed if any job without
    allow_failure ended dead-lettered, upstream-failed or canceled, else succeeded. Every job
    counts, not only the leaves (a final all_done job does not hide a failure upstream)."""
    failed = False
    for state, allow_failure in jobs:
        if state not in SUCCEEDED | FAILED | SKIPPED:
            return RunState.RUNNING
        if state in FAILED and not allow_failure:
            failed = True
    if cancel_requested:
        return RunState.CANCELED
    return RunState.FAILED if failed else RunState.SUCCEEDED


def check_key(key: object) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or not key.isprintable() or " " in key:
        raise errors.InvalidInput(f"job key {key!r} must be 1 to {MAX_KEY} printable characters without spaces")
    return key


def check_graph(parents: Mapping[str, Sequence[str]], *, known: Iterable[str] = ()) -> list[str]:
    """Check the jobs of a run, {key: parent keys}; `known` are keys that exist already (a
    spawn's parents may be among them). Returns the keys in a topological order. Raises
    InvalidInput for a parent that does not exist, a job listed as its own parent twice, or a
    cycle (naming the keys on it)."""
    existing = set(known)
    for key, after in parents.items():
        check_key(key)
        if len(set(after)) != len(after):
            dup = next(p for p in after if list(after).count(p) > 1)
            raise errors.InvalidInput(f"job {key!r} lists parent {dup!r} twice")
        for p in after:
            if p not in parents and p not in existing:
                raise errors.InvalidInput(f"job {key!r} is after {p!r}, which is not a job of the run")
    sorter = graphlib.TopologicalSorter({k: [p for p in after if p in parents] for k, after in parents.items()})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        raise errors.DagCycle("the run has a cycle (parent -> child): " + " -> ".join(cycle)) from None


def downstream(children: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """The roots and every key reachable from them."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(children.get(key, ()))
    return seen


@dataclass(frozen=True, slots=True)
class CriticalPath:
    keys: list[str]
    seconds: float
    #: Per key: how much later it could have ended without delaying the run's end.
    slack: dict[str, float]


def critical_path(durations: Mapping[str, float], parents: Mapping[str, Sequence[str]]) -> CriticalPath:
    """The longest chain of jobs by duration (seconds each; a job not yet run counts 0) and each
    job's slack. `parents` must be acyclic (check_graph); parents not in `durations` are
    ignored. Linear in jobs and edges (a 10,000-job run takes milliseconds)."""
    children: dict[str, list[str]] = {k: [] for k in durations}
    waiting: dict[str, int] = dict.fromkeys(durations, 0)
    for key in durations:
        for p in parents.get(key, ()):
            if p in children:
                children[p].append(key)
                waiting[key] += 1
    order = [k for k, n in waiting.items() if n == 0]
    for key in order:  # Kahn's algorithm: `order` grows while it is walked
        for c in children[key]:
            waiting[c] -= 1
            if waiting[c] == 0:
                order.append(c)
    if len(order) != len(durations):
        raise errors.DagCycle("the run's graph has a cycle")
    finish: dict[str, float] = {}
    best: dict[str, str | None] = {}
    for key in order:
        start, via = 0.0, None
        for p in parents.get(key, ()):
            f = finish.get(p)
            if f is not None and (via is None or f > start or (f == start and p > via)):
                start, via = f, p
        best[key] = via
        finish[key] = start + max(0.0, durations[key])
    if not finish:
        return CriticalPath([], 0.0, {})
    end = max(finish.values())
    cur: str | None = max(finish, key=lambda k: (finish[k], k))
    path: list[str] = []
    while cur is not None:
        path.append(cur)
        cur = best[cur]
    path.reverse()
    # Latest finish that keeps the run's end: backwards over the children.
    latest: dict[str, float] = {}
    for key in reversed(order):
        kids = children[key]
        latest[key] = min((latest[c] - max(0.0, durations[c]) for c in kids), default=end)
    slack = {k: max(0.0, latest[k] - finish[k]) for k in order}
    return CriticalPath(path, end, slack)


#: What a job in each state is doing, for the Gantt timeline (terminal states draw nothing).
SEGMENT_KINDS: dict[State, str] = {
    State.PENDING: "waiting for parents",
    State.QUEUED: "waiting for a worker",
    State.THROTTLED: "throttled",
    State.LEASED: "starting",
    State.RUNNING: "running",
    State.RETRYING: "retry back-off",
}


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str
    start: float
    end: float
    #: Why a throttled job waited (a WaitReason), else None.
    reason: str | None = None
    attempt: int = 0


def segments(history: Sequence[tuple[float, str, str | None, int]], now: float) -> list[Segment]:
    """A job's timeline from its history rows (at as epoch seconds, to_state, wait_reason,
    attempt), in order: one segment per state it was in, the last one open until `now`
    unless the job has ended."""
    out: list[Segment] = []
    for i, (at, to_state, reason, attempt) in enumerate(history):
        state = State(to_state)
        kind = SEGMENT_KINDS.get(state)
        if kind is None:
            continue
        end = history[i + 1][0] if i + 1 < len(history) else now
        out.append(Segment(kind, at, max(at, end), reason if state is State.THROTTLED else None, attempt))
    return out
