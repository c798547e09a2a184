"""Reads on the webhook notifier (worker/runtime/notifier.py): its backlog, totals and last
error and success, for the console. Deployment-wide (one endpoint for every tenant), so only a
principal who reads every tenant sees it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain.auth import Principal, Scope
from core.ledger import notifier as ledger
from core.queries.common import plain


def webhook_status(conn: sa.Connection, principal: Principal) -> dict[str, Any] | None:
    """The webhook notifier's cursor: `backlog` (events numbered after it), `delivered`,
    `dropped`, `failures` ({reason: count}) and `failed` (their sum), `consecutive_failures`,
    `last_error`(_at), `last_success_at`; None when no notifier ever ran. Raises Forbidden for
    a principal limited to some tenants."""
    principal.require(Scope.READ)
    if principal.tenants is not None:
        raise errors.Forbidden(f"{principal.subject} may not read the webhook notifier: it serves every tenant")
    row = ledger.status(conn, ledger.WEBHOOK)
    if row is None:
        return None
    out = plain(row)
    out["failures"] = {str(k): int(v) for k, v in sorted((row["failures"] or {}).items())}
    out["failed"] = sum(out["failures"].values())
    return out
