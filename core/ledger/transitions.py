"""The one way a job changes state: a compare-and-set UPDATE and its job_history rows in one statement.

`TransitionSpec` describes a transition statement; `build` checks it against the state
machine table and renders the SQL. core/ledger/sql.py declares every such statement by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import states
from core.domain.states import Event, State


@dataclass(frozen=True)
class TransitionSpec:
    name: str
    event: Event
    from_states: tuple[State, ...]
    #: The target state, or several with an SQL expression choosing among them per row.
    to_states: tuple[State, ...]
    to_expr: str | None = None
    #: Source rows. Either `inputs` (array parameters unnested into `i`, matched on id),
    #: or a custom SELECT yielding `id` that locks its rows (e.g. FOR UPDATE SKIP LOCKED).
    inputs: tuple[tuple[str, str], ...] = ()
    select: str | None = None
    #: Also require jobs.lease_id = i.lease_id: a zombie worker changes nothing.
    match_lease: bool = False
    #: Lock matching rows in id order first (needed when several from_states are possible,
    #: so the history row names the real one; the order avoids deadlocks between batches).
    lock: bool = False
    sets: tuple[tuple[str, str], ...] = ()
    returning: tuple[str, ...] = ()
    reason: str = "NULL"
    #: Further hops taken in the same statement after the first one (e.g. claim, then ack
    #: for a handler that starts at once). Each hop is checked and gets its history row;
    #: the intermediate states are never visible to other transactions.
    then: tuple[tuple[Event, State], ...] = ()
    #: SQL expressions (error class, fingerprint, message) recorded on the history row of a
    #: failing transition, for error clusters.
    failure: tuple[str, str, str] | None = None
    #: Further job_history columns and their values (SQL over `src` and `j`), e.g. the wait
    #: reason of a job sent back to wait.
    history: tuple[tuple[str, str], ...] = ()
    #: Extra CTEs placed first (e.g. the admission step the sources select from).
    head: str = ""
    #: Further CTEs placed after this transition's own (over `src` and `moved`), e.g. the
    #: results a success records in the same statement.
    tail: str = ""
    #: Other transitions run in the same statement (their CTEs prefixed with their name);
    #: the statement returns the rows of this one.
    companions: tuple[TransitionSpec, ...] = ()
    #: What the statement returns (over the CTEs); by default the rows this one moved.
    final: str = "SELECT * FROM moved"

    def __post_init__(self) -> None:
        if len(self.to_states) > 1 and self.to_expr is None:
            raise ValueError(f"{self.name}: several target states need to_expr")
        if self.select is not None and self.inputs:
            raise ValueError(f"{self.name}: give inputs or select, not both")
        if self.select is None and not self.inputs:
            raise ValueError(f"{self.name}: needs inputs or select")
        for to in self.to_states:
            states.check(self.from_states, self.event, to)
        if self.then and len(self.to_states) != 1:
            raise ValueError(f"{self.name}: a chained transition needs one target state")
        state = self.to_states[0]
        for event, nxt in self.then:
            states.check([state], event, nxt)
            state = nxt

    @property
    def final_state(self) -> State:
        return self.then[-1][1] if self.then else self.to_states[0]


def _quote(state: State) -> str:
    return "'" + state.value + "'"


def build(spec: TransitionSpec) -> str:
    """Render the statement. Parameters: one array per input column, plus :actor."""
    parts = [spec.head] if spec.head else []
    parts.append(_ctes(spec, ""))
    if spec.tail:
        parts.append(spec.tail)
    parts.extend(_ctes(c, c.name + "_") for c in spec.companions)
    body = ",\n".join(parts)
    return f"""/* {spec.name} */
WITH {body}
{spec.final}"""


def _ctes(spec: TransitionSpec, p: str) -> str:
    from_list = ", ".join(_quote(s) for s in spec.from_states)
    if spec.select is not None:
        src = spec.select
    else:
        names = ", ".join(n for n, _ in spec.inputs)
        arrays = ", ".join(f"CAST(:{n} AS {t}[])" for n, t in spec.inputs)
        lease = " AND j.lease_id = i.lease_id" if spec.match_lease else ""
        extra = [n for n, _ in spec.inputs if n != "id"]
        cols = "".join(f", i.{n}" for n in extra)
        lock = "\n        ORDER BY j.id\n        FOR UPDATE OF j" if spec.lock else ""
        # The state test is wrapped in IS TRUE so that it cannot select a partial index of
        # those states (all running jobs, say) to drive the join: the jobs are reached from
        # the input ids by primary key, however many others are in those states.
        src = (
            f"SELECT j.id, j.state AS from_state{cols}\n"
            f"        FROM unnest({arrays}) AS i({names})\n"
            f"        JOIN jobs AS j ON j.id = i.id\n"
            f"        WHERE (j.state IN ({from_list})) IS TRUE{lease}{lock}"
        )
    to = spec.to_expr if spec.to_expr is not None else _quote(spec.final_state)
    sets = "".join(f",\n        {col} = {expr}" for col, expr in spec.sets)
    returning = "".join(f",\n        {expr}" for expr in spec.returning)
    # Re-checked on the newest row version if a concurrent transaction changed it first
    # (READ COMMITTED re-evaluates the UPDATE's WHERE), so the lease test must live here.
    # No constant state predicate on j here: it would let the planner reach j through a
    # partial index (all queued jobs, say) instead of by primary key from src.
    recheck = " AND j.lease_id = src.lease_id" if spec.match_lease else ""
    columns = "job_id, from_state, event, to_state, at, actor, reason, attempt"
    failure_cols = failure_ret = ""
    if spec.failure is not None:
        columns += ", error_class, fingerprint, message"
        failure_cols = ", f_class, f_fingerprint, f_message"
        failure_ret = (
            f",\n        {spec.failure[0]} AS f_class, {spec.failure[1]} AS f_fingerprint,"
            f" {spec.failure[2]} AS f_message"
        )
    for col, expr in spec.history:
        columns += f", {col}"
        failure_cols += f", h_{col}"
        failure_ret += f",\n        {expr} AS h_{col}"
    if spec.then:
        hops = [(spec.from_states[0], spec.event, spec.to_states[0])]
        for event, nxt in spec.then:
            hops.append((hops[-1][2], event, nxt))
        history = "\n    UNION ALL\n    ".join(
            f"SELECT id, '{f.value}', '{e.value}', '{t.value}', now(), :actor, reason, attempt{failure_cols}"
            f" FROM {p}moved"
            for f, e, t in hops
        )
    else:
        history = (
            f"SELECT id, from_state, '{spec.event.value}', to_state, now(), :actor, reason, attempt{failure_cols}"
            f" FROM {p}moved"
        )
    return f"""{p}src AS (
        {src}
), {p}moved AS (
    UPDATE jobs AS j SET
        state = {to},
        updated_at = now(){sets}
    FROM {p}src AS src
    WHERE j.id = src.id AND j.state = src.from_state{recheck}
    RETURNING j.id, j.tenant_id, j.attempt, j.state AS to_state, src.from_state,
        {spec.reason} AS reason{returning}{failure_ret}
), {p}history AS (
    INSERT INTO job_history ({columns})
    {history}
)"""
