"""Reads on the audit log: entries, newest first, and the verification of every hash chain."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.domain.auth import Principal, Scope
from core.ledger import audit
from core.queries.common import plain


def audit_log(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries, newest first. A principal limited to some tenants sees their entries only."""
    principal.require(Scope.READ, tenant)
    tenants: list[str] | None = None
    if tenant is not None:
        tenants = [tenant]
    elif principal.tenants is not None:
        tenants = sorted(principal.tenants)
    return [plain(r) for r in audit.rows(conn, tenants=tenants, action=action, subject=subject, limit=limit)]


def verify_audit(conn: sa.Connection, principal: Principal) -> dict[str, Any]:
    """{"ok", "rows", "chains", "first_bad_id", "chain", "problem"} over every chain: the
    legacy single chain, then each tenant's chain and the chain of actions across tenants."""
    principal.require(Scope.READ)
    v = audit.verify(conn)
    return {
        "ok": v.ok,
        "rows": v.rows,
        "chains": v.chains,
        "first_bad_id": v.first_bad_id,
        "chain": v.chain,
        "problem": v.problem,
    }
