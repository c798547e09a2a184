"""The read API for the CLI, console, exporter and bundles: plain SQL returning plain dicts.
Every query filters by the principal's tenants."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain.auth import Principal, Scope
from core.domain.states import State

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
    return _plain(row)


def job_history(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    get_job(conn, principal, job_id)
    rows = conn.execute(
        sa.text(
            "SELECT from_state, to_state, event, at, actor, reason, attempt FROM job_history"
            " WHERE job_id = :id ORDER BY id"
        ),
        {"id": job_id},
    ).mappings()
    return [_plain(r) for r in rows]


def job_logs(conn: sa.Connection, principal: Principal, job_id: int, limit: int = 200) -> list[dict[str, Any]]:
    get_job(conn, principal, job_id)
    rows = conn.execute(
        sa.text("SELECT at, attempt, level, message FROM job_logs WHERE job_id = :id ORDER BY id DESC LIMIT :limit"),
        {"id": job_id, "limit": limit},
    ).mappings()
    return [_plain(r) for r in reversed(list(rows))]


def job_artifacts(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    get_job(conn, principal, job_id)
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
) -> list[dict[str, Any]]:
    """Newest first. Raises InvalidInput for an unknown state or a bad limit."""
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    where, params = _tenant_filter(principal, tenant)
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


def throughput(conn: sa.Connection, principal: Principal, *, window_s: float = 10.0) -> float:
    """Jobs finished per second over the last `window_s` seconds (all visible tenants)."""
    where, params = _tenant_filter(principal, None)
    count = conn.execute(
        sa.text(
            "SELECT count(*) FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
            f" WHERE j.state IN ('succeeded', 'dead_lettered') AND {where}"
            " AND j.finished_at > now() - make_interval(secs => :w)"
        ),
        {**params, "w": window_s},
    ).scalar_one()
    return float(count) / window_s
