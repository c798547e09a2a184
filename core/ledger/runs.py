"""DAG run statements: one function per statement of core/ledger/sql/statements/runs.sql
(named alike). Every function takes a Connection and never commits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping


@dataclass(frozen=True, slots=True)
class NewRunJob:
    job_id: int
    run_id: int
    key: str
    trigger_rule: str
    allow_failure: bool
    spawned_by: int | None
    deps_total: int
    deps_ok: int = 0
    deps_failed: int = 0
    deps_skipped: int = 0


def insert_run(
    conn: sa.Connection,
    *,
    tenant_id: int,
    name: str,
    actor: str,
    idempotency_key: str | None,
    digest: str,
    max_jobs: int,
    jobs: int,
    correlation_id: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> int | None:
    """The new run's id; None when the idempotency key exists already."""
    row = conn.execute(
        stmt("insert_run"),
        {
            "tenant_id": tenant_id,
            "name": name,
            "actor": actor,
            "idempotency_key": idempotency_key,
            "digest": digest,
            "max_jobs": max_jobs,
            "jobs": jobs,
            "correlation_id": correlation_id,
            "params": json.dumps(dict(params or {})),
        },
    ).first()
    return None if row is None else int(row[0])


def find_run_by_key(conn: sa.Connection, tenant_id: int, idempotency_key: str) -> Row | None:
    return (
        conn.execute(stmt("find_run_by_key"), {"tenant_id": tenant_id, "idempotency_key": idempotency_key})
        .mappings()
        .first()
    )


def insert_run_jobs(conn: sa.Connection, rows: Sequence[NewRunJob]) -> None:
    if not rows:
        return
    data = json.dumps(
        [
            [
                r.job_id,
                r.run_id,
                r.key,
                r.trigger_rule,
                r.allow_failure,
                r.spawned_by,
                r.deps_total,
                r.deps_ok,
                r.deps_failed,
                r.deps_skipped,
            ]
            for r in rows
        ],
        separators=(",", ":"),
    )
    conn.execute(stmt("insert_run_jobs"), {"rows": data})


def insert_edges(conn: sa.Connection, run_id: int, edges: Sequence[tuple[int, int]]) -> None:
    if edges:
        conn.execute(
            stmt("insert_edges"), {"run_id": run_id, "parent": [p for p, _ in edges], "child": [c for _, c in edges]}
        )


def lock_run(conn: sa.Connection, run_id: int) -> Row | None:
    return conn.execute(stmt("lock_run"), {"id": run_id}).mappings().first()


def run_row(conn: sa.Connection, run_id: int) -> Row | None:
    return conn.execute(stmt("run_row"), {"id": run_id}).mappings().first()


def run_job_rows(conn: sa.Connection, run_id: int) -> list[Row]:
    return list(conn.execute(stmt("run_job_rows"), {"run_id": run_id}).mappings())


def lock_run_jobs(conn: sa.Connection, run_id: int) -> list[Row]:
    return list(conn.execute(stmt("lock_run_jobs"), {"run_id": run_id}).mappings())


def request_run_cancel(conn: sa.Connection, run_id: int) -> None:
    conn.execute(stmt("request_run_cancel"), {"id": run_id})


def request_cancel_many(conn: sa.Connection, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    return int(conn.execute(stmt("request_cancel_many"), {"ids": list(ids)}).rowcount)


def supersede_run_jobs(conn: sa.Connection, ids: Sequence[int]) -> None:
    if ids:
        conn.execute(stmt("supersede_run_jobs"), {"ids": list(ids)})


def restart_run(conn: sa.Connection, run_id: int, *, superseded: int, added: int) -> int:
    """Back to running, one attempt later; returns the new attempt number."""
    return int(conn.execute(stmt("restart_run"), {"id": run_id, "superseded": superseded, "added": added}).scalar_one())


def grow_run(conn: sa.Connection, run_id: int, added: int) -> int | None:
    """Count `added` spawned jobs in; the new total, or None (not running, canceled or full)."""
    value = conn.execute(stmt("grow_run"), {"id": run_id, "added": added}).scalar()
    return None if value is None else int(value)


def lock_spawner(conn: sa.Connection, job_id: int, lease_id: Any) -> Row | None:
    return conn.execute(stmt("lock_spawner"), {"id": job_id, "lease_id": lease_id}).mappings().first()


def pending_children(conn: sa.Connection, job_id: int) -> list[int]:
    return [int(r[0]) for r in conn.execute(stmt("pending_children"), {"id": job_id})]


def add_parents(conn: sa.Connection, ids: Sequence[int], added: int) -> None:
    if ids and added:
        conn.execute(stmt("add_parents"), {"ids": list(ids), "added": added})


def advance_runs(
    conn: sa.Connection, *, done: Sequence[int] = (), states: Sequence[str] = (), check: Sequence[int] = (), actor: str
) -> None:
    """orch_dag_advance: children of `done` jobs learn how they ended; pending `check` jobs
    whose parents decide them move on; runs whose jobs all ended get their state."""
    conn.execute(
        stmt("advance_runs"), {"done": list(done), "states": list(states), "check": list(check), "actor": actor}
    )


def ring_unrung(conn: sa.Connection, run_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(job id, queue) of released jobs of these runs nobody rang yet, taken for ringing."""
    if not run_ids:
        return []
    return [(int(i), q) for i, q in conn.execute(stmt("ring_unrung"), {"runs": sorted(set(run_ids))})]


def ring_stale_unrung(conn: sa.Connection, *, grace_s: float, limit: int) -> list[tuple[int, str]]:
    return [(int(i), q) for i, q in conn.execute(stmt("ring_stale_unrung"), {"grace_s": grace_s, "limit": limit})]


def parents_of(conn: sa.Connection, job_id: int) -> list[Row]:
    return list(conn.execute(stmt("parents_of"), {"id": job_id}).mappings())


def artifact_data(conn: sa.Connection, job_id: int, artifact_id: int) -> bytes | None:
    value = conn.execute(stmt("artifact_data"), {"job_id": job_id, "artifact_id": artifact_id}).scalar()
    return None if value is None else bytes(value)


def run_finished_since(conn: sa.Connection, after: dt.datetime, after_id: int, limit: int) -> list[Row]:
    return list(
        conn.execute(stmt("run_finished_since"), {"after": after, "after_id": after_id, "limit": limit}).mappings()
    )


def run_counters(conn: sa.Connection) -> list[Row]:
    return list(conn.execute(stmt("run_counters")).mappings())


def set_run_window(conn: sa.Connection, run_id: int, window_id: int) -> None:
    conn.execute(stmt("set_run_window"), {"run_id": run_id, "window_id": window_id})
