"""The one write API. Every call takes a Principal, owns its transaction, and rings doorbells
only after commit (a lost doorbell is re-rung by the scheduler; a rung doorbell for an
uncommitted job would be a lie).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from core.domain import auth, cron, errors, payloads
from core.domain.auth import Principal, Scope
from core.domain.states import State
from core.ledger import audit, flow
from core.ledger import jobs as ledger

log = logging.getLogger(__name__)

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_PRIORITY = 1000
MAX_ATTEMPTS_LIMIT = 100
MAX_REASON = 256


class _Catalog:
    """Per-process caches of job types and tenant ids. Tenants are never renamed or deleted;
    job types are re-read after a short time, and at once on a miss."""

    TTL_S = 5.0

    def __init__(self) -> None:
        self.types: dict[str, ledger.JobTypeRow] = {}
        self.types_at = -1e9
        self.tenants: dict[tuple[str, str], int] = {}

    def job_types(self, conn: sa.Connection, wanted: set[str]) -> dict[str, ledger.JobTypeRow]:
        now = time.monotonic()
        if now - self.types_at > self.TTL_S or not wanted <= self.types.keys():
            self.types = ledger.job_types(conn)
            self.types_at = now
        return self.types

    def tenant_ids(self, conn: sa.Connection, url: str, names: set[str]) -> dict[str, int]:
        out = {n: self.tenants[(url, n)] for n in names if (url, n) in self.tenants}
        missing = sorted(names - out.keys())
        if missing:
            for name, tid in ledger.ensure_tenants(conn, missing).items():
                self.tenants[(url, name)] = tid
                out[name] = tid
        return out


_catalog = _Catalog()


def forget_cached_catalog() -> None:
    """Drop cached job types and tenant ids (tests that rebuild the ledger call this)."""
    global _catalog
    _catalog = _Catalog()


class Doorbell(Protocol):
    """Tells workers that jobs are ready. Carries ids only; losing a ring loses nothing."""

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        """Ring for (job_id, queue) pairs. May raise; callers log and move on."""


class NoDoorbell:
    """For callers with no broker at hand: the scheduler rings for them within a pass or two."""

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        return None


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


@dataclass(frozen=True)
class SubmitResult:
    job_ids: list[int]
    #: Parallel to job_ids: False where an idempotency key returned an existing job.
    created: list[bool]


def _ring(doorbell: Doorbell, jobs: Sequence[tuple[int, str]]) -> None:
    if not jobs:
        return
    try:
        doorbell.ring(jobs)
    except Exception as exc:  # the ledger is the truth; the scheduler re-rings
        log.warning("could not ring %d doorbell(s), the scheduler will: %s", len(jobs), exc)


MAX_TICKET = 128


def _check_reason(reason: str | None, ticket: str | None = None) -> None:
    if reason is not None and len(reason) > MAX_REASON:
        raise errors.InvalidInput(f"reason is {len(reason)} characters; at most {MAX_REASON}")
    if ticket is not None and len(ticket) > MAX_TICKET:
        raise errors.InvalidInput(f"ticket is {len(ticket)} characters; at most {MAX_TICKET}")


def _require_reason(action: str, reason: str | None, ticket: str | None, *, ticket_required: bool = False) -> None:
    """Operate, quota and backfill actions need a reason (and some a ticket), from any front end."""
    _check_reason(reason, ticket)
    if reason is None or not reason.strip():
        raise errors.ReasonRequired(f"{action} needs a reason (--reason, at most {MAX_REASON} characters)")
    if ticket_required and (ticket is None or not ticket.strip()):
        raise errors.ReasonRequired(f"{action} needs a ticket (--ticket, at most {MAX_TICKET} characters)")


def _audit(
    conn: sa.Connection,
    principal: Principal,
    scope: Scope,
    action: str,
    target: str,
    *,
    tenant: str | None,
    reason: str | None = None,
    ticket: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    audit.append(
        conn,
        audit.AuditEntry(
            subject=principal.subject,
            scopes=[scope.value],
            action=action,
            target=target,
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details=dict(details or {}),
        ),
    )


def _check_spec(spec: JobSpec, types: Mapping[str, ledger.JobTypeRow]) -> int:
    """Validate everything but the payload; returns the effective max_attempts."""
    if not TENANT_RE.match(spec.tenant):
        raise errors.InvalidInput(
            f"tenant {spec.tenant!r} is not a valid name: use letters, digits, '.', '_' or '-' (at most 63)"
        )
    jt = types.get(spec.job_type)
    if jt is None:
        known = ", ".join(sorted(types)) or "none registered"
        raise errors.UnknownJobType(
            f"unknown job type {spec.job_type!r} (known: {known}); start a worker that registers it"
        )
    if not -MAX_PRIORITY <= spec.priority <= MAX_PRIORITY:
        raise errors.InvalidInput(f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {spec.priority}")
    max_attempts = jt.max_attempts if spec.max_attempts is None else spec.max_attempts
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise errors.InvalidInput(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
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
    Forbidden when the principal may not operate on a tenant.
    """
    if not specs:
        return SubmitResult([], [])
    _check_reason(reason)
    for tenant in {s.tenant for s in specs}:
        principal.require(Scope.OPERATE, tenant)
    try:
        return _submit_many(engine, principal, specs, doorbell, reason)
    except sa.exc.IntegrityError as exc:
        if "jobs_tenant_id_fkey" not in str(exc):
            raise
        # A cached tenant id is gone (the ledger was reset under this process): forget, retry.
        _catalog.tenants.clear()
        return _submit_many(engine, principal, specs, doorbell, reason)


def _submit_many(
    engine: sa.Engine, principal: Principal, specs: Sequence[JobSpec], doorbell: Doorbell, reason: str | None
) -> SubmitResult:
    with engine.begin() as conn:
        types = _catalog.job_types(conn, {s.job_type for s in specs})
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
        tenant_ids = _catalog.tenant_ids(conn, str(engine.url), {s.tenant for s in specs})
        source_ids = _source_ids(conn, {(s.tenant, s.source) for s in specs if s.source is not None})
        deferred = _backpressure(conn, specs, tenant_ids)
        # One job: the sequence assigns its id (RETURNING gives it back). Several: ids are
        # allocated up front so input rows map to jobs without trusting RETURNING order.
        ids: list[int | None] = [None] if len(specs) == 1 else list(ledger.allocate_job_ids(conn, len(specs)))
        rows = [
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
                wait_reason="backpressure" if n in deferred else None,
            )
            for n, (job_id, spec, (text, digest, max_attempts)) in enumerate(zip(ids, specs, checked, strict=True))
        ]
        inserted = ledger.insert_jobs(conn, rows, actor=principal.subject, reason=reason)
        if ids == [None]:
            if inserted:
                rows = [dataclasses.replace(rows[0], id=next(iter(inserted)))]
            ids = [rows[0].id]
        created = [True] * len(rows)
        job_ids: list[int] = [int(i or 0) for i in ids]
        skipped = [i for i, r in enumerate(rows) if r.id not in inserted]
        if skipped:
            existing = ledger.find_idempotent_jobs(
                conn, [(rows[i].tenant_id, rows[i].idempotency_key or "") for i in skipped]
            )
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
        for tenant in sorted({sp.tenant for sp in specs}):
            mine = [job_ids[i] for i, sp in enumerate(specs) if sp.tenant == tenant and created[i]]
            if mine:
                _audit(
                    conn,
                    principal,
                    Scope.OPERATE,
                    "submit",
                    f"jobs {min(mine)}..{max(mine)}" if len(mine) > 1 else f"job {mine[0]}",
                    tenant=tenant,
                    reason=reason,
                    details={
                        "count": len(mine),
                        "job_types": sorted({sp.job_type for sp in specs if sp.tenant == tenant}),
                    },
                )
    _ring(
        doorbell,
        [
            (job_ids[i], r.queue)
            for i, (r, c) in enumerate(zip(rows, created, strict=True))
            if c and r.state == State.QUEUED
        ],
    )
    return SubmitResult(job_ids, created)


def _source_ids(conn: sa.Connection, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not wanted:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT t.name AS tenant, s.name, s.id FROM sources s JOIN tenants t ON t.id = s.tenant_id"
            " WHERE (t.name, s.name) IN (SELECT * FROM unnest(CAST(:t AS text[]), CAST(:n AS text[])))"
        ),
        {"t": [t for t, _ in wanted], "n": [n for _, n in wanted]},
    ).mappings()
    found = {(r["tenant"], r["name"]): int(r["id"]) for r in rows}
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
        row = flow.backlog_of(conn, tenant_ids[tenant])
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
    """Submit one job; returns its id (the existing one for a repeated idempotency key)."""
    return submit_many(engine, principal, [spec], doorbell=doorbell, reason=reason).job_ids[0]


def _lock_jobs(conn: sa.Connection, job_ids: Sequence[int]) -> list[sa.RowMapping]:
    """The jobs (with their tenant's name), locked in id order for the rest of the transaction."""
    return list(
        conn.execute(
            sa.text(
                "SELECT j.id, j.state, j.tenant_id, t.name AS tenant, j.job_type, j.queue, j.priority,"
                " j.payload, j.max_attempts, j.correlation_id, j.run_id"
                " FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.id = ANY(:ids)"
                " ORDER BY j.id FOR UPDATE OF j"
            ),
            {"ids": list(job_ids)},
        ).mappings()
    )


def _load(conn: sa.Connection, job_id: int) -> sa.RowMapping:
    rows = _lock_jobs(conn, [job_id])
    if not rows:
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")
    return rows[0]


def cancel(
    engine: sa.Engine, principal: Principal, job_id: int, *, reason: str | None = None, ticket: str | None = None
) -> str:
    """Cancel a job. Waiting jobs are canceled at once ("canceled"); a running one is asked to
    stop and is canceled when its handler notices ("cancel_requested").
    Raises ReasonRequired, NotFound, Forbidden, InvalidTransition (already finished)."""
    _require_reason("cancel", reason, ticket)
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
        _audit(
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
    _require_reason("retry", reason, ticket)
    principal.require(Scope.OPERATE)
    with engine.begin() as conn:
        job = _load(conn, job_id)
        principal.require(Scope.OPERATE, job["tenant"])
        state = State(job["state"])
        if state == State.RETRYING:
            conn.execute(
                sa.text("UPDATE jobs SET not_before = now() WHERE id = :id AND state = 'retrying'"), {"id": job_id}
            )
            _audit(
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
        _audit(
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
    _ring(doorbell, [(new_id, job["queue"])])
    return new_id


def register_job_types(engine: sa.Engine, types: Sequence[ledger.JobTypeRow]) -> None:
    """Record the policy of job types a worker can run (the code is the truth)."""
    with engine.begin() as conn:
        ledger.upsert_job_types(conn, sorted(types, key=lambda t: t.name))
    _catalog.types_at = -1e9


def create_token(
    engine: sa.Engine,
    principal: Principal,
    *,
    subject: str,
    scopes: frozenset[Scope],
    tenants: frozenset[str] | None,
    reason: str | None = None,
) -> str:
    """Create an API token for `subject`; returns it (only its sha256 is stored). The creator
    must hold every scope it grants, on every tenant it grants. Raises Forbidden, InvalidInput."""
    if not subject or len(subject) > 200:
        raise errors.InvalidInput("subject must be 1 to 200 characters")
    for scope in scopes:
        if tenants is None:
            if principal.tenants is not None or scope not in principal.scopes:
                raise errors.Forbidden(f"{principal.subject} cannot grant {scope} on every tenant")
        else:
            for tenant in tenants:
                principal.require(scope, tenant)
    for tenant in tenants or ():
        if not TENANT_RE.match(tenant):
            raise errors.InvalidInput(f"tenant {tenant!r} is not a valid name")
    _check_reason(reason)
    token = auth.new_token()
    with engine.begin() as conn:
        token_id = audit.insert_token(
            conn,
            token_sha256=auth.hash_token(token),
            subject=subject,
            tenants=None if tenants is None else sorted(tenants),
            scopes=sorted(s.value for s in scopes),
            created_by=principal.subject,
        )
        _audit(
            conn,
            principal,
            Scope.READ,
            "token.create",
            f"token {token_id}",
            tenant=None,
            reason=reason,
            details={
                "subject": subject,
                "scopes": sorted(s.value for s in scopes),
                "tenants": None if tenants is None else sorted(tenants),
            },
        )
    return token


def authenticate(engine: sa.Engine, token: str) -> Principal:
    """The principal of an API token. Raises Forbidden for an unknown or revoked token."""
    with engine.connect() as conn:
        row = audit.find_token(conn, auth.hash_token(token.strip()))
    if row is None:
        raise errors.Forbidden("unknown or revoked API token (check ORCH_TOKEN / --token)")
    return Principal(
        subject=row["subject"],
        scopes=frozenset(Scope(s) for s in row["scopes"]),
        tenants=None if row["tenants"] is None else frozenset(row["tenants"]),
    )


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
    audit row; returns {old id: new id}. Jobs not dead-lettered are refused with
    InvalidTransition and nothing is replayed. Raises ReasonRequired, NotFound, Forbidden."""
    _require_reason("replay", reason, ticket)
    principal.require(Scope.OPERATE)
    if not job_ids:
        return {}
    if len(job_ids) > 10_000:
        raise errors.InvalidInput("replay at most 10000 jobs at once")
    with engine.begin() as conn:
        rows = _lock_jobs(conn, job_ids)
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
        new_ids = ledger.allocate_job_ids(conn, len(rows))
        news = [_replay_of(r, new_id) for new_id, r in zip(new_ids, rows, strict=True)]
        ledger.insert_jobs(conn, news, actor=principal.subject, reason=reason)
        for tenant in sorted({r["tenant"] for r in rows}):
            mine = [(r["id"], n) for r, n in zip(rows, new_ids, strict=True) if r["tenant"] == tenant]
            _audit(
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
    _ring(doorbell, [(n.id or 0, n.queue) for n in news])
    return {r["id"]: n for r, n in zip(rows, new_ids, strict=True)}


# -- flow control: sources, pauses, throttles, circuits, blackouts, quotas, backlog ---------

HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")
MAX_RATE = 1_000_000.0


def _check_rate(rate: float | None, burst: float | None) -> None:
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise errors.InvalidInput(f"rate must be in (0, {MAX_RATE:g}] jobs per second, got {rate}")
    if burst is not None and not 1 <= burst <= MAX_RATE:
        raise errors.InvalidInput(f"burst must be in [1, {MAX_RATE:g}], got {burst}")


def _tenant_id(conn: sa.Connection, tenant: str, *, create: bool = False) -> int:
    if not TENANT_RE.match(tenant):
        raise errors.InvalidInput(f"tenant {tenant!r} is not a valid name: use letters, digits, '.', '_' or '-'")
    if create:
        return ledger.ensure_tenants(conn, [tenant])[tenant]
    tid = conn.execute(sa.text("SELECT id FROM tenants WHERE name = :n"), {"n": tenant}).scalar()
    if tid is None:
        raise errors.NotFound(f"no tenant {tenant!r}")
    return int(tid)


def _source(conn: sa.Connection, tenant: str, name: str) -> sa.RowMapping:
    row = flow.lock_source(conn, tenant=tenant, name=name)
    if row is None:
        raise errors.NotFound(f"tenant {tenant!r} has no source {name!r}; list them with `orch sources list`")
    return row


def add_source(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    name: str,
    host: str,
    rate: float | None = None,
    burst: float | None = None,
    max_active: int | None = None,
    reason: str | None = None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Register a tenant's source on an upstream host, or update it (same name). With a
    rate, the (tenant, host) bucket gets it (burst: capacity, default max(1, rate)); sources
    of one host share one bucket. Needs orch:quota. Raises InvalidInput, Forbidden."""
    principal.require(Scope.QUOTA, tenant)
    _check_reason(reason, ticket)
    if not TENANT_RE.match(name):
        raise errors.InvalidInput(f"source name {name!r} is not valid: use letters, digits, '.', '_' or '-'")
    if not HOST_RE.match(host):
        raise errors.InvalidInput(f"host {host!r} is not a valid host name (host or host:port, no scheme or path)")
    _check_rate(rate, burst)
    if max_active is not None and max_active < 1:
        raise errors.InvalidInput(f"max_active must be at least 1, got {max_active}")
    with engine.begin() as conn:
        tenant_id = _tenant_id(conn, tenant, create=True)
        # Lock order sources, then buckets: the same as admission's, so no deadlock.
        existing = flow.lock_source(conn, tenant=tenant, name=name)
        bucket_id: int | None
        if rate is not None:
            capacity = burst if burst is not None else max(1.0, rate)
            bucket_id, old_rate = flow.upsert_bucket(conn, tenant_id=tenant_id, host=host, rate=rate, capacity=capacity)
            flow.insert_throttle(
                conn,
                bucket_id=bucket_id,
                tenant_id=tenant_id,
                old_rate=old_rate,
                new_rate=rate,
                reason=f"configured by sources add: {reason or 'no reason given'}",
                actor=principal.subject,
            )
        else:
            bucket_id = flow.find_bucket(conn, tenant_id=tenant_id, host=host)
        created = existing is None
        if existing is None:
            new_id = flow.insert_source(
                conn, tenant_id=tenant_id, name=name, host=host, bucket_id=bucket_id, max_active=max_active
            )
            if new_id is None:  # added concurrently under the same name
                raise errors.IdempotencyConflict(
                    f"source {name!r} of {tenant!r} was added by someone else just now; try again",
                    existing_job_id=0,
                )
            source_id = new_id
        else:
            source_id = int(existing["id"])
            flow.update_source(conn, source_id=source_id, host=host, bucket_id=bucket_id, max_active=max_active)
        details = {"host": host, "rate": rate, "burst": burst, "max_active": max_active, "created": created}
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "source.add",
            f"source {name}",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details=details,
        )
    return {"tenant": tenant, "name": name, "id": source_id, "created": created, **details}


def pause(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str | None = None,
    job_type: str | None = None,
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Stop dispatching a source, one of a tenant's job types, or (neither given) the whole
    tenant. Jobs wait as throttled (paused) until resume. Needs orch:operate and a reason.
    Raises ReasonRequired, NotFound, InvalidInput, Forbidden."""
    return _pause_or_resume(engine, principal, tenant, source, job_type, reason, ticket, pausing=True)


def resume(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str | None = None,
    job_type: str | None = None,
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Undo a pause of that exact scope; the jobs it held may go at once (the scheduler
    releases them on its next pass). Raises as pause does."""
    return _pause_or_resume(engine, principal, tenant, source, job_type, reason, ticket, pausing=False)


def _scope_label(source: str | None, job_type: str | None) -> str:
    if source is not None:
        return f"source {source}"
    if job_type is not None:
        return f"job type {job_type}"
    return "tenant"


def _pause_or_resume(
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    source: str | None,
    job_type: str | None,
    reason: str | None,
    ticket: str | None,
    *,
    pausing: bool,
) -> dict[str, Any]:
    action = "pause" if pausing else "resume"
    _require_reason(action, reason, ticket)
    principal.require(Scope.OPERATE, tenant)
    if source is not None and job_type is not None:
        raise errors.InvalidInput(f"{action} one scope at a time: a source, a job type, or the whole tenant")
    assert reason is not None
    target = _scope_label(source, job_type)
    with engine.begin() as conn:
        tenant_id = _tenant_id(conn, tenant, create=pausing)
        source_id = None if source is None else int(_source(conn, tenant, source)["id"])
        if pausing:
            changed = flow.insert_pause(
                conn,
                tenant_id=tenant_id,
                source_id=source_id,
                job_type=job_type,
                reason=reason,
                ticket=ticket,
                actor=principal.subject,
            )
        else:
            changed = flow.delete_pause(conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type)
        _audit(
            conn,
            principal,
            Scope.OPERATE,
            f"{action}",
            target,
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details={"changed": changed},
        )
    released = 0
    if not pausing and changed:
        with engine.begin() as conn:
            released = flow.wake_waiting(
                conn, reason="paused", tenant_id=tenant_id, source_id=source_id, job_type=job_type
            )
    return {"tenant": tenant, "scope": target, "action": action, "changed": changed, "released": released}


def throttle_source(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str,
    rate: float,
    burst: float | None = None,
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Set the configured rate (and burst) of a source's bucket; the adaptive rate restarts
    from it. A source without a bucket gets one. Needs orch:quota and a reason. Raises
    ReasonRequired, InvalidInput, NotFound, Forbidden."""
    _require_reason("throttle", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    _check_rate(rate, burst)
    with engine.begin() as conn:
        src = _source(conn, tenant, source)
        old_rate: float | None = None
        old_base_rate: float | None = None
        if src["bucket_id"] is None:
            capacity = burst if burst is not None else max(1.0, rate)
            bucket_id, old_rate = flow.upsert_bucket(
                conn, tenant_id=src["tenant_id"], host=src["host"], rate=rate, capacity=capacity
            )
            old_base_rate = old_rate
            flow.update_source(
                conn, source_id=src["id"], host=src["host"], bucket_id=bucket_id, max_active=src["max_active"]
            )
        else:
            bucket_id = int(src["bucket_id"])
            got = flow.throttle_bucket(conn, bucket_id=bucket_id, rate=rate, capacity=burst)
            if got is not None:
                old_rate, old_base_rate = float(got["old_rate"]), float(got["old_base_rate"])
        flow.insert_throttle(
            conn,
            bucket_id=bucket_id,
            tenant_id=src["tenant_id"],
            old_rate=old_rate,
            new_rate=rate,
            reason=f"manual: {reason}",
            actor=principal.subject,
        )
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "throttle",
            f"source {source}",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details={"rate": rate, "burst": burst, "old_rate": old_rate, "old_base_rate": old_base_rate},
        )
    return {
        "tenant": tenant,
        "source": source,
        "rate": rate,
        "burst": burst,
        "old_rate": old_rate,
        "old_base_rate": old_base_rate,
    }


def reset_circuit(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str,
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Close a source's circuit by hand; the jobs it held may go at once. Needs
    orch:operate and a reason. Raises ReasonRequired, NotFound, Forbidden."""
    _require_reason("reset-circuit", reason, ticket)
    principal.require(Scope.OPERATE, tenant)
    with engine.begin() as conn:
        src = _source(conn, tenant, source)
        old_state = flow.reset_circuit(conn, source_id=src["id"])
        _audit(
            conn,
            principal,
            Scope.OPERATE,
            "circuit.reset",
            f"source {source}",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details={"old_state": old_state},
        )
    with engine.begin() as conn:
        released = flow.wake_waiting(conn, reason="circuit_open", tenant_id=src["tenant_id"], source_id=src["id"])
    return {"tenant": tenant, "source": source, "old_state": old_state, "state": "closed", "released": released}


MAX_BLACKOUT = dt.timedelta(days=7)


def add_blackout(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str | None = None,
    starts_at: dt.datetime | None = None,
    ends_at: dt.datetime | None = None,
    cron_expr: str | None = None,
    duration_s: float | None = None,
    reason: str | None,
    ticket: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A window with no dispatch for a tenant or one of its sources: one-off (starts_at to
    ends_at) or recurring (cron_expr, UTC, each lasting duration_s). Needs orch:quota and a
    reason. Raises ReasonRequired, InvalidInput (bad window or cron), NotFound, Forbidden."""
    _require_reason("blackout", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    now = now or dt.datetime.now(dt.UTC)
    if cron_expr is not None:
        if starts_at is not None or ends_at is not None:
            raise errors.InvalidInput("give a cron expression with a duration, or a start and an end, not both")
        if duration_s is None or duration_s <= 0:
            raise errors.InvalidInput("a recurring blackout needs a duration (seconds, > 0)")
        parsed = cron.parse(cron_expr)
        start, end = cron.window_at(parsed, dt.timedelta(seconds=duration_s), now)
        kind = {"cron": cron.describe(parsed), "duration_s": duration_s}
    else:
        if starts_at is None or ends_at is None:
            raise errors.InvalidInput("a one-off blackout needs a start and an end (or give --cron and --duration)")
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise errors.InvalidInput("blackout start and end need a time zone (e.g. 2026-12-01T02:00:00Z)")
        if ends_at <= starts_at:
            raise errors.InvalidInput(
                f"blackout ends ({ends_at.isoformat()}) before it starts ({starts_at.isoformat()})"
            )
        if ends_at <= now:
            raise errors.InvalidInput(f"blackout end {ends_at.isoformat()} is in the past")
        start, end = starts_at, ends_at
        kind = {"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
    with engine.begin() as conn:
        tenant_id = _tenant_id(conn, tenant, create=True)
        source_id = None if source is None else int(_source(conn, tenant, source)["id"])
        blackout_id = flow.insert_blackout(
            conn,
            tenant_id=tenant_id,
            source_id=source_id,
            starts_at=starts_at if cron_expr is None else None,
            ends_at=ends_at if cron_expr is None else None,
            cron=None if cron_expr is None else kind["cron"],
            duration_s=duration_s if cron_expr is not None else None,
            window_start=start,
            window_end=end,
            reason=reason,
            ticket=ticket,
            actor=principal.subject,
        )
        details = {**kind, "window_start": start.isoformat(), "window_end": end.isoformat()}
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "blackout.add",
            f"blackout {blackout_id} ({_scope_label(source, None)})",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details=details,
        )
    return {"id": blackout_id, "tenant": tenant, "source": source, **details}


def remove_blackout(
    engine: sa.Engine, principal: Principal, blackout_id: int, *, reason: str | None, ticket: str | None = None
) -> dict[str, Any]:
    """Delete a blackout; jobs it held may go at once. Needs orch:quota and a reason.
    Raises ReasonRequired, NotFound, Forbidden."""
    _require_reason("blackout remove", reason, ticket)
    principal.require(Scope.QUOTA)
    with engine.begin() as conn:
        row = flow.delete_blackout(conn, blackout_id)
        if row is None or (principal.tenants is not None and row["tenant"] not in principal.tenants):
            raise errors.NotFound(f"no blackout {blackout_id}; list them with `orch blackouts list`")
        principal.require(Scope.QUOTA, row["tenant"])
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "blackout.remove",
            f"blackout {blackout_id}",
            tenant=row["tenant"],
            reason=reason,
            ticket=ticket,
        )
    with engine.begin() as conn:
        # Jobs held by the removed blackout may go now (ready jobs a new one covers are
        # caught at their next claim).
        released = flow.wake_waiting(conn, reason="blackout", tenant_id=row["tenant_id"], source_id=row["source_id"])
    return {"id": blackout_id, "tenant": row["tenant"], "removed": True, "released": released}


def set_quota(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    job_type: str,
    max_active: int | None = None,
    max_per_hour: int | None = None,
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Concurrency quota of a tenant's job type; both limits None removes it. Needs
    orch:quota and a reason. Raises ReasonRequired, InvalidInput, Forbidden."""
    _require_reason("quota", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    for label, value in (("max_active", max_active), ("max_per_hour", max_per_hour)):
        if value is not None and value < 1:
            raise errors.InvalidInput(f"{label} must be at least 1, got {value}")
    with engine.begin() as conn:
        tenant_id = _tenant_id(conn, tenant, create=True)
        if max_active is None and max_per_hour is None:
            changed = flow.delete_quota(conn, tenant_id=tenant_id, job_type=job_type)
        else:
            flow.upsert_quota(
                conn, tenant_id=tenant_id, job_type=job_type, max_active=max_active, max_per_hour=max_per_hour
            )
            changed = True
        details = {"max_active": max_active, "max_per_hour": max_per_hour}
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "quota.set",
            f"job type {job_type}",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details=details,
        )
    released = 0
    with engine.begin() as conn:  # a raised or removed quota lets waiting jobs try again now
        released = flow.wake_waiting(conn, reason="quota", tenant_id=tenant_id, job_type=job_type)
    return {"tenant": tenant, "job_type": job_type, "changed": changed, "released": released, **details}


BACKLOG_POLICIES = ("refuse", "defer")


def set_backlog_limit(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    limit: int | None,
    policy: str = "refuse",
    reason: str | None,
    ticket: str | None = None,
) -> dict[str, Any]:
    """A tenant's backlog limit (waiting jobs; None removes it) and what submit does beyond
    it: refuse (raise Backpressure) or defer (accept the jobs as throttled, backpressure).
    Needs orch:quota and a reason. Raises ReasonRequired, InvalidInput, Forbidden."""
    _require_reason("backlog limit", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    if policy not in BACKLOG_POLICIES:
        raise errors.InvalidInput(f"backlog policy must be one of {', '.join(BACKLOG_POLICIES)}, got {policy!r}")
    if limit is not None and limit < 1:
        raise errors.InvalidInput(f"backlog limit must be at least 1, got {limit}")
    with engine.begin() as conn:
        tenant_id = _tenant_id(conn, tenant, create=True)
        flow.set_backlog_limit(conn, tenant_id=tenant_id, limit=limit, policy=policy)
        _audit(
            conn,
            principal,
            Scope.QUOTA,
            "backlog.set",
            "tenant",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details={"limit": limit, "policy": policy},
        )
    return {"tenant": tenant, "backlog_limit": limit, "backlog_policy": policy}
