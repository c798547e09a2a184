"""Flow-control rows: sources and their buckets and circuits, pauses, blackouts, quotas,
backlog limits, and the statements that let waiting jobs go when a hold is lifted.

One function per statement of core/ledger/sql/statements/flow.sql, named alike; each takes
a Connection and never commits. Admission itself (orch_admit) and outcome feedback
(orch_record_outcomes) are database functions that the claim and writer statements call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping


def _one(conn: sa.Connection, statement: sa.TextClause, params: Mapping[str, Any]) -> Row | None:
    return conn.execute(statement, dict(params)).mappings().first()


def _all(conn: sa.Connection, statement: sa.TextClause, params: Mapping[str, Any]) -> list[Row]:
    return list(conn.execute(statement, dict(params)).mappings().all())


# -- sources and buckets ---------------------------------------------------------------


def upsert_bucket(
    conn: sa.Connection, *, tenant_id: int, host: str, rate: float, capacity: float
) -> tuple[int, float | None]:
    """The bucket's id and its rate before (None for a new bucket)."""
    row = _one(conn, stmt("upsert_bucket"), {"tenant_id": tenant_id, "host": host, "rate": rate, "capacity": capacity})
    assert row is not None
    return int(row["id"]), None if row["old_rate"] is None else float(row["old_rate"])


def find_bucket(conn: sa.Connection, *, tenant_id: int, host: str) -> int | None:
    row = _one(conn, stmt("find_bucket"), {"tenant_id": tenant_id, "host": host})
    return None if row is None else int(row["id"])


def insert_source(
    conn: sa.Connection,
    *,
    tenant_id: int,
    name: str,
    host: str,
    bucket_id: int | None,
    max_active: int | None,
    allow_private: bool,
) -> int | None:
    """The new source's id, or None when the tenant already has a source of that name."""
    params = {
        "tenant_id": tenant_id,
        "name": name,
        "host": host,
        "bucket_id": bucket_id,
        "max_active": max_active,
        "allow_private": allow_private,
    }
    row = _one(conn, stmt("insert_source"), params)
    return None if row is None else int(row["id"])


def update_source(
    conn: sa.Connection,
    *,
    source_id: int,
    host: str,
    bucket_id: int | None,
    max_active: int | None,
    allow_private: bool,
) -> None:
    params = {
        "id": source_id,
        "host": host,
        "bucket_id": bucket_id,
        "max_active": max_active,
        "allow_private": allow_private,
    }
    conn.execute(stmt("update_source"), params)


def source_ids(conn: sa.Connection, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """{(tenant, source name): source id} for the pairs that exist."""
    rows = _all(conn, stmt("source_ids"), {"t": [t for t, _ in wanted], "n": [n for _, n in wanted]})
    return {(r["tenant"], r["name"]): int(r["id"]) for r in rows}


def source_policy(conn: sa.Connection, source_id: int) -> Row | None:
    """(id, name, host, allow_private) of a source: what its jobs may fetch."""
    return _one(conn, stmt("source_policy"), {"id": source_id})


def lock_source(conn: sa.Connection, *, tenant: str, name: str) -> Row | None:
    return _one(conn, stmt("lock_source"), {"tenant": tenant, "name": name})


def throttle_bucket(conn: sa.Connection, *, bucket_id: int, rate: float, capacity: float | None) -> Row | None:
    return _one(conn, stmt("throttle_bucket"), {"id": bucket_id, "rate": rate, "capacity": capacity})


def insert_throttle(
    conn: sa.Connection,
    *,
    bucket_id: int,
    tenant_id: int,
    old_rate: float | None,
    new_rate: float,
    reason: str,
    actor: str,
) -> None:
    conn.execute(
        stmt("insert_throttle"),
        {
            "bucket_id": bucket_id,
            "tenant_id": tenant_id,
            "old_rate": old_rate,
            "new_rate": new_rate,
            "reason": reason,
            "actor": actor,
        },
    )


def reset_circuit(conn: sa.Connection, *, source_id: int) -> str | None:
    row = _one(conn, stmt("reset_circuit"), {"id": source_id})
    return None if row is None else str(row["old_state"])


# -- pauses ------------------------------------------------------------------------------


def insert_pause(
    conn: sa.Connection,
    *,
    tenant_id: int,
    source_id: int | None,
    job_type: str | None,
    reason: str,
    ticket: str | None,
    actor: str,
) -> bool:
    """False when that scope was already paused."""
    params = {
        "tenant_id": tenant_id,
        "source_id": source_id,
        "job_type": job_type,
        "reason": reason,
        "ticket": ticket,
        "actor": actor,
    }
    return _one(conn, stmt("insert_pause"), params) is not None


def delete_pause(conn: sa.Connection, *, tenant_id: int, source_id: int | None, job_type: str | None) -> bool:
    """False when that scope was not paused."""
    params = {"tenant_id": tenant_id, "source_id": source_id, "job_type": job_type}
    return _one(conn, stmt("delete_pause"), params) is not None


# -- letting waiting jobs go -------------------------------------------------------------


def wake_waiting(
    conn: sa.Connection,
    *,
    reason: str,
    tenant_id: int,
    source_id: int | None = None,
    job_type: str | None = None,
) -> int:
    """Every job held for `reason` in the scope may try again now (in the caller's
    transaction, however many); returns how many."""
    params = {"reason": str(reason), "tenant_id": tenant_id, "source_id": source_id, "job_type": job_type}
    return int(conn.execute(stmt("wake_waiting"), params).scalar_one())


# -- blackouts ---------------------------------------------------------------------------


def insert_blackout(conn: sa.Connection, **params: Any) -> int:
    row = _one(conn, stmt("insert_blackout"), params)
    assert row is not None
    return int(row["id"])


def delete_blackout(conn: sa.Connection, blackout_id: int) -> Row | None:
    return _one(conn, stmt("delete_blackout"), {"id": blackout_id})


def due_cron_blackouts(conn: sa.Connection, *, limit: int) -> list[Row]:
    return _all(conn, stmt("due_cron_blackouts"), {"limit": limit})


def move_blackout_window(conn: sa.Connection, blackout_id: int, start: dt.datetime, end: dt.datetime) -> None:
    conn.execute(stmt("move_blackout_window"), {"id": blackout_id, "window_start": start, "window_end": end})


# -- quotas and backlog limits ------------------------------------------------------------


def upsert_quota(
    conn: sa.Connection, *, tenant_id: int, job_type: str, max_active: int | None, max_per_hour: int | None
) -> int:
    params = {"tenant_id": tenant_id, "job_type": job_type, "max_active": max_active, "max_per_hour": max_per_hour}
    row = _one(conn, stmt("upsert_quota"), params)
    assert row is not None
    return int(row["id"])


def delete_quota(conn: sa.Connection, *, tenant_id: int, job_type: str) -> bool:
    return _one(conn, stmt("delete_quota"), {"tenant_id": tenant_id, "job_type": job_type}) is not None


def set_backlog_limit(conn: sa.Connection, *, tenant_id: int, limit: int | None, policy: str) -> None:
    conn.execute(stmt("set_backlog_limit"), {"tenant_id": tenant_id, "limit": limit, "policy": policy})


def backlog_of(conn: sa.Connection, tenant_id: int) -> Row | None:
    """(backlog_limit, backlog_policy, backlog) of a tenant with a limit, else None."""
    return _one(conn, stmt("backlog_of"), {"tenant_id": tenant_id})


def release_backpressure(conn: sa.Connection, *, limit: int) -> int:
    return len(conn.execute(stmt("release_backpressure"), {"limit": limit}).all())


def prune_quota_starts(conn: sa.Connection) -> None:
    conn.execute(stmt("prune_quota_starts"))


def prune_reservations(conn: sa.Connection) -> None:
    """Reservations of room (orch_admit) that expired and that no claim deleted."""
    conn.execute(stmt("prune_reservations"))


# -- metrics, read at scrape time --------------------------------------------------------
# Each statement reads one small table (a row per bucket, source or quota) or the partial
# indexes of throttled / active jobs; nothing scans the whole ledger.


def metrics_buckets(conn: sa.Connection) -> list[Row]:
    return _all(conn, stmt("metrics_buckets"), {})


def metrics_circuits(conn: sa.Connection) -> list[Row]:
    return _all(conn, stmt("metrics_circuits"), {})


def metrics_quotas(conn: sa.Connection) -> list[Row]:
    return _all(conn, stmt("metrics_quotas"), {})


def metrics_waiting(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """(tenant, wait_reason, throttled jobs)."""
    return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(stmt("metrics_waiting"))]
