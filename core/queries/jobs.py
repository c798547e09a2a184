"""Reads on jobs: one job with its history, logs and artifacts; lists, counts, tenants, job
types and the time series of the console's overview."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa

from core.domain import errors, redaction
from core.domain.auth import Principal, Scope
from core.domain.states import State
from core.ledger.reads import Visible
from core.ledger.reads import jobs as reads
from core.queries.common import db_now, parse_state, plain, since, visible

#: Jobs/s is taken over at least this long (the throughput chart's one-minute bucket), so a
#: few jobs that finished a moment ago do not read as hundreds per second.
MIN_RATE_SPAN_S = 60.0
#: covered_s finds the first finished job of a window to within 1/COVERAGE_STEPS of its age.
COVERAGE_STEPS = 100


def get_job(conn: sa.Connection, principal: Principal, job_id: int) -> dict[str, Any]:
    """One job with every field, secrets redacted. Raises NotFound (also for a job of a
    tenant not visible)."""
    row = reads.job(conn, visible(principal, None), job_id)
    if row is None:
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")
    job = plain(row)
    job["payload"] = redaction.redact(job["payload"])
    if job.get("result") is not None:
        job["result"] = redaction.redact(job["result"])
    if job.get("last_error"):
        job["last_error"] = redaction.redact_text(job["last_error"])
    return job


def _require_job(conn: sa.Connection, principal: Principal, job_id: int) -> None:
    if not reads.job_visible(conn, visible(principal, None), job_id):
        raise errors.NotFound(f"no job {job_id}; list jobs with `orch jobs list`")


def job_history(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    """A job's transitions in order. Raises NotFound."""
    _require_job(conn, principal, job_id)
    return [plain(r) for r in reads.history(conn, job_id)]


def job_logs(conn: sa.Connection, principal: Principal, job_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """A job's last log lines, oldest first, secrets redacted. Raises NotFound."""
    _require_job(conn, principal, job_id)
    out = [plain(r) for r in reads.logs(conn, job_id, limit)]
    for line in out:
        line["message"] = redaction.redact_text(line["message"])
    return out


def job_artifacts(conn: sa.Connection, principal: Principal, job_id: int) -> list[dict[str, Any]]:
    """A job's artifacts (name, media type, sha256, size; not the bytes). Raises NotFound."""
    _require_job(conn, principal, job_id)
    return [plain(r) for r in reads.artifacts(conn, job_id)]


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
    rows = reads.list_jobs(
        conn,
        visible(principal, tenant),
        state=None if state is None else parse_state(state).value,
        job_type=job_type,
        since_s=None if since_s is None else since(since_s),
        limit=limit,
    )
    return [plain(r) for r in rows]


def job_stats(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> dict[str, Any]:
    """{"total": N, "by_state": {state: N}} with every state present (zeros included)."""
    by_state = {s.value: 0 for s in State}
    by_state.update(reads.count_by_state(conn, visible(principal, tenant)))
    return {"total": sum(by_state.values()), "by_state": by_state}


def dead_letters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    return list_jobs(conn, principal, tenant=tenant, state=State.DEAD_LETTERED.value, limit=limit)


def tenants(conn: sa.Connection, principal: Principal) -> list[str]:
    """The tenants this principal may see, by name."""
    return reads.tenant_names(conn, visible(principal, None))


def job_types(conn: sa.Connection, principal: Principal) -> list[dict[str, Any]]:
    """Registered job types with their policy (queue, attempts, backoff, lease)."""
    principal.require(Scope.READ)
    return [plain(r) for r in reads.job_types(conn)]


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
    rows = reads.throughput_series(
        conn, visible(principal, tenant), job_type=job_type, since_s=since(since_s), bucket_s=bucket_s
    )
    return [plain(r) for r in rows]


def queue_depth_series(
    conn: sa.Connection, principal: Principal, *, since_s: float = 3600, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Queue depth over time per queue and state, from the scheduler's samples."""
    return [plain(r) for r in reads.queue_depth_series(conn, visible(principal, tenant), since_s=since(since_s))]


def run_time_summary(
    conn: sa.Connection,
    principal: Principal,
    *,
    since_s: float = 3600,
    tenant: str | None = None,
    job_type: str | None = None,
) -> dict[str, Any]:
    """Over the window: jobs finished, p50 and p95 run time of the last attempt, `covered_s`
    (the seconds of the window from the first job finished in it to now, see covered_s),
    `rate_span_s` (covered_s, but at least MIN_RATE_SPAN_S within the window) and `jobs_per_s`,
    the jobs finished over rate_span_s. Raises InvalidInput for a bad window."""
    seen = visible(principal, tenant)
    out = plain(reads.run_time_summary(conn, seen, job_type=job_type, since_s=since(since_s)))
    finished = int(out["finished"])
    covered = covered_s(conn, seen, job_type=job_type, since_s=since_s) if finished else 0.0
    out["covered_s"] = covered
    out["rate_span_s"] = max(covered, min(MIN_RATE_SPAN_S, since_s))
    out["jobs_per_s"] = finished / out["rate_span_s"]
    return out


def covered_s(conn: sa.Connection, seen: Visible, *, job_type: str | None, since_s: float) -> float:
    """The seconds of the window [now - since_s, now] that its finished jobs cover: from the
    first of them to now (within 1% of that age, or a second), all of the window when the
    first is within a hundredth of it from its start, 0 when none finished in it (jobs that
    finished before the window are not read). A rate over the whole window reads
    far too low while the ledger is younger than the window (0.4/s two minutes after start, at
    15/s). Two passes of the throughput series: coarse buckets over the window place the
    first job; buckets a hundredth of its age from there place it closely."""
    now: dt.datetime = db_now(conn)
    span = since_s
    for _ in range(2):
        bucket_s = max(1, int(span // COVERAGE_STEPS))
        rows = reads.throughput_series(conn, seen, job_type=job_type, since_s=span, bucket_s=bucket_s)
        if not rows:
            return 0.0
        # The first bucket starts at most bucket_s before the first job of the window.
        age = float((now - rows[0]["bucket"]).total_seconds())
        if age >= since_s:
            return since_s
        if bucket_s == 1:
            break
        span = min(since_s, math.ceil(age) + 1.0)
    return max(age, 0.0)
