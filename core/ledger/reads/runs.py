"""Read statements on DAG runs: lists, one run's jobs and edges, its timeline, the overview."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.ledger.reads import Visible

Row = sa.RowMapping

RUN_FIELDS = """r.id, t.name AS tenant, r.name, r.state, r.attempt, r.jobs_total,
    r.jobs_total - r.jobs_live AS jobs_done,
    r.cancel_requested, r.idempotency_key, r.correlation_id, r.created_by, r.created_at, r.started_at, r.finished_at,
    r.updated_at, extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8 AS duration_s"""


def runs(
    conn: sa.Connection, visible: Visible, *, state: str | None, name: str | None, before: int | None, limit: int
) -> list[Row]:
    """Runs newest first; `name` matches a substring, case-insensitive."""
    where, params = visible.where()
    clauses = [where]
    if state is not None:
        clauses.append("r.state = :state")
        params["state"] = state
    if name is not None:
        clauses.append("r.name ILIKE :name")
        params["name"] = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if before is not None:
        clauses.append("r.id < :before")
        params["before"] = before
    sql = (
        f"SELECT {RUN_FIELDS} FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id"
        f" WHERE {' AND '.join(clauses)} ORDER BY r.id DESC LIMIT :limit"
    )
    return list(conn.execute(sa.text(sql), {**params, "limit": limit}).mappings())


def run(conn: sa.Connection, visible: Visible, run_id: int) -> Row | None:
    where, params = visible.where()
    sql = f"SELECT {RUN_FIELDS} FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id WHERE r.id = :id AND {where}"
    return conn.execute(sa.text(sql), {"id": run_id, **params}).mappings().first()


def _iso(column: str) -> str:
    """A timestamp as ISO 8601 text in UTC, made by the server (cheaper than a datetime per value)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def run_jobs(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    """The current job of every key, with what the views show, as dicts. Times come as ISO
    8601 text; run_s is seconds from the job's first start to its end (or now). One JSON
    document for the lot: 10,000 jobs decode in one C call, not as 10,000 rows."""
    sql = f"""
SELECT coalesce(json_agg(x ORDER BY x.id), '[]') FROM (
SELECT rj.job_id AS id, rj.key, rj.trigger_rule, rj.allow_failure, rj.spawned_by, rj.deps_total,
       rj.deps_ok, rj.deps_failed, rj.deps_skipped,
       j.job_type, j.queue, j.state, j.wait_reason, {_iso("j.not_before")} AS not_before, j.attempt,
       j.max_attempts, j.error_class, j.last_error, j.progress, j.replay_of,
       {_iso("j.started_at")} AS started_at, {_iso("j.finished_at")} AS finished_at,
       {_iso("f.at")} AS first_started_at,
       extract(epoch FROM coalesce(j.finished_at, now()) - f.at)::float8 AS run_s
FROM run_jobs AS rj
JOIN jobs AS j ON j.id = rj.job_id
-- When it first ran: its start, unless it ran more than once (then from its history).
CROSS JOIN LATERAL (
    SELECT CASE WHEN j.attempt <= 1 THEN j.started_at
                ELSE (SELECT min(h.at) FROM job_history AS h WHERE h.job_id = j.id AND h.to_state = 'running')
           END AS at
) AS f
WHERE rj.run_id = :run_id AND rj.current
) AS x"""
    rows: list[dict[str, Any]] = conn.execute(sa.text(sql), {"run_id": run_id}).scalar_one()
    return rows


def run_edges(conn: sa.Connection, run_id: int) -> list[tuple[int, int]]:
    """Every edge of the run, superseded jobs' too (callers keep those between current jobs).
    As two arrays in one row: 20,000 edges decode in C instead of as 20,000 rows."""
    sql = "SELECT array_agg(e.parent_id), array_agg(e.child_id) FROM dag_edges AS e WHERE e.run_id = :run_id"
    parents, children = conn.execute(sa.text(sql), {"run_id": run_id}).one()
    return list(zip(parents or (), children or (), strict=True))


def run_history(conn: sa.Connection, run_id: int, limit: int) -> list[Row]:
    """Transitions of the run's current jobs in order (the Gantt's segments)."""
    sql = """
SELECT h.job_id, h.from_state, h.to_state, h.event, h.at, h.attempt, h.wait_reason
FROM run_jobs AS rj JOIN job_history AS h ON h.job_id = rj.job_id
WHERE rj.run_id = :run_id AND rj.current
ORDER BY h.job_id, h.id
LIMIT :limit"""
    return list(conn.execute(sa.text(sql), {"run_id": run_id, "limit": limit}).mappings())


def overview(conn: sa.Connection, visible: Visible) -> Row:
    """Running runs, runs failed in the last hour, p95 duration of runs ended in the last day."""
    where, params = visible.where()
    sql = f"""
SELECT
    (SELECT count(*) FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
      WHERE r.state = 'running' AND {where}) AS running,
    (SELECT count(*) FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
      WHERE r.finished_at > now() - interval '1 hour' AND r.state = 'failed' AND {where}) AS failed_1h,
    (SELECT count(*) FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
      WHERE r.finished_at > now() - interval '1 day' AND {where}) AS finished_24h,
    (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM r.finished_at - r.started_at))
       FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
      WHERE r.finished_at > now() - interval '1 day' AND {where}) AS p95_duration_s"""
    row = conn.execute(sa.text(sql), params).mappings().first()
    assert row is not None
    return row
