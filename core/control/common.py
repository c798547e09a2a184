"""What every write of core.control shares: input limits, reason checks, the audit append, the
doorbell port and the per-process catalog of job types and tenant ids."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from core.domain import errors
from core.domain.auth import Principal, Scope
from core.domain.jobtypes import JobTypeRow
from core.ledger import audit
from core.ledger import jobs as ledger

log = logging.getLogger("core.control")

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_PRIORITY = 1000
MAX_ATTEMPTS_LIMIT = 100
MAX_REASON = 256
MAX_TICKET = 128


class _Catalog:
    """Per-process caches of job types and tenant ids. Tenants are never renamed or deleted;
    job types are re-read after a short time, and at once on a miss."""

    TTL_S = 5.0

    def __init__(self) -> None:
        self.types: dict[str, JobTypeRow] = {}
        self.types_at = -1e9
        self.tenants: dict[tuple[str, str], int] = {}

    def job_types(self, conn: sa.Connection, wanted: set[str]) -> dict[str, JobTypeRow]:
        now = time.monotonic()
        if now - self.types_at > self.TTL_S or not wanted <= self.types.keys():
            self.types = ledger.job_types(conn)
            self.types_at = now
        return self.types

    def knows_tenant(self, url: str, name: str) -> bool:
        """Whether tenant_ids would answer for `name` without a statement."""
        return (url, name) in self.tenants

    def tenant_ids(self, conn: sa.Connection, url: str, names: set[str]) -> dict[str, int]:
        out = {n: self.tenants[(url, n)] for n in names if (url, n) in self.tenants}
        missing = sorted(names - out.keys())
        if missing:
            for name, tid in ledger.ensure_tenants(conn, missing).items():
                self.tenants[(url, name)] = tid
                out[name] = tid
        return out


catalog = _Catalog()


def forget_cached_catalog() -> None:
    """Drop cached job types and tenant ids (tests that rebuild the ledger call this)."""
    catalog.types.clear()
    catalog.types_at = -1e9
    catalog.tenants.clear()


class Doorbell(Protocol):
    """Tells workers that jobs are ready. Carries ids only; losing a ring loses nothing."""

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        """Ring for (job_id, queue) pairs. May raise; callers log and move on."""


class NoDoorbell:
    """For callers with no broker at hand: the scheduler rings for them within a pass or two."""

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        return None


#: Most doorbells one call rings per queue. A doorbell wakes a worker thread, which then runs
#: ready jobs of its queue one after another until none is left (worker/runtime/actors.py),
#: so a batch of 20,000 jobs needs a few dozen wake-ups, not 20,000 messages; the scheduler
#: keeps this many outstanding while ready jobs wait (docs/adr/0016).
WAKE_UPS = 64


def wake_ups(jobs: Sequence[tuple[int, str]], limit: int = WAKE_UPS) -> list[tuple[int, str]]:
    """At most `limit` of the (job id, queue) doorbells per queue, in order."""
    per: dict[str, int] = {}
    out: list[tuple[int, str]] = []
    for job_id, queue in jobs:
        n = per.get(queue, 0)
        if n < limit:
            per[queue] = n + 1
            out.append((job_id, queue))
    return out


def ring(doorbell: Doorbell, jobs: Sequence[tuple[int, str]]) -> None:
    """Ring after commit, at most WAKE_UPS per queue; a failure is logged (the ledger is the
    truth; the scheduler re-rings)."""
    if not jobs:
        return
    jobs = wake_ups(jobs)
    try:
        doorbell.ring(jobs)
    except Exception as exc:
        log.warning("could not ring %d doorbell(s), the scheduler will: %s", len(jobs), exc)


def check_reason(reason: str | None, ticket: str | None = None) -> None:
    """Raise InvalidInput for a reason or ticket over its length limit."""
    if reason is not None and len(reason) > MAX_REASON:
        raise errors.InvalidInput(f"reason is {len(reason)} characters; at most {MAX_REASON}")
    if ticket is not None and len(ticket) > MAX_TICKET:
        raise errors.InvalidInput(f"ticket is {len(ticket)} characters; at most {MAX_TICKET}")


def require_reason(action: str, reason: str | None, ticket: str | None, *, ticket_required: bool = False) -> str:
    """Operate, quota and backfill actions need a reason (and some a ticket), from any front
    end; returns the reason. Raises ReasonRequired, InvalidInput."""
    check_reason(reason, ticket)
    if reason is None or not reason.strip():
        raise errors.ReasonRequired(f"{action} needs a reason (--reason, at most {MAX_REASON} characters)")
    if ticket_required and (ticket is None or not ticket.strip()):
        raise errors.ReasonRequired(f"{action} needs a ticket (--ticket, at most {MAX_TICKET} characters)")
    return reason


def check_tenant(tenant: str) -> None:
    if not TENANT_RE.match(tenant):
        raise errors.InvalidInput(
            f"tenant {tenant!r} is not a valid name: use letters, digits, '.', '_' or '-' (at most 63)"
        )


def tenant_id(conn: sa.Connection, tenant: str, *, create: bool = False) -> int:
    """The tenant's id, created when `create`. Raises InvalidInput, NotFound."""
    check_tenant(tenant)
    if create:
        return ledger.ensure_tenants(conn, [tenant])[tenant]
    found = ledger.tenant_id(conn, tenant)
    if found is None:
        raise errors.NotFound(f"no tenant {tenant!r}")
    return found


def append_audit(
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
    """One audit row in the caller's transaction, on the tenant's chain (or the chain of
    actions that span tenants when `tenant` is None)."""
    audit.append(
        conn,
        audit_entry(principal, scope, action, target, tenant=tenant, reason=reason, ticket=ticket, details=details),
    )


def audit_entry(
    principal: Principal,
    scope: Scope,
    action: str,
    target: str,
    *,
    tenant: str | None,
    reason: str | None = None,
    ticket: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> audit.AuditEntry:
    """The audit row `principal` acting under `scope` leaves."""
    return audit.AuditEntry(
        subject=principal.subject,
        scopes=[scope.value],
        action=action,
        target=target,
        tenant=tenant,
        reason=reason,
        ticket=ticket,
        details=dict(details or {}),
    )
