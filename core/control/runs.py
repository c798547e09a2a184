"""Writes on DAG runs (docs/design.md, "DAG runs"): submit a run, cancel it, replay its failed
part (the spawn a running handler does into its own run is core/control/spawn.py). Jobs of a run move on by
themselves when their parents end: the database does that in the finishing transaction
(orch_dag_advance); these calls only create, cancel and rewire."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from core.control import common
from core.control.common import Doorbell, append_audit, catalog, ring
from core.control.jobs import JobSpec, _backpressure, _check_spec, _source_ids
from core.domain import dag, errors, payloads
from core.domain.auth import Principal, Scope
from core.domain.dag import RunState
from core.domain.jobtypes import JobTypeRow
from core.domain.states import State, WaitReason
from core.ledger import jobs as ledger
from core.ledger import runs as ledger_runs
from core.ledger.reads import runs as run_reads

MAX_NAME = 200


@dataclass(frozen=True)
class RunSpec:
    tenant: str
    name: str
    jobs: Sequence[JobSpec]
    #: The same key returns the same run; a different run under it is a conflict.
    idempotency_key: str | None = None
    correlation_id: str | None = None
    #: Most jobs the run may hold, spawned ones included.
    max_jobs: int = dag.DEFAULT_MAX_JOBS


@dataclass(frozen=True)
class RunResult:
    run_id: int
    #: {key: job id}
    jobs: dict[str, int]
    #: False when an idempotency key returned an existing run.
    created: bool = True


@dataclass(frozen=True)
class ReplayPlan:
    run_id: int
    #: Keys that get new jobs (the chosen ones and everything downstream).
    to_run: list[str]
    #: Keys whose jobs are kept (their results are read by the new jobs).
    kept: list[str]
    #: {key: new job id}; empty for a dry run.
    new_jobs: dict[str, int] = field(default_factory=dict)
    attempt: int | None = None


@dataclass(frozen=True)
class CancelResult:
    run_id: int
    canceled: int
    cancel_requested: int
    state: str


# -- checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checked:
    spec: JobSpec
    key: str
    after: tuple[str, ...]
    rule: dag.TriggerRule
    payload_json: str
    digest: str
    max_attempts: int


def _check_jobs(
    tenant: str, specs: Sequence[JobSpec], types: Mapping[str, JobTypeRow], *, known: Sequence[str] = ()
) -> tuple[list[_Checked], list[str]]:
    """Check a run's (or a spawn's) jobs; returns them and their keys in topological order."""
    checked: list[_Checked] = []
    seen: set[str] = set()
    for n, spec in enumerate(specs):
        if spec.key is None:
            raise errors.InvalidInput(f"job {n + 1} of the run has no key")
        key = dag.check_key(spec.key)
        if key in seen:
            raise errors.InvalidInput(f"duplicate job key {key!r} in the run")
        seen.add(key)
        if spec.tenant != tenant:
            raise errors.InvalidInput(f"job {key!r} is of tenant {spec.tenant!r}, the run of {tenant!r}")
        if spec.idempotency_key is not None:
            raise errors.InvalidInput(f"job {key!r}: jobs of a run take no idempotency key; give the run one")
        max_attempts = _check_spec(spec, types)
        text = payloads.check_payload(spec.payload)
        checked.append(
            _Checked(
                spec,
                key,
                tuple(spec.after),
                dag.parse_rule(spec.trigger_rule),
                text,
                payloads.digest(text),
                max_attempts,
            )
        )
    order = dag.check_graph({c.key: c.after for c in checked}, known=known)
    return checked, order


def _digest(name: str, checked: Sequence[_Checked]) -> str:
    """What makes two submissions the same run (for idempotency keys)."""
    doc = {
        "name": name,
        "jobs": [
            [
                c.key,
                c.spec.job_type,
                c.digest,
                c.spec.source,
                list(c.after),
                c.rule.value,
                c.spec.allow_failure,
                c.max_attempts,
                c.spec.priority,
            ]
            for c in checked
        ],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise errors.InvalidInput(f"run name must be 1 to {MAX_NAME} printable characters")


# -- submit -----------------------------------------------------------------------------


def submit_run(
    engine: sa.Engine,
    principal: Principal,
    spec: RunSpec,
    doorbell: Doorbell,
    *,
    reason: str | None = None,
) -> RunResult:
    """Create a run and all its jobs in one transaction; jobs without parents are ready at
    once, the others wait (pending) for their parents. Raises InvalidInput (bad keys,
    parents, rules, a run over its size limit), DagCycle, UnknownJobType, NotFound (a
    source), Forbidden, IdempotencyConflict, Backpressure."""
    common.check_reason(reason)
    common.check_tenant(spec.tenant)
    principal.require(Scope.OPERATE, spec.tenant)
    _check_name(spec.name)
    if not spec.jobs:
        raise errors.InvalidInput("a run needs at least one job")
    if not 1 <= spec.max_jobs <= 1_000_000:
        raise errors.InvalidInput(f"max_jobs must be between 1 and 1000000, got {spec.max_jobs}")
    if len(spec.jobs) > spec.max_jobs:
        raise errors.InvalidInput(f"the run has {len(spec.jobs)} jobs; at most {spec.max_jobs}")
    if spec.idempotency_key is not None and not 1 <= len(spec.idempotency_key) <= 256:
        raise errors.InvalidInput("idempotency key must be 1 to 256 characters")
    with engine.begin() as conn:
        result, to_ring = submit_run_in(conn, principal, spec, reason=reason)
    ring(doorbell, to_ring)
    return result


def submit_run_in(
    conn: sa.Connection,
    principal: Principal,
    spec: RunSpec,
    *,
    reason: str | None,
    window_id: int | None = None,
    audit: bool = True,
) -> tuple[RunResult, list[tuple[int, str]]]:
    """submit_run's work in the caller's transaction, after its checks of the spec and
    scopes; returns the result and the doorbells to ring after commit. `window_id` ties the
    run to its event-time window. Raises as submit_run does."""
    types = catalog.job_types(conn, {s.job_type for s in spec.jobs})
    checked, _ = _check_jobs(spec.tenant, spec.jobs, types)
    digest = _digest(spec.name, checked)
    tenant_id = catalog.tenant_ids(conn, str(conn.engine.url), {spec.tenant})[spec.tenant]
    if spec.idempotency_key is not None:
        existing = _existing_run(conn, tenant_id, spec.idempotency_key, digest, spec.tenant)
        if existing is not None:
            return existing, []
    run_id = ledger_runs.insert_run(
        conn,
        tenant_id=tenant_id,
        name=spec.name,
        actor=principal.subject,
        idempotency_key=spec.idempotency_key,
        digest=digest,
        max_jobs=spec.max_jobs,
        jobs=len(checked),
        correlation_id=spec.correlation_id,
    )
    if run_id is None:  # the same key, inserted concurrently
        existing = _existing_run(conn, tenant_id, spec.idempotency_key or "", digest, spec.tenant)
        assert existing is not None
        return existing, []
    source_ids = _source_ids(conn, {(spec.tenant, s.source) for s in spec.jobs if s.source is not None})
    roots = [i for i, c in enumerate(checked) if not c.after]
    deferred_roots = _backpressure(conn, [checked[i].spec for i in roots], {spec.tenant: tenant_id})
    deferred = {roots[i] for i in deferred_roots}
    ids = ledger.allocate_job_ids(conn, len(checked))
    by_key = {c.key: ids[i] for i, c in enumerate(checked)}
    rows = [
        _new_job(
            c,
            ids[i],
            tenant_id,
            run_id,
            types,
            source_ids,
            State.THROTTLED if i in deferred else State.QUEUED if not c.after else State.PENDING,
        )
        for i, c in enumerate(checked)
    ]
    ledger.insert_jobs(conn, rows, actor=principal.subject, reason=reason or f"run {run_id}")
    ledger_runs.insert_run_jobs(
        conn,
        [
            ledger_runs.NewRunJob(by_key[c.key], run_id, c.key, c.rule.value, c.spec.allow_failure, None, len(c.after))
            for c in checked
        ],
    )
    ledger_runs.insert_edges(conn, run_id, [(by_key[p], by_key[c.key]) for c in checked for p in c.after])
    ledger.insert_event(
        conn,
        tenant_id=tenant_id,
        kind="run.state",
        payload={
            "run_id": run_id,
            "name": spec.name,
            "state": RunState.RUNNING.value,
            "from_state": None,
            "attempt": 1,
            "jobs": len(checked),
            "actor": principal.subject,
        },
    )
    if window_id is not None:
        ledger_runs.set_run_window(conn, run_id, window_id)
    if audit:
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "submit_run",
            f"run {run_id}",
            tenant=spec.tenant,
            reason=reason,
            details={"name": spec.name, "jobs": len(checked), "idempotency_key": spec.idempotency_key},
        )
    return RunResult(run_id, by_key, True), [(r.id or 0, r.queue) for r in rows if r.state == State.QUEUED]


def _new_job(
    c: _Checked,
    job_id: int,
    tenant_id: int,
    run_id: int,
    types: Mapping[str, JobTypeRow],
    source_ids: Mapping[tuple[str, str], int],
    state: State,
    replay_of: int | None = None,
) -> ledger.NewJob:
    return ledger.NewJob(
        id=job_id,
        tenant_id=tenant_id,
        job_type=c.spec.job_type,
        queue=types[c.spec.job_type].queue,
        priority=c.spec.priority,
        payload_json=c.payload_json,
        digest=c.digest,
        idempotency_key=None,
        state=state,
        max_attempts=c.max_attempts,
        correlation_id=c.spec.correlation_id,
        replay_of=replay_of,
        run_id=run_id,
        source_id=None if c.spec.source is None else source_ids[(c.spec.tenant, c.spec.source)],
        wait_reason=WaitReason.BACKPRESSURE if state == State.THROTTLED else None,
    )


def _existing_run(conn: sa.Connection, tenant_id: int, key: str, digest: str, tenant: str) -> RunResult | None:
    found = ledger_runs.find_run_by_key(conn, tenant_id, key)
    if found is None:
        return None
    if found["spec_digest"] != digest:
        raise errors.IdempotencyConflict(
            f"idempotency key {key!r} of tenant {tenant!r} already belongs to run {found['id']} with different "
            "jobs; use a new key, or resubmit the identical run",
            existing_job_id=int(found["id"]),
        )
    rows = ledger_runs.run_job_rows(conn, int(found["id"]))
    return RunResult(int(found["id"]), {r["key"]: int(r["id"]) for r in rows}, False)


# -- cancel -----------------------------------------------------------------------------


def _load_run(conn: sa.Connection, principal: Principal, run_id: int, *, lock: bool) -> sa.RowMapping:
    row = ledger_runs.lock_run(conn, run_id) if lock else ledger_runs.run_row(conn, run_id)
    if row is None or (principal.tenants is not None and row["tenant"] not in principal.tenants):
        raise errors.NotFound(f"no run {run_id}; list runs with `orch runs list`")
    principal.require(Scope.OPERATE, row["tenant"])
    return row


def cancel_run(
    engine: sa.Engine, principal: Principal, run_id: int, *, reason: str | None, ticket: str | None = None
) -> CancelResult:
    """Cancel every job of the run that has not ended (running ones cooperatively: their
    handlers are asked to stop). The run ends canceled once they have. Raises
    ReasonRequired, NotFound, Forbidden, InvalidTransition (the run has ended)."""
    common.require_reason("cancel run", reason, ticket)
    with engine.begin() as conn:
        run = _load_run(conn, principal, run_id, lock=False)
        if run["state"] != RunState.RUNNING:
            raise errors.InvalidTransition(f"run {run_id} is {run['state']}; only a running run can be canceled")
        # Jobs first, in id order, then the run row: the order every finisher locks them in.
        jobs = ledger_runs.lock_run_jobs(conn, run_id)
        ledger_runs.request_run_cancel(conn, run_id)
        waiting = [
            r["id"] for r in jobs if r["state"] in (State.PENDING, State.QUEUED, State.THROTTLED, State.RETRYING)
        ]
        running = [r["id"] for r in jobs if r["state"] in (State.LEASED, State.RUNNING)]
        canceled = ledger.cancel_waiting_jobs(conn, waiting, actor=principal.subject, reason=reason) if waiting else []
        requested = ledger_runs.request_cancel_many(conn, running)
        state = ledger_runs.run_row(conn, run_id)
        assert state is not None
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "cancel_run",
            f"run {run_id}",
            tenant=run["tenant"],
            reason=reason,
            ticket=ticket,
            details={"canceled": len(canceled), "cancel_requested": requested},
        )
        return CancelResult(run_id, len(canceled), requested, str(state["state"]))


# -- replay -----------------------------------------------------------------------------


def plan_replay(
    rows: Sequence[sa.RowMapping], edges: Sequence[tuple[int, int]], from_keys: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """(to_run, kept) keys for a replay of a run with these current jobs and edges."""
    key_of = {int(r["id"]): r["key"] for r in rows}
    children: dict[str, list[str]] = {}
    for p, c in edges:
        if p in key_of and c in key_of:
            children.setdefault(key_of[p], []).append(key_of[c])
    for r in rows:
        # A job a replayed job spawned is spawned again by its new copy.
        if r["spawned_by"] is not None and int(r["spawned_by"]) in key_of:
            children.setdefault(key_of[int(r["spawned_by"])], []).append(r["key"])
    if from_keys:
        unknown = sorted(set(from_keys) - set(key_of.values()))
        if unknown:
            raise errors.InvalidInput(f"run has no job with key {unknown[0]!r}")
        chosen = list(dict.fromkeys(from_keys))
    else:
        chosen = [r["key"] for r in rows if r["state"] in (State.DEAD_LETTERED, State.CANCELED)]
    if not chosen:
        raise errors.InvalidInput(
            "nothing to replay: no job of the run ended dead-lettered or canceled (use --from KEY)"
        )
    to_run = dag.downstream(children, chosen)
    order = [r["key"] for r in rows]
    return [k for k in order if k in to_run], [k for k in order if k not in to_run]


def replay_run(
    engine: sa.Engine,
    principal: Principal,
    run_id: int,
    doorbell: Doorbell,
    *,
    from_keys: Sequence[str] | None = None,
    dry_run: bool = False,
    reason: str | None,
    ticket: str | None = None,
) -> ReplayPlan:
    """Re-run the failed part of an ended (failed or canceled) run, in the same run: the
    chosen jobs (default: those that ended dead-lettered or canceled) and everything
    downstream get new jobs (replay_of the old ones), wired to the kept upstream jobs whose
    results they read. Raises ReasonRequired, NotFound, Forbidden, InvalidTransition (the run
    is running or succeeded), InvalidInput (unknown key, nothing to replay)."""
    if not dry_run:
        common.require_reason("replay run", reason, ticket)
    with engine.begin() as conn:
        run = _load_run(conn, principal, run_id, lock=not dry_run)
        # A succeeded run is replayed only in part, named with --from.
        replayable = run["state"] in (RunState.FAILED, RunState.CANCELED) or (
            run["state"] == RunState.SUCCEEDED and from_keys
        )
        if not replayable:
            raise errors.InvalidTransition(
                f"run {run_id} is {run['state']}; only a failed or canceled run is replayed"
                + (" (a succeeded one with --from KEY)" if run["state"] == RunState.SUCCEEDED else "")
            )
        rows = ledger_runs.run_job_rows(conn, run_id)
        edges = run_reads.run_edges(conn, run_id)
        to_run, kept = plan_replay(rows, edges, from_keys)
        if dry_run:
            return ReplayPlan(run_id, to_run, kept)
        new_jobs, attempt = _rewire(conn, principal, run, rows, edges, set(to_run))
        ledger.insert_event(
            conn,
            tenant_id=run["tenant_id"],
            kind="run.state",
            payload={
                "run_id": run_id,
                "name": run["name"],
                "state": RunState.RUNNING.value,
                "from_state": run["state"],
                "attempt": attempt,
                "replayed": to_run,
                "actor": principal.subject,
            },
        )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "replay_run",
            f"run {run_id}",
            tenant=run["tenant"],
            reason=reason,
            ticket=ticket,
            details={"to_run": to_run, "kept": kept, "attempt": attempt},
        )
        rung = ledger_runs.ring_unrung(conn, [run_id])
    ring(doorbell, rung)
    return ReplayPlan(run_id, to_run, kept, new_jobs, attempt)


def _rewire(
    conn: sa.Connection,
    principal: Principal,
    run: sa.RowMapping,
    rows: Sequence[sa.RowMapping],
    edges: Sequence[tuple[int, int]],
    to_run: set[str],
) -> tuple[dict[str, int], int]:
    """New jobs for the keys in to_run (but those a replayed job will spawn again), wired to
    the kept jobs; the old ones stop being current. Returns ({key: new id}, new attempt)."""
    run_id = int(run["id"])
    by_id = {int(r["id"]): r for r in rows}
    key_of = {i: r["key"] for i, r in by_id.items()}
    id_of = {r["key"]: int(r["id"]) for r in rows}
    respawned = {
        r["key"]
        for r in rows
        if r["key"] in to_run and r["spawned_by"] is not None and key_of.get(int(r["spawned_by"])) in to_run
    }
    copies = [r for r in rows if r["key"] in to_run and r["key"] not in respawned]
    parents: dict[str, list[str]] = {r["key"]: [] for r in rows}
    for p, c in edges:
        if p in key_of and c in key_of:
            parents[key_of[c]].append(key_of[p])
    new_ids = ledger.allocate_job_ids(conn, len(copies))
    new_of = {r["key"]: new_ids[i] for i, r in enumerate(copies)}
    superseded = [id_of[k] for k in to_run]
    ledger_runs.supersede_run_jobs(conn, superseded)
    jobs: list[ledger.NewJob] = []
    run_rows: list[ledger_runs.NewRunJob] = []
    new_edges: list[tuple[int, int]] = []
    for r in copies:
        key = r["key"]
        text = payloads.canonical_json(r["payload"])
        jobs.append(
            ledger.NewJob(
                id=new_of[key],
                tenant_id=int(r["tenant_id"]),
                job_type=r["job_type"],
                queue=r["queue"],
                priority=int(r["priority"]),
                payload_json=text,
                digest=payloads.digest(text),
                idempotency_key=None,
                state=State.PENDING,
                max_attempts=int(r["max_attempts"]),
                correlation_id=r["correlation_id"],
                replay_of=int(r["id"]),
                run_id=run_id,
                source_id=r["source_id"],
            )
        )
        wired: list[int] = []
        kept_states: list[State] = []
        for parent in parents[key]:
            if parent in new_of:
                wired.append(new_of[parent])
            elif parent not in to_run:
                wired.append(id_of[parent])
                kept_states.append(State(by_id[id_of[parent]]["state"]))
            # else: spawned again by its replayed spawner, which wires it then
        ok, failed, skipped = dag.parent_counts(kept_states)
        spawned_by = r["spawned_by"]
        run_rows.append(
            ledger_runs.NewRunJob(
                new_of[key],
                run_id,
                key,
                r["trigger_rule"],
                bool(r["allow_failure"]),
                None if spawned_by is None else int(spawned_by),
                len(wired),
                ok,
                failed,
                skipped,
            )
        )
        new_edges.extend((p, new_of[key]) for p in wired)
    ledger.insert_jobs(conn, jobs, actor=principal.subject, reason=f"replay of run {run_id}")
    ledger_runs.insert_run_jobs(conn, run_rows)
    ledger_runs.insert_edges(conn, run_id, new_edges)
    attempt = ledger_runs.restart_run(conn, run_id, superseded=len(superseded), added=len(copies))
    ledger_runs.advance_runs(conn, check=[j.id or 0 for j in jobs], actor=principal.subject)
    return new_of, attempt
