"""Schedules: add, pause, resume, remove and trigger (scope orch:operate, a reason, audited).
The scheduler's pass fires them (core.control.firing)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.control import common, firing
from core.control.common import Doorbell, append_audit
from core.control.targets import Target, check_target
from core.domain import errors, redaction
from core.domain import schedules as sched
from core.domain.auth import Principal, Scope
from core.domain.schedules import Catchup, Overlap
from core.ledger import schedules as ledger


@dataclass(frozen=True)
class ScheduleSpec:
    tenant: str
    name: str
    target: Target
    cron: str | None = None
    every: dt.timedelta | None = None
    timezone: str = "UTC"
    overlap: str = Overlap.SKIP.value
    catchup: str = Catchup.LATEST.value
    catchup_window: dt.timedelta = sched.DEFAULT_CATCHUP_WINDOW
    max_catchup: int = sched.DEFAULT_MAX_CATCHUP
    start: dt.datetime | None = None
    end: dt.datetime | None = None


@dataclass(frozen=True)
class ScheduleAdded:
    id: int
    name: str
    tenant: str
    trigger: str
    next_fire_at: dt.datetime | None


@dataclass(frozen=True)
class ScheduleChange:
    name: str
    tenant: str
    action: str
    paused: bool
    next_fire_at: dt.datetime | None
    #: Ticks a change fired or recorded, by status (resume --catchup, trigger).
    ticks: dict[str, int]
    job_id: int | None = None
    run_id: int | None = None


def _aware(t: dt.datetime | None, what: str) -> dt.datetime | None:
    if t is None:
        return None
    if t.tzinfo is None:
        raise errors.InvalidInput(f"{what} must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    return t.astimezone(dt.UTC)


def add_schedule(
    engine: sa.Engine, principal: Principal, spec: ScheduleSpec, *, reason: str | None, max_jobs: int = 10_000
) -> ScheduleAdded:
    """Store a schedule. Its first tick is the first after its start (a start in the past is
    downtime: the catch-up policy handles the ticks since) or after now. Raises
    ReasonRequired, InvalidInput (bad cron, zone, interval, policy, range, name taken),
    UnknownJobType, NotFound (a source), Forbidden. Nothing is written on error."""
    common.require_reason("schedules add", reason, None)
    common.check_tenant(spec.tenant)
    principal.require(Scope.OPERATE, spec.tenant)
    sched.check_name(spec.name)
    overlap = sched.parse_enum(Overlap, spec.overlap, "overlap policy")
    catchup = sched.parse_enum(Catchup, spec.catchup, "catch-up policy")
    if not dt.timedelta(minutes=1) <= spec.catchup_window <= dt.timedelta(days=366):
        raise errors.InvalidInput("--catchup-window must be between 1m and 366d")
    if not 0 <= spec.max_catchup <= 10_000:
        raise errors.InvalidInput("--max-catchup must be between 0 and 10000")
    start, end = _aware(spec.start, "--start"), _aware(spec.end, "--end")
    now = dt.datetime.now(dt.UTC)
    if start is not None and end is not None and start >= end:
        raise errors.InvalidInput("--start must be before --end")
    if end is not None and end <= now:
        raise errors.InvalidInput(f"--end {end.isoformat()} is in the past: the schedule would never fire")
    trigger = sched.Trigger.of(cron_expr=spec.cron, every=spec.every, tz=spec.timezone, anchor=start)
    first = firing.next_fire(trigger, (start - firing.EPS) if start is not None else now, end)
    if first is None:
        raise errors.InvalidInput("the schedule never fires between its start and its end")
    with engine.begin() as conn:
        source_id = check_target(conn, spec.target, spec.tenant, max_jobs=max_jobs)
        tenant_id = common.tenant_id(conn, spec.tenant, create=True)
        stream_id = ledger.ensure_stream(
            conn,
            tenant_id=tenant_id,
            source_id=source_id,
            job_type=spec.target.stream_type(),
            digest=spec.target.digest(),
            origin=trigger.prev_before(first),
            live=True,
        )
        schedule_id = ledger.insert_schedule(
            conn,
            tenant_id=tenant_id,
            name=spec.name,
            cron=None if trigger.cron is None else trigger.cron.expr,
            every_s=None if spec.every is None else int(spec.every.total_seconds()),
            timezone=spec.timezone,
            target_kind=spec.target.kind,
            target=spec.target.doc(),
            stream_id=stream_id,
            overlap=overlap.value,
            catchup=catchup.value,
            catchup_window_s=int(spec.catchup_window.total_seconds()),
            max_catchup=spec.max_catchup,
            start_at=start,
            end_at=end,
            next_fire_at=first,
            actor=principal.subject,
        )
        if schedule_id is None:
            raise errors.InvalidInput(
                f"tenant {spec.tenant!r} has a schedule named {spec.name!r} already; "
                "remove it first or pick another name"
            )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            "schedule.add",
            f"schedule {spec.name}",
            tenant=spec.tenant,
            reason=reason,
            details={
                "id": schedule_id,
                "trigger": trigger.describe(),
                "timezone": spec.timezone,
                "target": redaction.redact(spec.target.doc()),
                "overlap": overlap.value,
                "catchup": catchup.value,
            },
        )
    return ScheduleAdded(schedule_id, spec.name, spec.tenant, trigger.describe(), first)


def _locked(conn: sa.Connection, principal: Principal, tenant: str, name: str) -> Any:
    common.check_tenant(tenant)
    principal.require(Scope.OPERATE, tenant)
    row = ledger.lock_schedule(conn, tenant, name)
    if row is None:
        raise errors.NotFound(f"tenant {tenant!r} has no schedule {name!r}; list them with `orch schedules list`")
    return row


def _audit(conn: sa.Connection, principal: Principal, row: Any, action: str, reason: str, **details: Any) -> None:
    append_audit(
        conn,
        principal,
        Scope.OPERATE,
        f"schedule.{action}",
        f"schedule {row['name']}",
        tenant=row["tenant"],
        reason=reason,
        details={"id": row["id"], **details},
    )


def pause_schedule(
    engine: sa.Engine, principal: Principal, tenant: str, name: str, *, reason: str | None
) -> ScheduleChange:
    """Ticks from now on are recorded `paused`. Raises ReasonRequired, NotFound, Forbidden."""
    why = common.require_reason("schedules pause", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, tenant, name)
        if not row["paused"]:
            ledger.set_schedule_paused(conn, row["id"], True)
            _audit(conn, principal, row, "pause", why)
    return ScheduleChange(name, tenant, "pause", True, row["next_fire_at"], {})


def resume_schedule(
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    name: str,
    *,
    reason: str | None,
    catchup: bool = False,
    doorbell: Doorbell,
    max_jobs: int = 10_000,
) -> ScheduleChange:
    """Ticks fire again from the next one on; the ticks recorded `paused` stay so, unless
    `catchup`: then they go through the schedule's catch-up and overlap policies. Raises
    ReasonRequired, NotFound, Forbidden."""
    why = common.require_reason("schedules resume", reason, None)
    counts: dict[str, int] = {}
    result = firing.PassResult()
    with engine.begin() as conn:
        row = _locked(conn, principal, tenant, name)
        if row["paused"]:
            # From the pause, or from the first tick it had not recorded when paused (the
            # scheduler may have been down before): record_paused records those too.
            since = (
                min(t for t in (row["paused_at"], row["next_fire_at"]) if t is not None) if row["paused_at"] else None
            )
            firing.record_paused(conn, row)
            ledger.set_schedule_paused(conn, row["id"], False)
            row = ledger.lock_schedule(conn, tenant, name)
            assert row is not None  # locked above, in this transaction
            if catchup and since is not None:
                ticks = ledger.paused_ticks(conn, row["id"], since, sched.MAX_LATE_TICKS)
                result = firing.catch_up_paused(conn, principal, row, ticks, max_jobs=max_jobs)
                counts = dict(result.counts)
            _audit(conn, principal, row, "resume", why, catchup=catchup, ticks=counts)
    firing.ring_and_cancel(engine, principal, doorbell, result)
    return ScheduleChange(name, tenant, "resume", False, row["next_fire_at"], counts)


def remove_schedule(
    engine: sa.Engine, principal: Principal, tenant: str, name: str, *, reason: str | None
) -> ScheduleChange:
    """The schedule stops; its ticks and windows stay on record (the name is free again)."""
    why = common.require_reason("schedules remove", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, tenant, name)
        ledger.remove_schedule(conn, row["id"])
        _audit(conn, principal, row, "remove", why)
    return ScheduleChange(name, tenant, "remove", bool(row["paused"]), None, {})


def trigger_schedule(
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    name: str,
    *,
    reason: str | None,
    doorbell: Doorbell,
    max_jobs: int = 10_000,
) -> ScheduleChange:
    """Fire once now (a manual tick; paused or not). Raises ReasonRequired, NotFound,
    Forbidden, InvalidInput (its work could not be created)."""
    why = common.require_reason("schedules trigger", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, tenant, name)
        fired, result = firing.fire_now(conn, principal, row, max_jobs=max_jobs)
        _audit(conn, principal, row, "trigger", why, job_id=fired.job_id, run_id=fired.run_id)
    firing.ring_and_cancel(engine, principal, doorbell, result)
    return ScheduleChange(
        name, tenant, "trigger", bool(row["paused"]), row["next_fire_at"], {"fired": 1}, fired.job_id, fired.run_id
    )


def backfill_missed(
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    name: str,
    *,
    reason: str | None,
    ticket: str | None,
    max_active: int = 2,
    pause_above: int = 1000,
    dry_run: bool = False,
    max_jobs: int = 10_000,
) -> Any:
    """Turn a schedule's missed ticks (not yet backfilled) into one backfill of their data
    intervals. Needs orch:backfill, a reason and a ticket. Raises as create_backfill does,
    and InvalidInput when nothing was missed."""
    from core.control.backfills import BackfillSpec, create_backfill

    common.require_reason("schedules backfill-missed", reason, ticket, ticket_required=True)
    common.check_tenant(tenant)
    principal.require(Scope.BACKFILL, tenant)
    with engine.connect() as conn:
        row = ledger.lock_schedule(conn, tenant, name)
        if row is None:
            raise errors.NotFound(f"tenant {tenant!r} has no schedule {name!r}; list them with `orch schedules list`")
        missed = ledger.missed_ticks(conn, int(row["id"]), 100_000)
        conn.rollback()
    if not missed:
        raise errors.InvalidInput(f"schedule {name!r} has no missed ticks to backfill")
    spans = [(t["interval_start"], t["scheduled_for"]) for t in missed]
    spec = BackfillSpec(
        tenant=tenant,
        target=Target.load(row["target_kind"], row["target"]),
        start=spans[0][0],
        end=spans[-1][1],
        window=None,
        max_active=max_active,
        pause_above=pause_above,
        spans=spans,
        schedule_id=int(row["id"]),
    )
    return create_backfill(engine, principal, spec, reason=reason, ticket=ticket, dry_run=dry_run, max_jobs=max_jobs)
