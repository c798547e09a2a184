"""Read statements on failures: error clusters and their trend, dead letters by cluster, and
the finished/failed counts per SLO window that burn rates come from."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from core.ledger.reads import Visible

Row = sa.RowMapping


def error_clusters(conn: sa.Connection, visible: Visible, *, since_s: float, limit: int) -> list[Row]:
    """Failures in the window grouped by (class, fingerprint), biggest first."""
    where, params = visible.where()
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
    """Failures per cluster per time bucket."""
    where, params = visible.where()
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


def dead_letter_clusters(conn: sa.Connection, visible: Visible, *, limit: int) -> list[Row]:
    """Dead-lettered jobs grouped by error cluster, biggest first, with their job ids."""
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                f"""SELECT j.error_class, j.error_fingerprint AS fingerprint, count(*) AS count,
                      min(j.last_error) AS sample_message, max(j.finished_at) AS last_seen,
                      array_agg(j.id ORDER BY j.id DESC) AS job_ids, array_agg(DISTINCT j.job_type) AS job_types
               FROM jobs j JOIN tenants t ON t.id = j.tenant_id
               WHERE j.state = 'dead_lettered' AND {where}
               GROUP BY j.error_class, j.error_fingerprint ORDER BY count(*) DESC LIMIT :limit"""
            ),
            {**params, "limit": limit},
        ).mappings()
    )


def finished_by_window(
    conn: sa.Connection, visible: Visible, *, job_type: str | None, windows: Mapping[str, int]
) -> list[Row]:
    """Per tenant and job type, for each window name: total_<name> finished (succeeded or
    dead-lettered) and failed_<name> dead-lettered within the last `windows[name]` seconds."""
    where, params = visible.where()
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    counts = ", ".join(
        f"count(*) FILTER (WHERE j.finished_at > now() - interval '{int(secs)} seconds') AS total_{name},"
        f" count(*) FILTER (WHERE j.state = 'dead_lettered' AND j.finished_at > now() - interval '{int(secs)} seconds')"
        f" AS failed_{name}"
        for name, secs in windows.items()
    )
    longest = int(max(windows.values()))
    return list(
        conn.execute(
            sa.text(
                f"""SELECT t.name AS tenant, j.job_type, {counts}
               FROM jobs j JOIN tenants t ON t.id = j.tenant_id
               WHERE j.finished_at > now() - interval '{longest} seconds'
                 AND j.state IN ('succeeded', 'dead_lettered') AND {where}
               GROUP BY t.name, j.job_type ORDER BY t.name, j.job_type"""
            ),
            params,
        ).mappings()
    )
