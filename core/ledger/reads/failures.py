"""Read statements on failures: error clusters and their trend, dead letters by cluster, and
the finished/failed counts per SLO window that burn rates come from."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from core.ledger.reads import MARK_SQL, Visible, custom_plans, rollup_mark

Row = sa.RowMapping


def error_clusters(conn: sa.Connection, visible: Visible, *, since_s: float, limit: int) -> list[Row]:
    """Failures in the window grouped by (class, fingerprint), biggest first. A custom plan:
    the generic one cannot see that the window leaves a few rows of job_history_failures_idx
    and scans every job."""
    where, params = visible.where()
    custom_plans(conn)
    return list(
        conn.execute(
            sa.text(
                f"""SELECT h.error_class, h.fingerprint, count(*) AS count, min(h.at) AS first_seen,
                      max(h.at) AS last_seen, min(h.message) AS sample_message,
                      array_agg(DISTINCT j.job_type) AS job_types,
                      array_remove(array_agg(DISTINCT s.name), NULL) AS sources,
                      (array_agg(DISTINCT h.job_id))[1:5] AS sample_job_ids
               FROM job_history h
               JOIN jobs j ON j.id = h.job_id
               JOIN tenants t ON t.id = j.tenant_id
               LEFT JOIN sources s ON s.id = j.source_id
               WHERE h.fingerprint IS NOT NULL AND h.at > now() - make_interval(secs => :since) AND {where}
               GROUP BY h.error_class, h.fingerprint
               ORDER BY count(*) DESC, max(h.at) DESC
               LIMIT :limit"""
            ),
            {**params, "since": since_s, "limit": limit},
        ).mappings()
    )


def error_trend(conn: sa.Connection, visible: Visible, *, since_s: float, bucket_s: int) -> list[Row]:
    """Failures per cluster per time bucket (a custom plan, as error_clusters)."""
    where, params = visible.where()
    custom_plans(conn)
    return list(
        conn.execute(
            sa.text(
                f"""SELECT to_timestamp(floor(extract(epoch FROM h.at) / :b) * :b) AS bucket, h.fingerprint,
                      h.error_class, count(*) AS count
               FROM job_history h JOIN jobs j ON j.id = h.job_id JOIN tenants t ON t.id = j.tenant_id
               WHERE h.fingerprint IS NOT NULL AND h.at > now() - make_interval(secs => :since) AND {where}
               GROUP BY 1, 2, 3 ORDER BY 1, 2"""
            ),
            {**params, "since": since_s, "b": bucket_s},
        ).mappings()
    )


#: Job ids a dead-letter cluster lists at most, newest first: as many as one replay takes
#: (core.control.replay_many), so the Dead letters page replays a cluster of up to this many
#: whole and the newest this many of a bigger one.
CLUSTER_IDS = 10_000


def dead_letter_clusters(conn: sa.Connection, visible: Visible, *, limit: int) -> list[Row]:
    """Dead-lettered jobs grouped by error cluster, biggest first, with their newest
    CLUSTER_IDS job ids and the newest one's message: one ordered pass of the index-only
    jobs_dead_letters_idx (dead letters only), and a row of jobs per cluster.

    The visible tenants are an array the scan filters on, not an IN (a join): a join's
    output loses the index's order, and the planner then took jobs_dead_recent_idx
    (migration 0011) and a sort instead, which reads every dead letter's heap row: at
    1,000,000 jobs 28 ms against 5.9 ms for this form (EXPLAIN ANALYZE, one tenant), at
    10,000,000 a p95 of 409 ms in bench/console.py."""
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                f"""WITH d AS (
                   SELECT j.error_class, j.error_fingerprint, j.id, j.job_type, j.finished_at,
                          row_number() OVER (PARTITION BY j.error_class, j.error_fingerprint ORDER BY j.id DESC) AS k
                   FROM jobs j
                   WHERE j.state = 'dead_lettered'
                     AND j.tenant_id = ANY (ARRAY(SELECT t.id FROM tenants t WHERE {where})))
               SELECT d.error_class, d.error_fingerprint AS fingerprint, count(*) AS count,
                      (SELECT x.last_error FROM jobs x WHERE x.id = max(d.id)) AS sample_message,
                      max(d.finished_at) AS last_seen,
                      array_agg(d.id ORDER BY d.id DESC) FILTER (WHERE d.k <= :ids) AS job_ids,
                      array_agg(DISTINCT d.job_type) AS job_types
               FROM d GROUP BY d.error_class, d.error_fingerprint ORDER BY count(*) DESC LIMIT :limit"""
            ),
            {**params, "limit": limit, "ids": CLUSTER_IDS},
        ).mappings()
    )


#: Width of the rollup buckets (job_finish_rollups, migration 0008).
BUCKET = "interval '5 minutes'"


def _ceil_bucket(secs: int) -> str:
    """The first bucket boundary at or after now() - secs."""
    return (
        f"(date_bin({BUCKET}, now() - interval '{int(secs)} seconds' - interval '1 microsecond', timestamptz 'epoch')"
        f" + {BUCKET})"
    )


def finished_by_window(
    conn: sa.Connection, visible: Visible, *, job_type: str | None, windows: Mapping[str, int]
) -> list[Row]:
    """Per tenant and job type, for each window name: total_<name> finished (succeeded or
    dead-lettered) and failed_<name> dead-lettered within the last `windows[name]` seconds.

    Without reading the jobs of the windows (docs/design.md, "Reads on a big ledger"): a
    window (now - W, now] is the rollup buckets from its first boundary c on (they hold the
    jobs finished in [c, mark)), the jobs finished in (now - W, c) before the mark (at most a
    bucket's worth) and the jobs finished since the mark, both from jobs_finished_idx."""
    where, params = visible.where()
    type_r = type_j = ""
    if job_type is not None:
        type_r, type_j = " AND r.job_type = :job_type", " AND j.job_type = :job_type"
        params["job_type"] = job_type
    params["hint"] = rollup_mark(conn)
    longest = int(max(windows.values()))
    longest_name = max(windows, key=lambda n: windows[n])
    states = "j.state IN ('succeeded', 'dead_lettered')"
    seen = "j.tenant_id IN (SELECT id FROM seen)"
    rolled = ", ".join(
        f"sum(r.succeeded + r.dead_lettered) FILTER (WHERE r.bucket >= b.c_{name}) AS total_{name},"
        f" sum(r.dead_lettered) FILTER (WHERE r.bucket >= b.c_{name}) AS failed_{name}"
        for name in windows
    )
    heads = " UNION ALL ".join(
        f"""SELECT j.tenant_id, j.job_type, j.state, j.finished_at, '{name}' AS win FROM jobs j, m, b
            WHERE j.finished_at > now() - interval '{int(secs)} seconds' AND j.finished_at < b.c_{name}
              AND j.finished_at < m.until AND {states} AND {seen}{type_j}"""
        for name, secs in windows.items()
    )

    def within(name: str, secs: int) -> str:
        return f"(win = '{name}' OR (win IS NULL AND finished_at > now() - interval '{int(secs)} seconds'))"

    raw = ", ".join(
        f"count(*) FILTER (WHERE {within(name, secs)}) AS total_{name},"
        f" count(*) FILTER (WHERE state = 'dead_lettered' AND {within(name, secs)}) AS failed_{name}"
        for name, secs in windows.items()
    )
    sums = ", ".join(
        f"coalesce(r.total_{name}, 0) + coalesce(w.total_{name}, 0) AS total_{name},"
        f" coalesce(r.failed_{name}, 0) + coalesce(w.failed_{name}, 0) AS failed_{name}"
        for name in windows
    )
    cols = ", ".join(f"s.total_{name}, s.failed_{name}" for name in windows)
    bounds = ", ".join(f"{_ceil_bucket(secs)} AS c_{name}" for name, secs in windows.items())
    sql = f"""WITH m AS {MARK_SQL}, seen AS (SELECT t.id FROM tenants t WHERE {where}),
        b AS MATERIALIZED (SELECT {bounds}),
        rolled AS (
            SELECT r.tenant_id, r.job_type, {rolled} FROM job_finish_rollups r, b
            WHERE r.bucket >= b.c_{longest_name} AND r.tenant_id IN (SELECT id FROM seen){type_r}
            GROUP BY 1, 2),
        raw AS (
            {heads}
            UNION ALL
            SELECT j.tenant_id, j.job_type, j.state, j.finished_at, NULL FROM jobs j, m
            WHERE j.finished_at >= :hint AND j.finished_at >= m.until
              AND j.finished_at > now() - interval '{longest} seconds' AND {states} AND {seen}{type_j}),
        live AS (SELECT tenant_id, job_type, {raw} FROM raw GROUP BY 1, 2),
        k AS (SELECT tenant_id, job_type FROM rolled UNION SELECT tenant_id, job_type FROM live),
        summed AS (
            SELECT k.tenant_id, k.job_type, {sums} FROM k
            LEFT JOIN rolled r ON r.tenant_id = k.tenant_id AND r.job_type = k.job_type
            LEFT JOIN live w ON w.tenant_id = k.tenant_id AND w.job_type = k.job_type)
        SELECT t.name AS tenant, s.job_type, {cols} FROM summed s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.total_{longest_name} > 0
        ORDER BY t.name, s.job_type"""
    return list(conn.execute(sa.text(sql), params).mappings())
