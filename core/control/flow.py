"""Writes on flow control: sources, pauses, throttles, circuits, blackouts, quotas and backlog
limits. Each call checks its scope, needs a reason where the scope demands one, is audited,
and lets go of the jobs a lifted hold kept waiting in the same transaction."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from core.control import common
from core.control.common import append_audit
from core.control.results import (
    BacklogLimit,
    BlackoutAdded,
    BlackoutRemoved,
    CircuitReset,
    PauseChange,
    QuotaChange,
    RateChange,
    SourceChange,
)
from core.domain import cron, errors
from core.domain.auth import Principal, Scope
from core.domain.states import WaitReason
from core.ledger import flow

HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")
MAX_RATE = 1_000_000.0
BACKLOG_POLICIES = ("refuse", "defer")


def _check_rate(rate: float | None, burst: float | None) -> None:
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise errors.InvalidInput(f"rate must be in (0, {MAX_RATE:g}] jobs per second, got {rate}")
    if burst is not None and not 1 <= burst <= MAX_RATE:
        raise errors.InvalidInput(f"burst must be in [1, {MAX_RATE:g}], got {burst}")


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
    allow_private: bool = False,
    reason: str | None = None,
    ticket: str | None = None,
) -> SourceChange:
    """Register a tenant's source on an upstream host, or update it (same name). With a
    rate, the (tenant, host) bucket gets it (burst: capacity, default max(1, rate)); sources
    of one host share one bucket. `allow_private` lets its jobs fetch loopback, private and
    other non-public addresses (refused otherwise). Needs orch:quota. Raises InvalidInput,
    Forbidden."""
    principal.require(Scope.QUOTA, tenant)
    common.check_reason(reason, ticket)
    if not common.TENANT_RE.match(name):
        raise errors.InvalidInput(f"source name {name!r} is not valid: use letters, digits, '.', '_' or '-'")
    if not HOST_RE.match(host):
        raise errors.InvalidInput(f"host {host!r} is not a valid host name (host or host:port, no scheme or path)")
    _check_rate(rate, burst)
    if max_active is not None and max_active < 1:
        raise errors.InvalidInput(f"max_active must be at least 1, got {max_active}")
    with engine.begin() as conn:
        tenant_id = common.tenant_id(conn, tenant, create=True)
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
                conn,
                tenant_id=tenant_id,
                name=name,
                host=host,
                bucket_id=bucket_id,
                max_active=max_active,
                allow_private=allow_private,
            )
            if new_id is None:  # added concurrently under the same name
                raise errors.IdempotencyConflict(
                    f"source {name!r} of {tenant!r} was added by someone else just now; try again",
                    existing_job_id=0,
                )
            source_id = new_id
        else:
            source_id = int(existing["id"])
            flow.update_source(
                conn,
                source_id=source_id,
                host=host,
                bucket_id=bucket_id,
                max_active=max_active,
                allow_private=allow_private,
            )
        result = SourceChange(
            tenant=tenant,
            name=name,
            id=source_id,
            created=created,
            host=host,
            rate=rate,
            burst=burst,
            max_active=max_active,
            allow_private=allow_private,
        )
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "source.add",
            f"source {name}",
            tenant=tenant,
            reason=reason,
            ticket=ticket,
            details={
                "host": host,
                "rate": rate,
                "burst": burst,
                "max_active": max_active,
                "allow_private": allow_private,
                "created": created,
            },
        )
    return result


def pause(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str | None = None,
    job_type: str | None = None,
    reason: str | None,
    ticket: str | None = None,
) -> PauseChange:
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
) -> PauseChange:
    """Undo a pause of that exact scope; every job it held may go at once (the scheduler
    releases them on its next passes). Raises as pause does."""
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
) -> PauseChange:
    action = "pause" if pausing else "resume"
    why = common.require_reason(action, reason, ticket)
    principal.require(Scope.OPERATE, tenant)
    if source is not None and job_type is not None:
        raise errors.InvalidInput(f"{action} one scope at a time: a source, a job type, or the whole tenant")
    target = _scope_label(source, job_type)
    released = 0
    with engine.begin() as conn:
        tenant_id = common.tenant_id(conn, tenant, create=pausing)
        source_id = None if source is None else int(_source(conn, tenant, source)["id"])
        if pausing:
            changed = flow.insert_pause(
                conn,
                tenant_id=tenant_id,
                source_id=source_id,
                job_type=job_type,
                reason=why,
                ticket=ticket,
                actor=principal.subject,
            )
        else:
            changed = flow.delete_pause(conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type)
            if changed:
                released = flow.wake_waiting(
                    conn, reason=WaitReason.PAUSED, tenant_id=tenant_id, source_id=source_id, job_type=job_type
                )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            action,
            target,
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={"changed": changed, "released": released},
        )
    return PauseChange(tenant=tenant, scope=target, action=action, changed=changed, released=released)


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
) -> RateChange:
    """Set the configured rate (and burst) of a source's bucket; the adaptive rate restarts
    from it. A source without a bucket gets one. Needs orch:quota and a reason. Raises
    ReasonRequired, InvalidInput, NotFound, Forbidden."""
    why = common.require_reason("throttle", reason, ticket)
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
                conn,
                source_id=src["id"],
                host=src["host"],
                bucket_id=bucket_id,
                max_active=src["max_active"],
                allow_private=src["allow_private"],
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
            reason=f"manual: {why}",
            actor=principal.subject,
        )
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "throttle",
            f"source {source}",
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={"rate": rate, "burst": burst, "old_rate": old_rate, "old_base_rate": old_base_rate},
        )
    return RateChange(
        tenant=tenant, source=source, rate=rate, burst=burst, old_rate=old_rate, old_base_rate=old_base_rate
    )


def reset_circuit(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    source: str,
    reason: str | None,
    ticket: str | None = None,
) -> CircuitReset:
    """Close a source's circuit by hand; every job it held may go at once. Needs
    orch:operate and a reason. Raises ReasonRequired, NotFound, Forbidden."""
    why = common.require_reason("reset-circuit", reason, ticket)
    principal.require(Scope.OPERATE, tenant)
    with engine.begin() as conn:
        src = _source(conn, tenant, source)
        # The circuit's history names who closed it (orch_circuit_history reads orch.actor).
        conn.execute(sa.text("SELECT set_config('orch.actor', :who, true)"), {"who": principal.subject})
        old_state = flow.reset_circuit(conn, source_id=src["id"])
        released = flow.wake_waiting(
            conn, reason=WaitReason.CIRCUIT_OPEN, tenant_id=src["tenant_id"], source_id=src["id"]
        )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "circuit.reset",
            f"source {source}",
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={"old_state": old_state, "released": released},
        )
    return CircuitReset(tenant=tenant, source=source, old_state=old_state, state="closed", released=released)


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
) -> BlackoutAdded:
    """A window with no dispatch for a tenant or one of its sources: one-off (starts_at to
    ends_at) or recurring (cron_expr, UTC, each lasting duration_s). Needs orch:quota and a
    reason. Raises ReasonRequired, InvalidInput (bad window or cron), NotFound, Forbidden."""
    why = common.require_reason("blackout", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    now = now or dt.datetime.now(dt.UTC)
    cron_text: str | None = None
    if cron_expr is not None:
        if starts_at is not None or ends_at is not None:
            raise errors.InvalidInput("give a cron expression with a duration, or a start and an end, not both")
        if duration_s is None or duration_s <= 0:
            raise errors.InvalidInput("a recurring blackout needs a duration (seconds, > 0)")
        parsed = cron.parse(cron_expr)
        start, end = cron.window_at(parsed, dt.timedelta(seconds=duration_s), now)
        cron_text = cron.describe(parsed)
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
    with engine.begin() as conn:
        tenant_id = common.tenant_id(conn, tenant, create=True)
        source_id = None if source is None else int(_source(conn, tenant, source)["id"])
        blackout_id = flow.insert_blackout(
            conn,
            tenant_id=tenant_id,
            source_id=source_id,
            starts_at=starts_at if cron_text is None else None,
            ends_at=ends_at if cron_text is None else None,
            cron=cron_text,
            duration_s=duration_s if cron_text is not None else None,
            window_start=start,
            window_end=end,
            reason=why,
            ticket=ticket,
            actor=principal.subject,
        )
        if cron_text is not None:
            result = BlackoutAdded(
                blackout_id, tenant, source, start.isoformat(), end.isoformat(), cron=cron_text, duration_s=duration_s
            )
        else:
            result = BlackoutAdded(
                blackout_id,
                tenant,
                source,
                start.isoformat(),
                end.isoformat(),
                starts_at=start.isoformat(),
                ends_at=end.isoformat(),
            )
        details = {
            k: v
            for k, v in (
                ("cron", result.cron),
                ("duration_s", result.duration_s),
                ("starts_at", result.starts_at),
                ("ends_at", result.ends_at),
            )
            if v is not None
        }
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "blackout.add",
            f"blackout {blackout_id} ({_scope_label(source, None)})",
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={**details, "window_start": result.window_start, "window_end": result.window_end},
        )
    return result


def remove_blackout(
    engine: sa.Engine, principal: Principal, blackout_id: int, *, reason: str | None, ticket: str | None = None
) -> BlackoutRemoved:
    """Delete a blackout; every job it held may go at once (ready jobs that another blackout
    covers are caught at their next claim). Needs orch:quota and a reason. Raises
    ReasonRequired, NotFound, Forbidden."""
    why = common.require_reason("blackout remove", reason, ticket)
    principal.require(Scope.QUOTA)
    with engine.begin() as conn:
        row = flow.delete_blackout(conn, blackout_id)
        if row is None or (principal.tenants is not None and row["tenant"] not in principal.tenants):
            raise errors.NotFound(f"no blackout {blackout_id}; list them with `orch blackouts list`")
        principal.require(Scope.QUOTA, row["tenant"])
        released = flow.wake_waiting(
            conn, reason=WaitReason.BLACKOUT, tenant_id=row["tenant_id"], source_id=row["source_id"]
        )
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "blackout.remove",
            f"blackout {blackout_id}",
            tenant=row["tenant"],
            reason=why,
            ticket=ticket,
            details={"released": released},
        )
    return BlackoutRemoved(id=blackout_id, tenant=row["tenant"], removed=True, released=released)


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
) -> QuotaChange:
    """Concurrency quota of a tenant's job type; both limits None removes it. Jobs the old
    quota held try again at once. Needs orch:quota and a reason. Raises ReasonRequired,
    InvalidInput, Forbidden."""
    why = common.require_reason("quota", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    for label, value in (("max_active", max_active), ("max_per_hour", max_per_hour)):
        if value is not None and value < 1:
            raise errors.InvalidInput(f"{label} must be at least 1, got {value}")
    with engine.begin() as conn:
        tenant_id = common.tenant_id(conn, tenant, create=True)
        if max_active is None and max_per_hour is None:
            changed = flow.delete_quota(conn, tenant_id=tenant_id, job_type=job_type)
        else:
            flow.upsert_quota(
                conn, tenant_id=tenant_id, job_type=job_type, max_active=max_active, max_per_hour=max_per_hour
            )
            changed = True
        released = flow.wake_waiting(conn, reason=WaitReason.QUOTA, tenant_id=tenant_id, job_type=job_type)
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "quota.set",
            f"job type {job_type}",
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={"max_active": max_active, "max_per_hour": max_per_hour, "released": released},
        )
    return QuotaChange(
        tenant=tenant,
        job_type=job_type,
        changed=changed,
        released=released,
        max_active=max_active,
        max_per_hour=max_per_hour,
    )


def set_backlog_limit(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    limit: int | None,
    policy: str = "refuse",
    reason: str | None,
    ticket: str | None = None,
) -> BacklogLimit:
    """A tenant's backlog limit (waiting jobs; None removes it) and what submit does beyond
    it: refuse (raise Backpressure) or defer (accept the jobs as throttled, backpressure).
    Needs orch:quota and a reason. Raises ReasonRequired, InvalidInput, Forbidden."""
    why = common.require_reason("backlog limit", reason, ticket)
    principal.require(Scope.QUOTA, tenant)
    if policy not in BACKLOG_POLICIES:
        raise errors.InvalidInput(f"backlog policy must be one of {', '.join(BACKLOG_POLICIES)}, got {policy!r}")
    if limit is not None and limit < 1:
        raise errors.InvalidInput(f"backlog limit must be at least 1, got {limit}")
    with engine.begin() as conn:
        tenant_id = common.tenant_id(conn, tenant, create=True)
        flow.set_backlog_limit(conn, tenant_id=tenant_id, limit=limit, policy=policy)
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "backlog.set",
            "tenant",
            tenant=tenant,
            reason=why,
            ticket=ticket,
            details={"limit": limit, "policy": policy},
        )
    return BacklogLimit(tenant=tenant, backlog_limit=limit, backlog_policy=policy)
