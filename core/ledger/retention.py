"""Retention statements: one function per statement of core/ledger/sql/statements/retention.sql
(named alike). Every function takes a Connection and never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping


def retention_groups(conn: sa.Connection, default_days: int) -> list[Row]:
    return list(conn.execute(stmt("retention_groups"), {"default_days": default_days}).mappings())


def prunable_jobs(conn: sa.Connection, tenant_id: int, days: int, limit: int) -> list[int]:
    params = {"tenant_id": tenant_id, "days": days, "limit": limit}
    return [int(r[0]) for r in conn.execute(stmt("prunable_jobs"), params)]


def prunable_runs(conn: sa.Connection, tenant_id: int, days: int, limit: int) -> list[int]:
    params = {"tenant_id": tenant_id, "days": days, "limit": limit}
    return [int(r[0]) for r in conn.execute(stmt("prunable_runs"), params)]


def run_job_ids(conn: sa.Connection, runs: Sequence[int]) -> list[int]:
    if not runs:
        return []
    return [int(r[0]) for r in conn.execute(stmt("run_job_ids"), {"runs": list(runs)})]


def delete_jobs(conn: sa.Connection, ids: Sequence[int]) -> dict[str, int]:
    """Delete jobs with their history, logs, artifacts, results and DAG rows; counts by kind."""
    if not ids:
        return {}
    row = conn.execute(stmt("delete_jobs"), {"ids": list(ids)}).mappings().one()
    return {k: int(v) for k, v in row.items()}


def delete_runs(conn: sa.Connection, runs: Sequence[int]) -> int:
    if not runs:
        return 0
    return int(conn.execute(stmt("delete_runs"), {"runs": list(runs)}).scalar_one())


def prune_events(conn: sa.Connection, days: int, limit: int) -> int:
    return int(conn.execute(stmt("prune_events"), {"days": days, "limit": limit}).scalar_one())


def count_pruned(conn: sa.Connection, removed: Mapping[str, int]) -> None:
    kinds = sorted(k for k, n in removed.items() if n)
    if kinds:
        conn.execute(stmt("count_pruned"), {"kind": kinds, "n": [removed[k] for k in kinds]})


def pruned_totals(conn: sa.Connection) -> dict[str, int]:
    return {r["kind"]: int(r["removed"]) for r in conn.execute(stmt("pruned_totals")).mappings()}


def count_old_events(conn: sa.Connection, days: int) -> int:
    return int(conn.execute(stmt("count_old_events"), {"days": days}).scalar_one())


def set_tenant_retention(conn: sa.Connection, tenant: str, days: int | None) -> bool:
    return conn.execute(stmt("set_tenant_retention"), {"tenant": tenant, "days": days}).first() is not None
