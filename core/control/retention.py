"""Retention: finished work older than its tenant's retention (ORCH_RETENTION_DAYS, default
30; `tenants.retention_days` overrides it) is removed in bounded batches, each its own
transaction that takes only rows that have ended (claims never wait on it).

What pruning never does: remove a dead letter or its history (an operator removes those);
remove part of a run (a run goes as a unit, once every job of it ended before the cutoff
and none is dead-lettered); leave a dangling replay_of (a replayed job stays while its
replay does); touch event-time windows, watermarks or the audit log. The outbox keeps its
own window (ORCH_OUTBOX_RETENTION_DAYS). Schedule ticks are pruned by the scheduler's tidy
step. The scheduler runs `prune` every minute; `orch ledger prune` runs it by hand.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.control.common import append_audit
from core.domain import errors
from core.domain.auth import Principal, Scope
from core.ledger import retention as ledger

KINDS = ("jobs", "runs", "history", "logs", "artifacts", "results", "events")


@dataclass
class PruneResult:
    removed: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False
    #: False when the pass stopped at its time budget with more left to prune.
    complete: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A dry run counts the jobs, runs and events it would remove (not their history,
        logs, artifacts and results: those are null)."""
        counted = ("jobs", "runs", "events") if self.dry_run else KINDS
        return {
            "removed": {k: int(self.removed.get(k, 0)) if k in counted else None for k in KINDS},
            "dry_run": self.dry_run,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }


def prune(
    engine: sa.Engine,
    *,
    default_days: int,
    outbox_days: int,
    batch: int = 1000,
    run_batch: int = 20,
    budget_s: float | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Remove (or, with dry_run, count without removing) what retention allows, batch by batch
    until nothing is left or `budget_s` has passed."""
    started = time.monotonic()
    out = PruneResult(dry_run=dry_run)
    with engine.connect() as conn:
        groups = [(int(g["id"]), int(g["days"])) for g in ledger.retention_groups(conn, default_days)]
    for tenant_id, days in groups:
        for step in (_prune_runs, _prune_jobs):
            while True:
                if budget_s is not None and time.monotonic() - started > budget_s:
                    out.complete = False
                    out.seconds = time.monotonic() - started
                    return out
                full = step(engine, tenant_id, days, batch, run_batch, out, dry_run)
                if not full or dry_run:
                    break
    if dry_run:
        with engine.connect() as conn:
            out.removed["events"] = ledger.count_old_events(conn, outbox_days)
    else:
        while True:
            with engine.begin() as conn:
                n = ledger.prune_events(conn, outbox_days, batch)
                ledger.count_pruned(conn, {"events": n})
            out.removed["events"] += n
            if n < batch:
                break
    out.seconds = time.monotonic() - started
    return out


def _prune_jobs(
    engine: sa.Engine, tenant_id: int, days: int, batch: int, run_batch: int, out: PruneResult, dry_run: bool
) -> bool:
    if dry_run:
        with engine.connect() as conn:  # read only: ends in a rollback
            out.removed["jobs"] += len(ledger.prunable_jobs(conn, tenant_id, days, 10_000_000))
        return False
    with engine.begin() as conn:
        ids = ledger.prunable_jobs(conn, tenant_id, days, batch)
        removed = ledger.delete_jobs(conn, ids)
        ledger.count_pruned(conn, removed)
    out.removed.update(removed)
    return len(ids) >= batch


def _prune_runs(
    engine: sa.Engine, tenant_id: int, days: int, batch: int, run_batch: int, out: PruneResult, dry_run: bool
) -> bool:
    if dry_run:
        with engine.connect() as conn:
            runs = ledger.prunable_runs(conn, tenant_id, days, 10_000_000)
            out.removed["runs"] += len(runs)
            out.removed["jobs"] += len(ledger.run_job_ids(conn, runs))
        return False
    with engine.begin() as conn:
        runs = ledger.prunable_runs(conn, tenant_id, days, run_batch)
        jobs = ledger.run_job_ids(conn, runs)
        removed = Counter(ledger.delete_jobs(conn, jobs))
        removed["runs"] = ledger.delete_runs(conn, runs)
        ledger.count_pruned(conn, removed)
    out.removed.update(removed)
    return len(runs) >= run_batch


def prune_by_hand(
    engine: sa.Engine,
    principal: Principal,
    *,
    default_days: int,
    outbox_days: int,
    dry_run: bool,
    reason: str | None = None,
) -> PruneResult:
    """`orch ledger prune`: the scheduler's pass, to the end, by an operator of every tenant
    (audited unless a dry run). Raises Forbidden."""
    if principal.tenants is not None or Scope.OPERATE not in principal.scopes:
        raise errors.Forbidden(f"{principal.subject} needs orch:operate on every tenant to prune the ledger")
    result = prune(engine, default_days=default_days, outbox_days=outbox_days, dry_run=dry_run)
    if not dry_run:
        with engine.begin() as conn:
            append_audit(
                conn,
                principal,
                Scope.OPERATE,
                "ledger.prune",
                "ledger",
                tenant=None,
                reason=reason,
                details=result.as_dict(),
            )
    return result


def set_tenant_retention(
    engine: sa.Engine, principal: Principal, tenant: str, days: int | None, *, reason: str | None
) -> None:
    """Keep `tenant`'s finished work `days` days (None: the default, ORCH_RETENTION_DAYS).
    Needs orch:quota for the tenant and a reason; audited. Raises ReasonRequired,
    InvalidInput, NotFound, Forbidden."""
    from core.control import common

    why = common.require_reason("ledger retention", reason, None)
    common.check_tenant(tenant)
    principal.require(Scope.QUOTA, tenant)
    if days is not None and not 1 <= days <= 3650:
        raise errors.InvalidInput(f"--days must be between 1 and 3650, got {days}")
    with engine.begin() as conn:
        if not ledger.set_tenant_retention(conn, tenant, days):
            raise errors.NotFound(f"no tenant {tenant!r}")
        append_audit(
            conn,
            principal,
            Scope.QUOTA,
            "tenant.retention",
            f"tenant {tenant}",
            tenant=tenant,
            reason=why,
            details={"retention_days": days},
        )
