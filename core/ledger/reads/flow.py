"""Read statements on flow control: sources with their buckets and circuits, pauses,
blackouts, quotas, backlog limits, rate changes, waiting jobs and admission's history.

The tokens of a bucket, a job holding an active slot and a tenant's backlog each have one
definition, in SQL (orch_bucket_tokens, orch_holds_slot, orch_tenant_backlog)."""

from __future__ import annotations

import sqlalchemy as sa

from core.ledger.reads import Visible

Row = sa.RowMapping

SOURCE_FIELDS = """s.id, t.name AS tenant, s.name, s.host, s.max_active, s.allow_private, s.created_at,
    s.circuit_state, s.circuit_since, s.circuit_until, s.circuit_probes, s.circuit_window,
    s.cb_window, s.cb_min_outcomes, s.cb_failure_ratio, s.cb_cooldown_s, s.cb_probes, s.opened_total,
    b.id AS bucket_id, b.capacity, b.base_rate, b.rate, b.min_rate, b.ceiling, b.denied_total,
    b.upstream_429_total,
    CASE WHEN b.id IS NOT NULL THEN greatest(orch_bucket_tokens(b), 0) END AS tokens,
    CASE WHEN b.updated_at > now() THEN b.updated_at END AS blocked_until,
    (SELECT count(*) FROM jobs AS a WHERE a.source_id = s.id AND orch_holds_slot(a.state)) AS active,
    (SELECT p.reason FROM pauses AS p WHERE p.tenant_id = s.tenant_id
        AND (p.source_id = s.id OR (p.source_id IS NULL AND p.job_type IS NULL))
        ORDER BY p.source_id NULLS LAST LIMIT 1) AS paused_reason,
    (SELECT max(x.window_end) FROM blackouts AS x WHERE x.tenant_id = s.tenant_id
        AND (x.source_id IS NULL OR x.source_id = s.id)
        AND x.window_start <= now() AND x.window_end > now()) AS blackout_until,
    (SELECT min(x.window_start) FROM blackouts AS x WHERE x.tenant_id = s.tenant_id
        AND (x.source_id IS NULL OR x.source_id = s.id) AND x.window_start > now()) AS next_blackout,
    (SELECT coalesce(jsonb_object_agg(w.wait_reason, w.n), '{}'::jsonb) FROM (
        SELECT j.wait_reason, count(*) AS n FROM jobs AS j
        WHERE j.source_id = s.id AND j.state = 'throttled' GROUP BY 1) AS w) AS waiting"""


def sources(conn: sa.Connection, visible: Visible) -> list[Row]:
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                f"SELECT {SOURCE_FIELDS} FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id"
                f" LEFT JOIN buckets AS b ON b.id = s.bucket_id WHERE {where} ORDER BY t.name, s.name"
            ),
            params,
        ).mappings()
    )


def pauses(conn: sa.Connection, visible: Visible) -> list[Row]:
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                "SELECT p.id, t.name AS tenant, s.name AS source, p.job_type, p.reason, p.ticket, p.actor,"
                " p.created_at FROM pauses AS p JOIN tenants AS t ON t.id = p.tenant_id"
                f" LEFT JOIN sources AS s ON s.id = p.source_id WHERE {where} ORDER BY p.id"
            ),
            params,
        ).mappings()
    )


def blackouts(conn: sa.Connection, visible: Visible, *, include_past: bool) -> list[Row]:
    """Blackouts with their current or next window and whether it is active now."""
    where, params = visible.where()
    past = "" if include_past else " AND (b.cron IS NOT NULL OR b.window_end > now())"
    return list(
        conn.execute(
            sa.text(
                "SELECT b.id, t.name AS tenant, s.name AS source, b.starts_at, b.ends_at, b.cron, b.duration_s,"
                " b.window_start, b.window_end, (b.window_start <= now() AND b.window_end > now()) AS active,"
                " b.reason, b.ticket, b.actor, b.created_at"
                " FROM blackouts AS b JOIN tenants AS t ON t.id = b.tenant_id"
                f" LEFT JOIN sources AS s ON s.id = b.source_id WHERE {where}{past} ORDER BY b.window_start, b.id"
            ),
            params,
        ).mappings()
    )


def quotas(conn: sa.Connection, visible: Visible) -> list[Row]:
    """Quotas per tenant and job type with the slots in use and the starts of the last hour."""
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                "SELECT q.id, t.name AS tenant, q.job_type, q.max_active, q.max_per_hour, q.updated_at,"
                " (SELECT count(*) FROM jobs AS a WHERE a.tenant_id = q.tenant_id AND a.job_type = q.job_type"
                "    AND orch_holds_slot(a.state)) AS active,"
                " (SELECT coalesce(sum(m.starts), 0) FROM quota_starts AS m WHERE m.quota_id = q.id"
                "    AND m.minute > date_trunc('minute', now()) - interval '61 minutes') AS started_last_hour,"
                " (SELECT count(*) FROM jobs AS w WHERE w.tenant_id = q.tenant_id AND w.job_type = q.job_type"
                "    AND w.state = 'throttled' AND w.wait_reason = 'quota') AS waiting"
                f" FROM quotas AS q JOIN tenants AS t ON t.id = q.tenant_id WHERE {where}"
                " ORDER BY t.name, q.job_type"
            ),
            params,
        ).mappings()
    )


def backlog_limits(conn: sa.Connection, visible: Visible) -> list[Row]:
    """Tenants with a backlog limit, their policy, backlog now and deferred jobs."""
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                "SELECT t.name AS tenant, t.backlog_limit, t.backlog_policy,"
                " orch_tenant_backlog(t.id, NULL) AS backlog,"
                " (SELECT count(*) FROM jobs AS j WHERE j.tenant_id = t.id AND j.state = 'throttled'"
                "    AND j.wait_reason = 'backpressure') AS deferred"
                f" FROM tenants AS t WHERE t.backlog_limit IS NOT NULL AND {where} ORDER BY t.name"
            ),
            params,
        ).mappings()
    )


def throttles(
    conn: sa.Connection, visible: Visible, *, source: str | None, since_s: float | None, limit: int
) -> list[Row]:
    """Rate changes of buckets (adaptive and manual), newest first, with the host."""
    where, params = visible.where()
    if source is not None:
        where += " AND b.id = (SELECT s.bucket_id FROM sources AS s WHERE s.tenant_id = t.id AND s.name = :source)"
        params["source"] = source
    if since_s is not None:
        where += " AND th.at > now() - make_interval(secs => :since)"
        params["since"] = since_s
    return list(
        conn.execute(
            sa.text(
                "SELECT th.id, th.at, t.name AS tenant, b.host, th.old_rate, th.new_rate, th.reason, th.actor"
                " FROM throttles AS th JOIN buckets AS b ON b.id = th.bucket_id"
                f" JOIN tenants AS t ON t.id = th.tenant_id WHERE {where} ORDER BY th.id DESC LIMIT :limit"
            ),
            {**params, "limit": limit},
        ).mappings()
    )


def waiting_by_reason(conn: sa.Connection, visible: Visible) -> dict[str, int]:
    """Throttled jobs by wait reason (reasons with no job are absent)."""
    where, params = visible.where()
    rows = conn.execute(
        sa.text(
            "SELECT j.wait_reason, count(*) FROM jobs AS j JOIN tenants AS t ON t.id = j.tenant_id"
            f" WHERE j.state = 'throttled' AND {where} GROUP BY 1"
        ),
        params,
    ).all()
    return {str(r[0]): int(r[1]) for r in rows}


def rate_limit_series(conn: sa.Connection, visible: Visible, *, since_s: float, step_s: int) -> list[Row]:
    """Per time step: upstream 429s (the throttle event) and admission denials by the wait
    reason their history row carries."""
    where, params = visible.where()
    return list(
        conn.execute(
            sa.text(
                "SELECT to_timestamp(floor(extract(epoch FROM h.at) / :step) * :step) AS at,"
                " CASE WHEN h.event = 'throttle' THEN 'upstream_429' ELSE h.wait_reason END AS kind,"
                " count(*) AS count"
                " FROM job_history AS h JOIN jobs AS j ON j.id = h.job_id JOIN tenants AS t ON t.id = j.tenant_id"
                " WHERE h.event IN ('throttle', 'deny') AND h.at > now() - make_interval(secs => :since)"
                f" AND {where} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            {**params, "since": since_s, "step": step_s},
        ).mappings()
    )
