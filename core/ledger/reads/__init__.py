"""Read models' SQL: plain statements returning plain rows, for core.queries. Every statement
is limited to the tenants a `Visible` names; the caller checks the principal's right to see
them. Functions take a Connection and never write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Visible:
    """The tenants a read may return rows of: `tenant` (one, or None for any) within
    `tenants` (a principal's set, or None for every tenant)."""

    tenant: str | None = None
    tenants: Sequence[str] | None = None

    def where(self, alias: str = "t") -> tuple[str, dict[str, Any]]:
        """An SQL condition on `alias`.name and its parameters ("true" when unrestricted)."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.tenant is not None:
            clauses.append(f"{alias}.name = :tenant")
            params["tenant"] = self.tenant
        if self.tenants is not None:
            clauses.append(f"{alias}.name = ANY(:visible)")
            params["visible"] = sorted(self.tenants)
        return " AND ".join(clauses) or "true", params


def custom_plans(conn: sa.Connection) -> None:
    """Plan this transaction's statements for their parameters. The CLI's and the
    scheduler's engines keep generic plans (core.ledger.db.create_engine), which cannot see
    that a time bound or a rollup mark leaves a few rows of an index: a read whose cost turns
    on that asks for custom plans first (set_config(..., true): until the transaction ends)."""
    conn.execute(sa.text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))


def rollup_mark(conn: sa.Connection) -> Any:
    """rollup_marks.until of the finished-job rollups (core/ledger/rollups.py), with custom
    plans for the rest of the transaction: reads pass it on as the lower bound of their scan
    of the jobs finished since, and check it again in their own statement."""
    sql = """SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                    coalesce((SELECT until FROM rollup_marks WHERE name = 'job_finish'), timestamptz 'epoch')"""
    return conn.execute(sa.text(sql)).one()[1]


#: The rollup mark inside a read's own statement (its snapshot agrees with the rollups read).
MARK_SQL = "(SELECT coalesce((SELECT until FROM rollup_marks WHERE name = 'job_finish'), timestamptz 'epoch') AS until)"
