"""Read statements on jobs: one job and its timeline, lists, counts and time series."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from core.domain.states import State
from core.ledger.reads import MARK_SQL, Visible, rollup_mark

Row = sa.RowMapping

JOB_FIELDS = """j.id, t.name AS tenant, j.job_type, j.queue, j.priority, j.state, j.wait_reason,
    j.not_before, j.attempt, j.max_attempts, j.error_class, j.last_error, j.payload,
    j.payload_digest, j.idempotency_key, j.lease_owner, j.lease_expires_at, j.heartbeat_at,
    j.progress, j.progress_message, j.cancel_requested, j.correlation_id, j.replay_of, j.run_id,
    j.created_at, j.updated_at, j.started_at, j.finished_at,
    (SELECT s.name FROM sources AS s WHERE s.id = j.source_id) AS source,
    (SELECT r.result FROM job_results AS r WHERE r.job_id = j.id) AS result,
    (SELECT rj.key FROM run_jobs AS rj WHERE rj.job_id = j.id) AS run_key"""

LIST_FIELDS = """j.id, t.name AS tenant, j.job_type, j.queue, j.state, j.attempt, j.max_attempts,
    j.error_class, j.wait_reason, j.not_before, j.created_at, j.updated_at, j.finished_at"""


def job(conn: sa.Connection, visible: Visible, job_id: int) -> Row | None:
    where, params = visible.where()
    return (
        conn.execute(
            sa.text(
                f"SELECT {JOB_FIELDS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.id = :id AND {where}"
            ),
            {"id": job_id, **params},
        )
        .mappings()
        .first()
    )


def job_visible(conn: sa.Connection, visible: Visible, job_id: int) -> bool:
    where, params = visible.where()
    found = conn.execute(
        sa.text(f"SELECT 1 FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.id = :id AND {where}"),
        {"id": job_id, **params},
    ).first()
    return found is not None


def history(conn: sa.Connection, job_id: int) -> list[Row]:
    return list(
        conn.execute(
            sa.text(
                "SELECT from_state, to_state, event, at, actor, reason, attempt FROM job_history"
                " WHERE job_id = :id ORDER BY id"
            ),
            {"id": job_id},
        ).mappings()
    )


def logs(conn: sa.Connection, job_id: int, limit: int) -> list[Row]:
    """The last `limit` log lines, oldest first."""
    rows = conn.execute(
        sa.text("SELECT at, attempt, level, message FROM job_logs WHERE job_id = :id ORDER BY id DESC LIMIT :limit"),
        {"id": job_id, "limit": limit},
    ).mappings()
    return list(reversed(list(rows)))


def artifacts(conn: sa.Connection, job_id: int) -> list[Row]:
    return list(
        conn.execute(
            sa.text(
                "SELECT id, name, media_type, sha256, size_bytes, attempt, created_at FROM artifacts"
                " WHERE job_id = :id ORDER BY id"
            ),
            {"id": job_id},
        ).mappings()
    )


def list_jobs(
    conn: sa.Connection,
    visible: Visible,
    *,
    state: str | None,
    job_type: str | None,
    since_s: float | None,
    limit: int,
) -> list[Row]:
    """Newest first."""
    where, params = visible.where()
    if since_s is not None:
        where += " AND j.created_at > now() - make_interval(secs => :since)"
        params["since"] = since_s
    if state is not None:
        where += " AND j.state = :state"
        params["state"] = state
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    return list(
        conn.execute(
            sa.text(
                f"SELECT {LIST_FIELDS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
                f" WHERE {where} ORDER BY j.id DESC LIMIT :limit"
            ),
            {**params, "limit": limit},
        ).mappings()
    )


#: Job states that never change again (retention aside): counted from job_state_totals and the
#: jobs finished since its mark. Every other state is counted from jobs_tenant_state_idx: live
#: jobs are a few thousand whatever the history, dead letters stay until an operator acts.
COUNTED_STATES = ("succeeded", "canceled")
INDEXED_STATES = tuple(s.value for s in State if s.value not in COUNTED_STATES)


def count_by_state(conn: sa.Connection, visible: Visible) -> dict[str, int]:
    """Jobs per state now, without counting the history (docs/design.md, "Reads on a big
    ledger"): each visible tenant's range of jobs_tenant_state_idx for the states in
    INDEXED_STATES; the totals for COUNTED_STATES plus the jobs that finished since they
    were rolled up."""
    where, params = visible.where()
    hint = rollup_mark(conn)
    rows = conn.execute(
        sa.text(
            f"""WITH m AS {MARK_SQL}, seen AS (SELECT t.id FROM tenants t WHERE {where})
               SELECT x.state, count(*) AS n FROM seen CROSS JOIN LATERAL (
                   SELECT j.state FROM jobs j
                   WHERE j.tenant_id = seen.id AND j.state = ANY(CAST(:indexed AS text[]))) AS x
               GROUP BY 1
               UNION ALL
               SELECT k.state, sum(k.jobs) FROM job_state_totals k WHERE k.tenant_id IN (SELECT id FROM seen)
               GROUP BY 1
               UNION ALL
               SELECT j.state, count(*) FROM jobs j, m
               WHERE j.finished_at >= :hint AND j.finished_at >= m.until AND j.state IN ('succeeded', 'canceled')
                 AND j.tenant_id IN (SELECT id FROM seen)
               GROUP BY 1"""
        ),
        {**params, "indexed": list(INDEXED_STATES), "hint": hint},
    )
    out: dict[str, int] = {}
    for state, count in rows:
        out[str(state)] = out.get(str(state), 0) + int(count)
    return {k: v for k, v in out.items() if v}


def tenant_names(conn: sa.Connection, visible: Visible) -> list[str]:
    where, params = visible.where()
    return [r[0] for r in conn.execute(sa.text(f"SELECT t.name FROM tenants t WHERE {where} ORDER BY 1"), params)]


def job_types(conn: sa.Connection) -> list[Row]:
    return list(
        conn.execute(
            sa.text(
                "SELECT name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s"
                " FROM job_types ORDER BY name"
            )
        ).mappings()
    )


def _type_filter(where: str, params: dict[str, Any], job_type: str | None) -> str:
    if job_type is not None:
        params["job_type"] = job_type
        return where + " AND j.job_type = :job_type"
    return where


def throughput_series(
    conn: sa.Connection, visible: Visible, *, job_type: str | None, since_s: float, bucket_s: int
) -> list[Row]:
    """Jobs finished per bucket (succeeded, dead-lettered) and the p95 run time of the last attempt."""
    where, params = visible.where()
    where = _type_filter(where, params, job_type)
    return list(
        conn.execute(
            sa.text(
                f"""SELECT to_timestamp(floor(extract(epoch FROM j.finished_at) / :b) * :b) AS bucket,
                      count(*) AS finished,
                      count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
                      count(*) FILTER (WHERE j.state = 'dead_lettered') AS dead_lettered,
                      percentile_cont(0.95) WITHIN GROUP (
                          ORDER BY extract(epoch FROM j.finished_at - j.started_at)) AS p95_duration_s
               FROM jobs j JOIN tenants t ON t.id = j.tenant_id
               WHERE j.finished_at > now() - make_interval(secs => :since)
                 AND j.state IN ('succeeded', 'dead_lettered') AND {where}
               GROUP BY 1 ORDER BY 1"""
            ),
            {**params, "since": since_s, "b": bucket_s},
        ).mappings()
    )


#: Points a time series of samples returns at most per line, whatever the range.
SERIES_POINTS = 120
#: The scheduler samples queue depth this often (Scheduler.sample_depth).
DEPTH_SAMPLE_S = 10


def series_bucket_s(since_s: float, sample_s: int) -> int:
    """Bucket width of a sample series over `since_s`: the sample period, or wider so that
    it has at most SERIES_POINTS points."""
    return max(sample_s, math.ceil(since_s / SERIES_POINTS))


def queue_depth_series(conn: sa.Connection, visible: Visible, *, since_s: float) -> list[Row]:
    """Queue depth over time per queue and state, from the scheduler's samples: per bucket
    (series_bucket_s), the largest total of the visible tenants' samples in it."""
    where, params = visible.where()
    bucket_s = series_bucket_s(since_s, DEPTH_SAMPLE_S)
    return list(
        conn.execute(
            sa.text(
                f"""SELECT date_bin(make_interval(secs => :b), s.at, timestamptz 'epoch') AS at, s.queue, s.state,
                      max(s.count) AS count
               FROM (SELECT q.at, q.queue, q.state, sum(q.count) AS count
                     FROM queue_depth_samples q JOIN tenants t ON t.id = q.tenant_id
                     WHERE q.at > now() - make_interval(secs => :since) AND {where}
                     GROUP BY 1, 2, 3) AS s
               GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
            ),
            {**params, "since": since_s, "b": bucket_s},
        ).mappings()
    )


def run_time_summary(conn: sa.Connection, visible: Visible, *, job_type: str | None, since_s: float) -> Row:
    """Jobs finished in the window and the p50 and p95 run time of their last attempt."""
    where, params = visible.where()
    where = _type_filter(where, params, job_type)
    return (
        conn.execute(
            sa.text(
                f"""SELECT count(*) AS finished,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                          AS p50_duration_s,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                          AS p95_duration_s
               FROM jobs j JOIN tenants t ON t.id = j.tenant_id
               WHERE j.finished_at > now() - make_interval(secs => :since)
                 AND j.state IN ('succeeded', 'dead_lettered') AND {where}"""
            ),
            {**params, "since": since_s},
        )
        .mappings()
        .one()
    )
