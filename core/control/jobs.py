"""Writes on jobs: submit, cancel, retry and replay, and job-type registration. Every call takes
a Principal, owns its transaction, and rings doorbells only after commit (a lost doorbell is
re-rung by the scheduler; a rung doorbell for an uncommitted job would be a lie)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.control import common
from core.control.common import Doorbell, append_audit, catalog, ring
from core.domain import errors, payloads
from core.domain.auth import Principal, Scope
from core.domain.jobtypes import JobTypeRow
from core.domain.states import State, WaitReason
from core.ledger import audit as ledger_audit
from core.ledger import db
from core.ledger import flow as ledger_flow
from core.ledger import jobs as ledger
from core.ledger import runs as ledger_runs


@dataclass(frozen=True)
class JobSpec:
    tenant: str
    job_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    correlation_id: str | None = None
    #: The source (upstream feed) the job reads: its pause, blackouts, circuit and bucket apply.
    source: str | None = None
    #: Jobs of a run (RunSpec) only: the job's key in its run, the keys of its parents, when it
    #: starts given how they ended (core.domain.dag.TriggerRule), and whether its failure
    #: leaves the run's state alone.
    key: str | None = None
    after: Sequence[str] = ()
    trigger_rule: str = "all_success"
    allow_failure: bool = False


@dataclass(frozen=True)
class SubmitResult:
    job_ids: list[int]
    #: Parallel to job_ids: False where an idempotency key returned an existing job.
    created: list[bool]


def _check_spec(spec: JobSpec, types: Mapping[str, JobTypeRow]) -> int:
    """Validate everything but the payload; returns the effective max_attempts."""
    common.check_tenant(spec.tenant)
    jt = types.get(spec.job_type)
    if jt is None:
        known = ", ".join(sorted(types)) or "none registered"
        raise errors.UnknownJobType(
            f"unknown job type {spec.job_type!r} (known: {known}); start a worker that registers it"
        )
    if not -common.MAX_PRIORITY <= spec.priority <= common.MAX_PRIORITY:
        raise errors.InvalidInput(
            f"priority must be between {-common.MAX_PRIORITY} and {common.MAX_PRIORITY}, got {spec.priority}"
        )
    max_attempts = jt.max_attempts if spec.max_attempts is None else spec.max_attempts
    if not 1 <= max_attempts <= common.MAX_ATTEMPTS_LIMIT:
        raise errors.InvalidInput(f"max_attempts must be between 1 and {common.MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
    if spec.idempotency_key is not None and not 1 <= len(spec.idempotency_key) <= 256:
        raise errors.InvalidInput("idempotency key must be 1 to 256 characters")
    return max_attempts


def submit_many(
    engine: sa.Engine,
    principal: Principal,
    specs: Sequence[JobSpec],
    *,
    doorbell: Doorbell,
    reason: str | None = None,
) -> SubmitResult:
    """Insert jobs (ready at once: state queued) in one transaction and ring their doorbells.

    A tenant that does not exist yet is created. A repeated (tenant, idempotency_key)
    returns the existing job; with a different payload it raises IdempotencyConflict and
    nothing of the batch is inserted. Raises InvalidInput / UnknownJobType for bad specs,
    Forbidden when the principal may not operate on a tenant, NotFound for an unknown
    source, Backpressure for a tenant over its backlog limit (policy refuse).
    """
    if not specs:
        return SubmitResult([], [])
    common.check_reason(reason)
    if any(s.key is not None or s.after for s in specs):
        raise errors.InvalidInput("jobs with a key or parents belong to a run: submit them with submit_run")
    for tenant in {s.tenant for s in specs}:
        principal.require(Scope.OPERATE, tenant)
    try:
        return _submit_many(engine, principal, specs, doorbell, reason)
    except sa.exc.IntegrityError as exc:
        if db.constraint_name(exc) != "jobs_tenant_id_fkey":
            raise
        # A cached tenant id is gone (the ledger was reset under this process): forget, retry.
        catalog.tenants.clear()
        return _submit_many(engine, principal, specs, doorbell, reason)


def _submit_many(
    engine: sa.Engine, principal: Principal, specs: Sequence[JobSpec], doorbell: Doorbell, reason: str | None
) -> SubmitResult:
    got = _submit_in_one_statement(engine, principal, specs, reason)
    if got is None:
        with engine.begin() as conn:
            got = submit_in(conn, principal, specs, reason=reason)
    result, to_ring = got
    ring(doorbell, to_ring)
    return result


def _submit_in_one_statement(
    engine: sa.Engine, principal: Principal, specs: Sequence[JobSpec], reason: str | None
) -> tuple[SubmitResult, list[tuple[int, str]]] | None:
    """submit_in's work as one statement sent in autocommit: the jobs, their history and
    events, and the audit row commit together or not at all, in one round trip (no BEGIN, no
    COMMIT of their own; docs/adr/0021). Only when that statement is the only write: one
    tenant whose id this process already knows (creating a tenant is a write of its own) and
    no idempotency keys (a conflict must roll the batch back). None when it does not apply,
    or when the tenant has a backlog limit to count (nothing was written): submit_in then
    runs in a transaction."""
    tenants = {s.tenant for s in specs}
    if len(tenants) != 1 or any(s.idempotency_key is not None for s in specs):
        return None
    tenant = next(iter(tenants))
    if not catalog.knows_tenant(str(engine.url), tenant):
        return None
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        ids, new_jobs, tenant_ids = _prepare(conn, specs, None)
        rows = new_jobs(set())
        entry = common.audit_entry(
            principal, Scope.OPERATE, "submit", "", tenant=tenant, reason=reason, details=_submit_details(specs, 0)
        )
        params = ledger_audit.deferred_params(entry)
        if params is None:
            return None
        got = ledger.insert_jobs_unless_limited(
            conn, rows, actor=principal.subject, reason=reason, tenant_ids=[tenant_ids[tenant]], audit=params
        )
    if got is None:
        return None
    job_ids = [int(i or 0) for i in ids] if ids != [None] else [next(iter(got))]
    to_ring = [(job_id, r.queue) for job_id, r in zip(job_ids, rows, strict=True) if r.state == State.QUEUED]
    return SubmitResult(job_ids, [True] * len(job_ids)), to_ring


def _submit_details(specs: Sequence[JobSpec], count: int) -> dict[str, Any]:
    """A submit audit row's details: how many jobs it created, and the job types submitted."""
    return {"count": count, "job_types": sorted({sp.job_type for sp in specs})}


def submit_in(
    conn: sa.Connection,
    principal: Principal,
    specs: Sequence[JobSpec],
    *,
    reason: str | None,
    window_ids: Sequence[int | None] | None = None,
    audit: bool = True,
) -> tuple[SubmitResult, list[tuple[int, str]]]:
    """submit_many's work in the caller's transaction (schedules fire with the tick that
    records them); returns the result and the (job id, queue) doorbells to ring after commit.
    `window_ids`, parallel to specs, ties jobs to their event-time windows. The caller has
    checked scopes. Raises as submit_many does."""
    ids, new_jobs, tenant_ids = _prepare(conn, specs, window_ids)
    # Optimistic: a tenant without a backlog limit needs no count (nothing is deferred); the
    # insert checks that itself and inserts nothing when a tenant has one.
    rows = new_jobs(set())
    got = ledger.insert_jobs_unless_limited(
        conn, rows, actor=principal.subject, reason=reason, tenant_ids=sorted(set(tenant_ids.values()))
    )
    if got is None:
        rows = new_jobs(_backpressure(conn, specs, tenant_ids))
        got = ledger.insert_jobs(conn, rows, actor=principal.subject, reason=reason)
    inserted = got
    if ids == [None]:
        if inserted:
            rows = [dataclasses.replace(rows[0], id=next(iter(inserted)))]
        ids = [rows[0].id]
    created = [True] * len(rows)
    job_ids: list[int] = [int(i or 0) for i in ids]
    skipped = [i for i, r in enumerate(rows) if r.id not in inserted]
    if skipped:
        _resolve_idempotent(conn, specs, rows, skipped, job_ids, created)
    for tenant in sorted({sp.tenant for sp in specs}) if audit else ():
        mine = [job_ids[i] for i, sp in enumerate(specs) if sp.tenant == tenant and created[i]]
        if mine:
            append_audit(
                conn,
                principal,
                Scope.OPERATE,
                "submit",
                f"jobs {min(mine)}..{max(mine)}" if len(mine) > 1 else f"job {mine[0]}",
                tenant=tenant,
                reason=reason,
                details=_submit_details([sp for sp in specs if sp.tenant == tenant], len(mine)),
            )
    to_ring = [
        (job_ids[i], r.queue)
        for i, (r, c) in enumerate(zip(rows, created, strict=True))
        if c and r.state == State.QUEUED
    ]
    return SubmitResult(job_ids, created), to_ring


def _prepare(
    conn: sa.Connection, specs: Sequence[JobSpec], window_ids: Sequence[int | None] | None
) -> tuple[list[int | None], Callable[[set[int]], list[ledger.NewJob]], dict[str, int]]:
    """Check the specs and resolve their names: the job ids ([None] for one job: the
    sequence assigns it), a builder of the rows to insert given the indexes deferred by
    backpressure, and the tenants' ids. Raises as submit_many does."""
    types = catalog.job_types(conn, {s.job_type for s in specs})
    # The same payload object (e.g. --count N) is canonicalised once; specs keep
    # their payloads alive, so id() is stable for the loop.
    memo: dict[int, tuple[str, str]] = {}
    checked: list[tuple[str, str, int]] = []
    for spec in specs:
        max_attempts = _check_spec(spec, types)
        canon = memo.get(id(spec.payload))
        if canon is None:
            text = payloads.check_payload(spec.payload)
            canon = memo[id(spec.payload)] = (text, payloads.digest(text))
        checked.append((canon[0], canon[1], max_attempts))
    tenant_ids = catalog.tenant_ids(conn, str(conn.engine.url), {s.tenant for s in specs})
    source_ids = _source_ids(conn, {(s.tenant, s.source) for s in specs if s.source is not None})
    # One job: the sequence assigns its id (RETURNING gives it back). Several: ids are
    # allocated up front so input rows map to jobs without trusting RETURNING order.
    ids: list[int | None] = [None] if len(specs) == 1 else list(ledger.allocate_job_ids(conn, len(specs)))

    def new_jobs(deferred: set[int]) -> list[ledger.NewJob]:
        return [
            ledger.NewJob(
                id=job_id,
                tenant_id=tenant_ids[spec.tenant],
                job_type=spec.job_type,
                queue=types[spec.job_type].queue,
                priority=spec.priority,
                payload_json=text,
                digest=digest,
                idempotency_key=spec.idempotency_key,
                state=State.THROTTLED if n in deferred else State.QUEUED,
                max_attempts=max_attempts,
                correlation_id=spec.correlation_id,
                source_id=None if spec.source is None else source_ids[(spec.tenant, spec.source)],
                wait_reason=WaitReason.BACKPRESSURE if n in deferred else None,
                window_id=None if window_ids is None else window_ids[n],
            )
            for n, (job_id, spec, (text, digest, max_attempts)) in enumerate(zip(ids, specs, checked, strict=True))
        ]

    return ids, new_jobs, tenant_ids


def _resolve_idempotent(
    conn: sa.Connection,
    specs: Sequence[JobSpec],
    rows: Sequence[ledger.NewJob],
    skipped: Sequence[int],
    job_ids: list[int],
    created: list[bool],
) -> None:
    """Jobs not inserted because their idempotency key exists: the existing job, or
    IdempotencyConflict when it differs."""
    existing = ledger.find_idempotent_jobs(conn, [(rows[i].tenant_id, rows[i].idempotency_key or "") for i in skipped])
    for i in skipped:
        row = rows[i]
        found = existing.get((row.tenant_id, row.idempotency_key or ""))
        if found is None:  # pragma: no cover - the unique index guarantees a row
            raise errors.InvalidInput(f"job {row.id} was not inserted and no existing job was found")
        if found["payload_digest"] != row.digest or found["job_type"] != row.job_type:
            raise errors.IdempotencyConflict(
                f"idempotency key {row.idempotency_key!r} of tenant {specs[i].tenant!r} already "
                f"belongs to job {found['id']} with a different "
                f"{'job type' if found['job_type'] != row.job_type else 'payload'}; "
                "use a new key, or resubmit the identical job",
                existing_job_id=int(found["id"]),
            )
        job_ids[i] = int(found["id"])
        created[i] = False


def _source_ids(conn: sa.Connection, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not wanted:
        return {}
    found = ledger_flow.source_ids(conn, sorted(wanted))
    for tenant, name in sorted(wanted - found.keys()):
        raise errors.NotFound(
            f"tenant {tenant!r} has no source {name!r}; add it with `orch sources add --tenant {tenant} --name {name}`"
        )
    return found


def _backpressure(conn: sa.Connection, specs: Sequence[JobSpec], tenant_ids: Mapping[str, int]) -> set[int]:
    """Indexes of the specs to create deferred; raises Backpressure for a tenant over its
    limit under the refuse policy. Locks the tenants that have a limit until commit."""
    deferred: set[int] = set()
    for tenant in sorted(tenant_ids):
        row = ledger_flow.backlog_of(conn, tenant_ids[tenant])
        if row is None:
            continue
        mine = [i for i, sp in enumerate(specs) if sp.tenant == tenant]
        limit, backlog = int(row["backlog_limit"]), int(row["backlog"])
        room = max(0, limit - backlog)
        if len(mine) <= room:
            continue
        if row["backlog_policy"] == "refuse":
            raise errors.Backpressure(
                f"tenant {tenant!r} is at its backlog limit: {backlog} job(s) waiting, limit {limit}, "
                f"{len(mine)} more submitted; retry later or raise the limit (`orch quotas set --tenant {tenant} "
                "--backlog-limit N`)",
                tenant=tenant,
                limit=limit,
                backlog=backlog,
            )
        deferred.update(mine[room:])
    return deferred


def submit(
    engine: sa.Engine, principal: Principal, spec: JobSpec, *, doorbell: Doorbell, reason: str | None = None
) -> int:
    """Submit one job; returns its id (the existing one for a repeated idempotency key).
    Raises as submit_many does."""
    return submit_many(engine, principal, [spec], doorbell=doorbell, reason=reason).job_ids[0]


def _load(conn: sa.Connection, job_id: int) -> sa.RowMapping:
    rows = ledger.lock_jobs(conn, [job_id])
    if not rows:
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")
    return rows[0]


def cancel(
    engine: sa.Engine,
    principal: Principal,
    job_id: int,
    *,
    reason: str | None = None,
    ticket: str | None = None,
    doorbell: Doorbell | None = None,
) -> str:
    """Cancel a job. Waiting jobs are canceled at once ("canceled"); a running one is asked to
    stop and is canceled when its handler notices ("cancel_requested").
    Raises ReasonRequired, NotFound, Forbidden, InvalidTransition (already finished)."""
    common.require_reason("cancel", reason, ticket)
    principal.require(Scope.OPERATE)
    with engine.begin() as conn:
        job = _load(conn, job_id)
        principal.require(Scope.OPERATE, job["tenant"])
        state = State(job["state"])
        if state in (State.LEASED, State.RUNNING):
            ledger.request_cancel(conn, job_id)
            result = "cancel_requested"
        else:
            moved = ledger.cancel_waiting_jobs(conn, [job_id], actor=principal.subject, reason=reason)
            if not moved:
                raise errors.InvalidTransition(f"job {job_id} is {state}; only waiting or running jobs can be canceled")
            result = "canceled"
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "cancel",
            f"job {job_id}",
            tenant=job["tenant"],
            reason=reason,
            ticket=ticket,
            details={"from_state": state.value, "result": result},
        )
        # A job of a run that ended here may have released children (e.g. all_done).
        released = ledger_runs.ring_unrung(conn, [job["run_id"]]) if job["run_id"] is not None else []
    ring(doorbell or common.NoDoorbell(), released)
    return result


def _replay_of(job: sa.RowMapping, new_id: int) -> ledger.NewJob:
    """A new queued job with the same type, payload and provenance as `job`, replay_of it."""
    text = payloads.canonical_json(job["payload"])
    return ledger.NewJob(
        id=new_id,
        tenant_id=job["tenant_id"],
        job_type=job["job_type"],
        queue=job["queue"],
        priority=job["priority"],
        payload_json=text,
        digest=payloads.digest(text),
        idempotency_key=None,
        state=State.QUEUED,
        max_attempts=job["max_attempts"],
        correlation_id=job["correlation_id"],
        replay_of=job["id"],
        run_id=job["run_id"],
        source_id=job["source_id"],
    )


def _refuse_run_job(job: sa.RowMapping) -> None:
    """A job of a run is replayed with its run, so what depends on it runs again too."""
    if job["run_id"] is not None:
        raise errors.InvalidTransition(
            f"job {job['id']} belongs to run {job['run_id']}: replay the run "
            f"(`orch runs replay {job['run_id']} --reason ...`), which re-runs it and everything downstream"
        )


def retry(
    engine: sa.Engine,
    principal: Principal,
    job_id: int,
    *,
    doorbell: Doorbell,
    reason: str | None = None,
    ticket: str | None = None,
) -> int:
    """Retry a job. A dead-lettered, canceled or upstream-failed job is replayed as a new job
    with replay_of set (history is never rewritten); returns the new job's id. A retrying
    job is made due now; returns its own id.
    Raises ReasonRequired, NotFound, Forbidden, InvalidTransition."""
    common.require_reason("retry", reason, ticket)
    principal.require(Scope.OPERATE)
    with engine.begin() as conn:
        job = _load(conn, job_id)
        principal.require(Scope.OPERATE, job["tenant"])
        state = State(job["state"])
        if state == State.RETRYING:
            ledger.make_retry_due(conn, job_id)
            append_audit(
                conn,
                principal,
                Scope.OPERATE,
                "retry",
                f"job {job_id}",
                tenant=job["tenant"],
                reason=reason,
                ticket=ticket,
                details={"from_state": state.value, "result": "due now"},
            )
            return job_id
        if state not in (State.DEAD_LETTERED, State.CANCELED, State.UPSTREAM_FAILED):
            raise errors.InvalidTransition(
                f"job {job_id} is {state}; only dead-lettered, canceled or upstream-failed jobs are replayed"
            )
        _refuse_run_job(job)
        new_id = ledger.allocate_job_ids(conn, 1)[0]
        ledger.insert_jobs(
            conn,
            [_replay_of(job, new_id)],
            actor=principal.subject,
            reason=reason or f"replay of job {job_id}",
        )
        ledger.insert_event(
            conn,
            tenant_id=job["tenant_id"],
            kind="job.replayed",
            payload={"job_id": new_id, "replay_of": job_id, "actor": principal.subject},
        )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "replay",
            f"job {job_id}",
            tenant=job["tenant"],
            reason=reason,
            ticket=ticket,
            details={"from_state": state.value, "new_job_id": new_id},
        )
    ring(doorbell, [(new_id, job["queue"])])
    return new_id


def replay_many(
    engine: sa.Engine,
    principal: Principal,
    job_ids: Sequence[int],
    *,
    doorbell: Doorbell,
    reason: str | None = None,
    ticket: str | None = None,
    label: str | None = None,
) -> dict[int, int]:
    """Replay dead-lettered jobs (e.g. a whole error cluster) in one transaction with one
    audit row per tenant; returns {old id: new id}. Jobs not dead-lettered are refused with
    InvalidTransition and nothing is replayed. Raises ReasonRequired, NotFound, Forbidden."""
    common.require_reason("replay", reason, ticket)
    principal.require(Scope.OPERATE)
    if not job_ids:
        return {}
    if len(job_ids) > 10_000:
        raise errors.InvalidInput("replay at most 10000 jobs at once")
    with engine.begin() as conn:
        rows = ledger.lock_jobs(conn, job_ids)
        found = {r["id"] for r in rows}
        missing = sorted(set(job_ids) - found)
        if missing:
            raise errors.NotFound(
                f"no job {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        for r in rows:
            principal.require(Scope.OPERATE, r["tenant"])
            if r["state"] != State.DEAD_LETTERED:
                raise errors.InvalidTransition(f"job {r['id']} is {r['state']}; only dead-lettered jobs are replayed")
            _refuse_run_job(r)
        new_ids = ledger.allocate_job_ids(conn, len(rows))
        news = [_replay_of(r, new_id) for new_id, r in zip(new_ids, rows, strict=True)]
        ledger.insert_jobs(conn, news, actor=principal.subject, reason=reason)
        for tenant in sorted({r["tenant"] for r in rows}):
            mine = [(r["id"], n) for r, n in zip(rows, new_ids, strict=True) if r["tenant"] == tenant]
            append_audit(
                conn,
                principal,
                Scope.OPERATE,
                "replay",
                label or f"{len(mine)} dead-lettered jobs",
                tenant=tenant,
                reason=reason,
                ticket=ticket,
                details={"replayed": {str(o): n for o, n in mine}},
            )
    ring(doorbell, [(n.id or 0, n.queue) for n in news])
    return {r["id"]: n for r, n in zip(rows, new_ids, strict=True)}


def register_job_types(engine: sa.Engine, types: Sequence[JobTypeRow]) -> None:
    """Record the policy of job types a worker can run (the code is the truth)."""
    with engine.begin() as conn:
        ledger.upsert_job_types(conn, sorted(types, key=lambda t: t.name))
    catalog.types_at = -1e9
