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
    j.created_at, j.updated_at, j.started_at, j.finished_at"""

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
