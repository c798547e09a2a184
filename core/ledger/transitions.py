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
    #: Lock matching rows, skipping those another transaction holds: the statement does not
    #: wait, and the caller writes the skipped ones another way (with `inputs` only).
    skip_locked: bool = False
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
        if self.skip_locked and (self.lock or self.select is not None):
            raise ValueError(f"{self.name}: skip_locked is for inputs without lock")
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
    own, history = _ctes(spec, "")
    parts.append(own)
    if spec.tail:
        parts.append(spec.tail)
    for c in spec.companions:
        ctes, rows = _ctes(c, c.name + "_")
        parts.append(ctes)
        history.extend(rows)
    parts.append(_history(history))
    body = ",\n".join(parts)
    return f"""/* {spec.name} */
WITH {body}
{spec.final}"""


#: Every history row's first columns; `at` is left to its default, now().
_HISTORY_COLUMNS = (
    "job_id",
    "from_state",
    "event",
    "to_state",
    "actor",
    "reason",
    "attempt",
    "tenant_id",
    "job_type",
    "run_id",
)


#: One transition's history rows: its further columns (column to value), the SELECT list up
#: to run_id and the FROM clause.
_Rows = tuple[dict[str, str], str, str]


def _history(rows: list[_Rows]) -> str:
    """One INSERT for the history rows of every transition in the statement: the further
    columns one of them lacks are NULL in its rows. One insert, not one per transition:
    PostgreSQL builds job_history's CHECK expressions once per inserting node that writes a
    row (about 50 µs, docs/adr/0023), and the hottest statement (succeed_and_claim_jobs)
    stays within the driver's query cache (CLIENT_CACHED_LENGTH)."""
    extra: list[str] = []
    for cols, _, _ in rows:
        extra.extend(c for c in cols if c not in extra)
    selects = "\n    UNION ALL\n    ".join(
        select + "".join(f", {cols.get(c, 'NULL')}" for c in extra) + from_ for cols, select, from_ in rows
    )
    return f"""history AS (
    INSERT INTO job_history ({", ".join(_HISTORY_COLUMNS + tuple(extra))})
    {selects}
)"""


def _ctes(spec: TransitionSpec, p: str) -> tuple[str, list[_Rows]]:
    """The transition's CTEs (src, moved), and its history rows for _history."""
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
        if spec.skip_locked:
            lock = "\n        FOR NO KEY UPDATE OF j SKIP LOCKED"
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
    # History columns only some transitions write (a failure's, a wait reason), to their values.
    further: dict[str, str] = {}
    extra_ret = ""
    if spec.failure is not None:
        further.update(error_class="f_class", fingerprint="f_fingerprint", message="f_message")
        extra_ret = (
            f",\n        {spec.failure[0]} AS f_class, {spec.failure[1]} AS f_fingerprint,"
            f" {spec.failure[2]} AS f_message"
        )
    for col, expr in spec.history:
        further[col] = f"h_{col}"
        extra_ret += f",\n        {expr} AS h_{col}"
    from_ = f" FROM {p}moved"
    # The job's tenant, type and run ride along in each history row, so that the events
    # trigger needs no lookup of the job (migration 0019, docs/adr/0023).
    common = ":actor, reason, attempt, tenant_id, job_type, run_id"
    if spec.then:
        hops = [(spec.from_states[0], spec.event, spec.to_states[0])]
        for event, nxt in spec.then:
            hops.append((hops[-1][2], event, nxt))
        history = [
            (
                further,
                f"SELECT id, '{f.value}', '{e.value}', '{t.value}', {common}",
                from_,
            )
            for f, e, t in hops
        ]
    else:
        history = [
            (
                further,
                f"SELECT id, from_state, '{spec.event.value}', to_state, {common}",
                from_,
            )
        ]
    return (
        f"""{p}src AS (
        {src}
), {p}moved AS (
    UPDATE jobs AS j SET
        state = {to},
        updated_at = now(){sets}
    FROM {p}src AS src
    WHERE j.id = src.id AND j.state = src.from_state{recheck}
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        {spec.reason} AS reason{returning}{extra_ret}
)""",
        history,
    )
