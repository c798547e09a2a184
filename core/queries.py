"""The read API for the CLI, console, exporter and bundles: plain SQL returning plain dicts.
Every query filters by the principal's tenants."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from core.domain import errors, fingerprints, redaction, slo
from core.domain.auth import Principal, Scope
from core.domain.states import State
from core.ledger import audit

JOB_FIELDS = """j.id, t.name AS tenant, j.job_type, j.queue, j.priority, j.state, j.wait_reason,
    j.not_before, j.attempt, j.max_attempts, j.error_class, j.last_error, j.payload,
    j.payload_digest, j.idempotency_key, j.lease_owner, j.lease_expires_at, j.heartbeat_at,
    j.progress, j.progress_message, j.cancel_requested, j.correlation_id, j.replay_of, j.run_id,
    j.created_at, j.updated_at, j.started_at, j.finished_at,
    (SELECT s.name FROM sources AS s WHERE s.id = j.source_id) AS source"""

LIST_FIELDS = """j.id, t.name AS tenant, j.job_type, j.queue, j.state, j.attempt, j.max_attempts,
    j.error_class, j.wait_reason, j.not_before, j.created_at, j.updated_at, j.finished_at"""


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        elif hasattr(value, "hex") and type(value).__name__ == "UUID":
            value = str(value)
        out[key] = value
    return out


def _tenant_filter(principal: Principal, tenant: str | None) -> tuple[str, dict[str, Any]]:
    principal.require(Scope.READ, tenant)
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if tenant is not None:
        clauses.append("t.name = :tenant")
        params["tenant"] = tenant
    if principal.tenants is not None:
        clauses.append("t.name = ANY(:visible)")
        params["visible"] = sorted(principal.tenants)
    return " AND ".join(clauses) or "true", params


def _parse_state(state: str) -> State:
    try:
        return State(state)
    except ValueError:
        raise errors.InvalidInput(f"unknown state {state!r}; one of: {', '.join(s.value for s in State)}") from None


def get_job(conn: sa.Connection, principal: Principal, job_id: int) -> dict[str, Any]:
    """One job with every field. Raises NotFound (also for a job of a tenant not visible)."""
    where, params = _tenant_filter(principal, None)
    row = (
        conn.execute(
            sa.text(
                f"SELECT {JOB_FIELDS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.id = :id AND {where}"
            ),
            {"id": job_id, **params},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")
    job = _plain(row)
    job["payload"] = redaction.redact(job["payload"])
    if job.get("last_error"):
        job["last_error"] = redaction.redact_text(job["last_error"])
    return job


def _require_job(conn: sa.Connection, principal: Principal, job_id: int) -> None:
    """NotFound unless the job exists and the principal may see its tenant."""
    where, params = _tenant_filter(principal, None)
    found = conn.execute(
        sa.text(f"SELECT 1 FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE j.id = :id AND {where}"),
        {"id": job_id, **params},
    ).first()
    if found is None:
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")


def job_history(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    _require_job(conn, principal, job_id)
    rows = conn.execute(
        sa.text(
            "SELECT from_state, to_state, event, at, actor, reason, attempt FROM job_history"
            " WHERE job_id = :id ORDER BY id"
        ),
        {"id": job_id},
    ).mappings()
    return [_plain(r) for r in rows]


def job_logs(conn: sa.Connection, principal: Principal, job_id: int, limit: int = 200) -> list[dict[str, Any]]:
    _require_job(conn, principal, job_id)
    rows = conn.execute(
        sa.text("SELECT at, attempt, level, message FROM job_logs WHERE job_id = :id ORDER BY id DESC LIMIT :limit"),
        {"id": job_id, "limit": limit},
    ).mappings()
    out = [_plain(r) for r in reversed(list(rows))]
    for line in out:
        line["message"] = redaction.redact_text(line["message"])
    return out


def job_artifacts(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    _require_job(conn, principal, job_id)
    rows = conn.execute(
        sa.text(
            "SELECT id, name, media_type, sha256, size_bytes, attempt, created_at FROM artifacts"
            " WHERE job_id = :id ORDER BY id"
        ),
        {"id": job_id},
    ).mappings()
    return [_plain(r) for r in rows]


def list_jobs(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    state: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    since_s: float | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `since_s` keeps jobs created in that many seconds.
    Raises InvalidInput for an unknown state, a bad limit or window."""
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    where, params = _tenant_filter(principal, tenant)
    if since_s is not None:
        where += " AND j.created_at > now() - make_interval(secs => :since)"
        params["since"] = _since(since_s)
    if state is not None:
        where += " AND j.state = :state"
        params["state"] = _parse_state(state).value
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    rows = conn.execute(
        sa.text(
            f"SELECT {LIST_FIELDS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
            f" WHERE {where} ORDER BY j.id DESC LIMIT :limit"
        ),
        {**params, "limit": limit},
    ).mappings()
    return [_plain(r) for r in rows]


def job_stats(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> dict[str, Any]:
    """{"total": N, "by_state": {state: N}} with every state present (zeros included)."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            f"SELECT j.state, count(*) FROM jobs j JOIN tenants t ON t.id = j.tenant_id WHERE {where} GROUP BY j.state"
        ),
        params,
    )
    by_state = {s.value: 0 for s in State}
    for state, count in rows:
        by_state[state] = int(count)
    return {"total": sum(by_state.values()), "by_state": by_state}


def dead_letters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    return list_jobs(conn, principal, tenant=tenant, state=State.DEAD_LETTERED.value, limit=limit)


def _since(since_s: float) -> float:
    if not 0 < since_s <= 30 * 86400:
        raise errors.InvalidInput(f"the window must be between 1 second and 30 days, got {since_s}s")
    return since_s


def error_clusters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, since_s: float = 3600, limit: int = 20
) -> list[dict[str, Any]]:
    """Failures in the window grouped by (class, fingerprint), biggest first: count, first and
    last seen, the normalised message, affected job types and sources, sample job ids."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
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
        {**params, "since": _since(since_s), "limit": limit},
    ).mappings()
    out = []
    for r in rows:
        row = _plain(r)
        row["message"] = fingerprints.normalise(redaction.redact_text(row.pop("sample_message") or ""))
        out.append(row)
    return out


def error_trend(
    conn: sa.Connection, principal: Principal, *, since_s: float = 3600, bucket_s: int = 300, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Failures per cluster per time bucket."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            f"""SELECT to_timestamp(floor(extract(epoch FROM h.at) / :b) * :b) AS bucket, h.fingerprint,
                      h.error_class, count(*) AS count
               FROM job_history h JOIN jobs j ON j.id = h.job_id JOIN tenants t ON t.id = j.tenant_id
               WHERE h.fingerprint IS NOT NULL AND h.at > now() - make_interval(secs => :since) AND {where}
               GROUP BY 1, 2, 3 ORDER BY 1, 2"""
        ),
        {**params, "since": _since(since_s), "b": bucket_s},
    ).mappings()
    return [_plain(r) for r in rows]


def dead_letter_clusters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Dead-lettered jobs grouped by error cluster, biggest first, with their job ids."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
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
    out = []
    for r in rows:
        row = _plain(r)
        row["message"] = fingerprints.normalise(redaction.redact_text(row.pop("sample_message") or ""))
        out.append(row)
    return out


def burn_rates(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    job_type: str | None = None,
    objective: slo.Slo | None = None,
) -> list[dict[str, Any]]:
    """Burn rate per tenant, job type and window: (dead-lettered / finished) / (1 - target);
    canceled jobs are excluded. Windows of DESIGN.md section 7."""
    objective = objective or slo.Slo()
    where, params = _tenant_filter(principal, tenant)
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    windows = ", ".join(
        f"count(*) FILTER (WHERE j.finished_at > now() - interval '{secs} seconds') AS total_{name},"
        f" count(*) FILTER (WHERE j.state = 'dead_lettered' AND j.finished_at > now() - interval '{secs} seconds')"
        f" AS failed_{name}"
        for name, secs in slo.WINDOWS.items()
    )
    longest = max(slo.WINDOWS.values())
    rows = conn.execute(
        sa.text(
            f"""SELECT t.name AS tenant, j.job_type, {windows}
               FROM jobs j JOIN tenants t ON t.id = j.tenant_id
               WHERE j.finished_at > now() - interval '{longest} seconds'
                 AND j.state IN ('succeeded', 'dead_lettered') AND {where}
               GROUP BY t.name, j.job_type ORDER BY t.name, j.job_type"""
        ),
        params,
    ).mappings()
    out = []
    for r in rows:
        for name in slo.WINDOWS:
            total, failed = int(r[f"total_{name}"]), int(r[f"failed_{name}"])
            out.append(
                {
                    "slo": objective.name,
                    "tenant": r["tenant"],
                    "job_type": r["job_type"],
                    "window": name,
                    "failed": failed,
                    "total": total,
                    "error_ratio": failed / total if total else 0.0,
                    "burn_rate": slo.burn_rate(failed, total, objective.target),
                }
            )
    return out


def throughput_series(
    conn: sa.Connection,
    principal: Principal,
    *,
    since_s: float = 3600,
    bucket_s: int = 60,
    tenant: str | None = None,
    job_type: str | None = None,
) -> list[dict[str, Any]]:
    """Jobs finished per bucket (succeeded, dead-lettered) and the p95 run time of the last attempt."""
    where, params = _tenant_filter(principal, tenant)
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    rows = conn.execute(
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
        {**params, "since": _since(since_s), "b": bucket_s},
    ).mappings()
    return [_plain(r) for r in rows]


def queue_depth_series(
    conn: sa.Connection, principal: Principal, *, since_s: float = 3600, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Queue depth over time per queue and state, from the scheduler's samples."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            f"""SELECT q.at, q.queue, q.state, sum(q.count) AS count
               FROM queue_depth_samples q JOIN tenants t ON t.id = q.tenant_id
               WHERE q.at > now() - make_interval(secs => :since) AND {where}
               GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
        ),
        {**params, "since": _since(since_s)},
    ).mappings()
    return [_plain(r) for r in rows]


def audit_log(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries, newest first. A principal limited to some tenants sees their entries only."""
    principal.require(Scope.READ, tenant)
    tenants: list[str] | None = None
    if tenant is not None:
        tenants = [tenant]
    elif principal.tenants is not None:
        tenants = sorted(principal.tenants)
    return [_plain(r) for r in audit.rows(conn, tenants=tenants, action=action, subject=subject, limit=limit)]


def verify_audit(conn: sa.Connection, principal: Principal) -> dict[str, Any]:
    """{"ok", "rows", "first_bad_id", "problem"} for the whole chain."""
    principal.require(Scope.READ)
    v = audit.verify(conn)
    return {"ok": v.ok, "rows": v.rows, "first_bad_id": v.first_bad_id, "problem": v.problem}


def tenants(conn: sa.Connection, principal: Principal) -> list[str]:
    """The tenants this principal may see, by name."""
    where, params = _tenant_filter(principal, None)
    return [r[0] for r in conn.execute(sa.text(f"SELECT t.name FROM tenants t WHERE {where} ORDER BY 1"), params)]


def job_types(conn: sa.Connection, principal: Principal) -> list[dict[str, Any]]:
    """Registered job types with their policy (queue, attempts, backoff, lease)."""
    principal.require(Scope.READ)
    rows = conn.execute(
        sa.text(
            "SELECT name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s"
            " FROM job_types ORDER BY name"
        )
    ).mappings()
    return [_plain(r) for r in rows]


def run_time_summary(
    conn: sa.Connection,
    principal: Principal,
    *,
    since_s: float = 3600,
    tenant: str | None = None,
    job_type: str | None = None,
) -> dict[str, Any]:
    """Over the window: jobs finished, jobs/s, p50 and p95 run time of the last attempt."""
    where, params = _tenant_filter(principal, tenant)
    if job_type is not None:
        where += " AND j.job_type = :job_type"
        params["job_type"] = job_type
    row = (
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
            {**params, "since": _since(since_s)},
        )
        .mappings()
        .one()
    )
    out = _plain(row)
    out["jobs_per_s"] = out["finished"] / since_s
    return out


# -- flow control ------------------------------------------------------------------------

#: Why jobs wait (the values of jobs.wait_reason), in the order admission checks them.
WAIT_REASONS = ("paused", "blackout", "circuit_open", "quota", "rate_limited", "backpressure")

SOURCE_FIELDS = """s.id, t.name AS tenant, s.name, s.host, s.max_active, s.created_at,
    s.circuit_state, s.circuit_since, s.circuit_until, s.circuit_probes, s.circuit_window,
    s.cb_window, s.cb_min_outcomes, s.cb_failure_ratio, s.cb_cooldown_s, s.cb_probes, s.opened_total,
    b.id AS bucket_id, b.capacity, b.base_rate, b.rate, b.min_rate, b.ceiling, b.denied_total,
    b.upstream_429_total,
    CASE WHEN b.id IS NULL THEN NULL WHEN b.updated_at > now() THEN 0
         ELSE least(b.capacity, b.tokens + b.rate * extract(epoch FROM now() - b.updated_at)) END AS tokens,
    CASE WHEN b.updated_at > now() THEN b.updated_at END AS blocked_until,
    (SELECT count(*) FROM jobs AS a WHERE a.source_id = s.id AND a.state IN ('leased', 'running')) AS active,
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


def _health(src: Mapping[Any, Any]) -> str:
    """One word for a source's state, worst first."""
    if src["paused_reason"] is not None:
        return "paused"
    if src["blackout_until"] is not None:
        return "blackout"
    if src["circuit_state"] != "closed":
        return "circuit_" + str(src["circuit_state"])
    if src["blocked_until"] is not None or (src["rate"] is not None and src["rate"] < src["base_rate"]):
        return "throttled"
    return "ok"


def _source_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = _plain(row)
    window = str(row["circuit_window"] or "")
    out["circuit_failures"] = window.count("1")
    out["circuit_outcomes"] = len(window)
    out.pop("circuit_window")
    out["health"] = _health(row)
    for key in ("tokens", "rate", "base_rate", "capacity", "min_rate", "ceiling"):
        if out.get(key) is not None:
            out[key] = round(float(out[key]), 3)
    return out


def sources(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every visible source with its bucket (tokens now, adaptive and configured rate),
    circuit, slots in use, pause, blackout and waiting jobs by reason, and a health word."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            f"SELECT {SOURCE_FIELDS} FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id"
            f" LEFT JOIN buckets AS b ON b.id = s.bucket_id WHERE {where} ORDER BY t.name, s.name"
        ),
        params,
    ).mappings()
    return [_source_row(r) for r in rows]


def source(conn: sa.Connection, principal: Principal, *, tenant: str, name: str) -> dict[str, Any]:
    """One source as in `sources`, plus its pauses, blackouts, the tenant's quotas and the
    last rate changes of its bucket. Raises NotFound."""
    found = [s for s in sources(conn, principal, tenant=tenant) if s["name"] == name]
    if not found:
        raise errors.NotFound(f"tenant {tenant!r} has no source {name!r}; list them with `orch sources list`")
    out = found[0]
    out["pauses"] = [p for p in pauses(conn, principal, tenant=tenant) if p["source"] in (None, name)]
    out["blackouts"] = [b for b in blackouts(conn, principal, tenant=tenant) if b["source"] in (None, name)]
    out["quotas"] = quotas(conn, principal, tenant=tenant)
    out["throttles"] = throttles(conn, principal, tenant=tenant, source=name, limit=20)
    return out


def pauses(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            "SELECT p.id, t.name AS tenant, s.name AS source, p.job_type, p.reason, p.ticket, p.actor, p.created_at"
            " FROM pauses AS p JOIN tenants AS t ON t.id = p.tenant_id LEFT JOIN sources AS s ON s.id = p.source_id"
            f" WHERE {where} ORDER BY p.id"
        ),
        params,
    ).mappings()
    return [_plain(r) for r in rows]


def blackouts(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, include_past: bool = False
) -> list[dict[str, Any]]:
    """Blackouts with their current or next window and whether it is active now."""
    where, params = _tenant_filter(principal, tenant)
    past = "" if include_past else " AND (b.cron IS NOT NULL OR b.window_end > now())"
    rows = conn.execute(
        sa.text(
            "SELECT b.id, t.name AS tenant, s.name AS source, b.starts_at, b.ends_at, b.cron, b.duration_s,"
            " b.window_start, b.window_end, (b.window_start <= now() AND b.window_end > now()) AS active,"
            " b.reason, b.ticket, b.actor, b.created_at"
            " FROM blackouts AS b JOIN tenants AS t ON t.id = b.tenant_id LEFT JOIN sources AS s ON s.id = b.source_id"
            f" WHERE {where}{past} ORDER BY b.window_start, b.id"
        ),
        params,
    ).mappings()
    return [_plain(r) for r in rows]


def quotas(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Quotas per tenant and job type with the slots in use and the starts of the last hour."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            "SELECT q.id, t.name AS tenant, q.job_type, q.max_active, q.max_per_hour, q.updated_at,"
            " (SELECT count(*) FROM jobs AS a WHERE a.tenant_id = q.tenant_id AND a.job_type = q.job_type"
            "    AND a.state IN ('leased', 'running')) AS active,"
            " (SELECT coalesce(sum(m.starts), 0) FROM quota_starts AS m WHERE m.quota_id = q.id"
            "    AND m.minute > date_trunc('minute', now()) - interval '61 minutes') AS started_last_hour,"
            " (SELECT count(*) FROM jobs AS w WHERE w.tenant_id = q.tenant_id AND w.job_type = q.job_type"
            "    AND w.state = 'throttled' AND w.wait_reason = 'quota') AS waiting"
            f" FROM quotas AS q JOIN tenants AS t ON t.id = q.tenant_id WHERE {where} ORDER BY t.name, q.job_type"
        ),
        params,
    ).mappings()
    return [_plain(r) for r in rows]


def backlog_limits(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Tenants with a backlog limit, their policy, backlog now and deferred jobs."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            "SELECT t.name AS tenant, t.backlog_limit, t.backlog_policy,"
            " (SELECT count(*) FROM jobs AS j WHERE j.tenant_id = t.id"
            "    AND j.state IN ('pending', 'queued', 'retrying', 'throttled')"
            "    AND j.wait_reason IS DISTINCT FROM 'backpressure') AS backlog,"
            " (SELECT count(*) FROM jobs AS j WHERE j.tenant_id = t.id AND j.state = 'throttled'"
            "    AND j.wait_reason = 'backpressure') AS deferred"
            f" FROM tenants AS t WHERE t.backlog_limit IS NOT NULL AND {where} ORDER BY t.name"
        ),
        params,
    ).mappings()
    return [_plain(r) for r in rows]


def throttles(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    source: str | None = None,
    since_s: float | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Rate changes of buckets (adaptive and manual), newest first, with the host."""
    where, params = _tenant_filter(principal, tenant)
    extra = ""
    if source is not None:
        extra += " AND b.id = (SELECT s.bucket_id FROM sources AS s WHERE s.tenant_id = t.id AND s.name = :source)"
        params["source"] = source
    if since_s is not None:
        extra += " AND th.at > now() - make_interval(secs => :since)"
        params["since"] = _since(since_s)
    rows = conn.execute(
        sa.text(
            "SELECT th.id, th.at, t.name AS tenant, b.host, th.old_rate, th.new_rate, th.reason, th.actor"
            " FROM throttles AS th JOIN buckets AS b ON b.id = th.bucket_id JOIN tenants AS t ON t.id = th.tenant_id"
            f" WHERE {where}{extra} ORDER BY th.id DESC LIMIT :limit"
        ),
        {**params, "limit": limit},
    ).mappings()
    return [_plain(r) for r in rows]


def waiting_by_reason(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> dict[str, int]:
    """Throttled jobs by wait reason (every reason present, zero when none wait)."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            "SELECT j.wait_reason, count(*) FROM jobs AS j JOIN tenants AS t ON t.id = j.tenant_id"
            f" WHERE j.state = 'throttled' AND {where} GROUP BY 1"
        ),
        params,
    ).all()
    out = dict.fromkeys(WAIT_REASONS, 0)
    out.update({str(r[0]): int(r[1]) for r in rows})
    return out


def rate_limit_series(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    since_s: float = 3600,
    step_s: int = 60,
) -> list[dict[str, Any]]:
    """Per time step: upstream 429s (jobs sent back by the upstream) and admission denials
    by reason (jobs Orch held back itself), from the job history."""
    where, params = _tenant_filter(principal, tenant)
    rows = conn.execute(
        sa.text(
            "SELECT to_timestamp(floor(extract(epoch FROM h.at) / :step) * :step) AS at,"
            " CASE WHEN h.event = 'throttle' THEN 'upstream_429' ELSE split_part(h.reason, ' ', 1) END AS kind,"
            " count(*) AS count"
            " FROM job_history AS h JOIN jobs AS j ON j.id = h.job_id JOIN tenants AS t ON t.id = j.tenant_id"
            " WHERE h.event IN ('throttle', 'deny') AND h.at > now() - make_interval(secs => :since)"
            f" AND {where} GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {**params, "since": _since(since_s), "step": step_s},
    ).mappings()
    return [_plain(r) for r in rows]
