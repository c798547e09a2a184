"""Job ledger statements, one function per statement of core/ledger/sql.py.

Every function takes a Connection and never commits. Batch functions take parallel lists
(one element per job) and return the rows that actually changed: a missing row means the
compare-and-set lost (wrong state, or a lease that is no longer the caller's).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.domain import fingerprints as fp
from core.ledger import sql

Row = sa.RowMapping


def _rows(conn: sa.Connection, stmt: sa.TextClause, params: Mapping[str, Any]) -> list[Row]:
    return list(conn.execute(stmt, dict(params)).mappings().all())


@dataclass(frozen=True, slots=True)
class NewJob:
    """One row for insert_jobs; ids come from allocate_job_ids."""

    id: int | None  # None: the sequence assigns it (one-job inserts)
    tenant_id: int
    job_type: str
    queue: str
    priority: int
    payload_json: str
    digest: str
    idempotency_key: str | None
    state: str
    max_attempts: int
    correlation_id: str | None = None
    replay_of: int | None = None
    run_id: int | None = None
    source_id: int | None = None
    #: Set for jobs created waiting (throttled): backpressure deferral.
    wait_reason: str | None = None


def ensure_tenants(conn: sa.Connection, names: Sequence[str]) -> dict[str, int]:
    rows = _rows(conn, sql.ENSURE_TENANTS, {"names": list(names)})
    return {r["name"]: r["id"] for r in rows}


def allocate_job_ids(conn: sa.Connection, n: int) -> list[int]:
    return [r[0] for r in conn.execute(sql.ALLOCATE_JOB_IDS, {"n": n})]


def insert_jobs(conn: sa.Connection, jobs: Sequence[NewJob], *, actor: str, reason: str | None) -> set[int]:
    """Insert jobs, their creation history and a jobs.submitted event per tenant; returns
    the ids actually inserted (a job whose idempotency key already exists is skipped)."""
    rows = json.dumps(
        [
            [
                j.id,
                j.tenant_id,
                j.job_type,
                j.queue,
                j.priority,
                j.digest,
                j.idempotency_key,
                j.state,
                j.max_attempts,
                j.correlation_id,
                j.replay_of,
                j.run_id,
                j.source_id,
                j.wait_reason,
            ]
            for j in jobs
        ],
        separators=(",", ":"),
    )
    params = {
        "rows": rows,
        "payloads": "[" + ",".join(j.payload_json for j in jobs) + "]",
        "actor": actor,
        "reason": reason,
    }
    return {r[0] for r in conn.execute(sql.INSERT_JOBS, params)}


def find_idempotent_jobs(conn: sa.Connection, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], Row]:
    rows = _rows(
        conn,
        sql.FIND_IDEMPOTENT_JOBS,
        {"tenant_id": [k[0] for k in keys], "idem": [k[1] for k in keys]},
    )
    return {(r["tenant_id"], r["idempotency_key"]): r for r in rows}


def claim_jobs(conn: sa.Connection, *, queue: str, limit: int, owner: str, job_types: Sequence[str]) -> list[Row]:
    """queued -> leased for up to `limit` jobs of `queue` whose type the caller can run
    (best priority, then oldest)."""
    return _rows(
        conn,
        sql.transition("claim_jobs"),
        {"queue": queue, "limit": limit, "owner": owner, "actor": owner, "job_types": list(job_types)},
    )


def claim_and_start_jobs(
    conn: sa.Connection, *, queue: str, limit: int, owner: str, job_types: Sequence[str]
) -> list[Row]:
    """queued -> leased -> running in one statement, counting the attempt; for handlers that
    start at once. Rows carry the new attempt number and everything the handler needs."""
    return _rows(
        conn,
        sql.transition("claim_and_start_jobs"),
        {"queue": queue, "limit": limit, "owner": owner, "actor": owner, "job_types": list(job_types)},
    )


def ack_jobs(conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], *, actor: str) -> list[Row]:
    """leased -> running; counts the attempt."""
    return _rows(conn, sql.transition("ack_jobs"), {"id": list(ids), "lease_id": list(leases), "actor": actor})


def succeed_jobs(conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], *, actor: str) -> list[Row]:
    return _rows(conn, sql.transition("succeed_jobs"), {"id": list(ids), "lease_id": list(leases), "actor": actor})


def fail_retryable_jobs(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    delays_s: Sequence[float],
    error_classes: Sequence[str],
    messages: Sequence[str],
    *,
    actor: str,
    fingerprints: Sequence[str] | None = None,
) -> list[Row]:
    return _rows(
        conn,
        sql.transition("fail_retryable_jobs"),
        {
            "id": list(ids),
            "lease_id": list(leases),
            "delay_s": list(delays_s),
            "error_class": list(error_classes),
            "message": list(messages),
            "fingerprint": _fingerprints(fingerprints, error_classes, messages),
            "actor": actor,
        },
    )


def fail_final_jobs(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    error_classes: Sequence[str],
    messages: Sequence[str],
    whys: Sequence[str],
    *,
    actor: str,
    fingerprints: Sequence[str] | None = None,
) -> list[Row]:
    return _rows(
        conn,
        sql.transition("fail_final_jobs"),
        {
            "id": list(ids),
            "lease_id": list(leases),
            "error_class": list(error_classes),
            "message": list(messages),
            "why": list(whys),
            "fingerprint": _fingerprints(fingerprints, error_classes, messages),
            "actor": actor,
        },
    )


def throttle_jobs(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    delays_s: Sequence[float],
    messages: Sequence[str],
    *,
    actor: str,
) -> list[Row]:
    """running -> throttled after an upstream 429; the attempt is given back."""
    return _rows(
        conn,
        sql.transition("throttle_jobs"),
        {
            "id": list(ids),
            "lease_id": list(leases),
            "delay_s": list(delays_s),
            "message": list(messages),
            "fingerprint": [fp.fingerprint("http_429", m) for m in messages],
            "actor": actor,
        },
    )


def record_outcomes(
    conn: sa.Connection,
    sources: Sequence[int],
    kinds: Sequence[str],
    retry_after: Sequence[float | None],
    started: Sequence[dt.datetime | None],
    *,
    actor: str,
) -> None:
    """Feed finished jobs of sources to their circuits and buckets, in finishing order:
    kind 'ok', 'fail' (counts against the circuit) or 'throttled' (an upstream 429)."""
    if sources:
        conn.execute(
            sql.RECORD_OUTCOMES,
            {
                "source": list(sources),
                "kind": list(kinds),
                "retry_after": list(retry_after),
                "started": list(started),
                "actor": actor,
            },
        )


def _fingerprints(given: Sequence[str] | None, error_classes: Sequence[str], messages: Sequence[str]) -> list[str]:
    if given is not None:
        return list(given)
    return [fp.fingerprint(c, m) for c, m in zip(error_classes, messages, strict=True)]


def cancel_running_jobs(
    conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], *, actor: str
) -> list[Row]:
    return _rows(
        conn, sql.transition("cancel_running_jobs"), {"id": list(ids), "lease_id": list(leases), "actor": actor}
    )


def cancel_waiting_jobs(conn: sa.Connection, ids: Sequence[int], *, actor: str, reason: str | None) -> list[Row]:
    return _rows(conn, sql.transition("cancel_waiting_jobs"), {"id": list(ids), "actor": actor, "reason": reason})


def request_cancel(conn: sa.Connection, job_id: int) -> bool:
    return conn.execute(sql.REQUEST_CANCEL, {"id": job_id}).first() is not None


def reap_leased_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, sql.transition("reap_leased_jobs"), {"limit": limit, "actor": actor})


def reap_running_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, sql.transition("reap_running_jobs"), {"limit": limit, "actor": actor})


def release_due_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, sql.transition("release_due_jobs"), {"limit": limit, "actor": actor})


def renew_leases(
    conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], lease_s: Sequence[float]
) -> dict[int, bool]:
    """Extend leases; returns {job_id: cancel_requested} for the leases still held."""
    rows = conn.execute(sql.RENEW_LEASES, {"id": list(ids), "lease_id": list(leases), "lease_s": list(lease_s)})
    return {r[0]: r[1] for r in rows}


def expire_leases(conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID]) -> None:
    if ids:
        conn.execute(sql.EXPIRE_LEASES, {"id": list(ids), "lease_id": list(leases)})


def set_progress(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    fractions: Sequence[float],
    messages: Sequence[str | None],
) -> None:
    conn.execute(
        sql.SET_PROGRESS,
        {"id": list(ids), "lease_id": list(leases), "fraction": list(fractions), "message": list(messages)},
    )


def insert_logs(
    conn: sa.Connection,
    ids: Sequence[int],
    attempts: Sequence[int],
    ats: Sequence[dt.datetime],
    levels: Sequence[str],
    messages: Sequence[str],
) -> None:
    conn.execute(
        sql.INSERT_LOGS,
        {"id": list(ids), "attempt": list(attempts), "at": list(ats), "level": list(levels), "message": list(messages)},
    )


def insert_artifact(
    conn: sa.Connection,
    *,
    job_id: int,
    lease_id: uuid.UUID,
    name: str,
    media_type: str,
    sha256: str,
    data: bytes,
) -> int | None:
    """Attach an artifact; None when the caller no longer holds the job's lease."""
    row = conn.execute(
        sql.INSERT_ARTIFACT,
        {
            "id": job_id,
            "lease_id": lease_id,
            "name": name,
            "media_type": media_type,
            "sha256": sha256,
            "size_bytes": len(data),
            "data": data,
        },
    ).first()
    return None if row is None else int(row[0])


def count_ready(conn: sa.Connection, *, queue: str, cap: int) -> int:
    return int(conn.execute(sql.COUNT_READY, {"queue": queue, "cap": cap}).scalar_one())


def count_stale_ready(conn: sa.Connection, *, queue: str, grace_s: float, cap: int) -> int:
    return int(conn.execute(sql.COUNT_STALE_READY, {"queue": queue, "grace_s": grace_s, "cap": cap}).scalar_one())


def mark_rung(conn: sa.Connection, *, queue: str, limit: int) -> list[int]:
    return [r[0] for r in conn.execute(sql.MARK_RUNG, {"queue": queue, "limit": limit})]


def seconds_to_next_due(conn: sa.Connection) -> float | None:
    value = conn.execute(sql.NEXT_DUE).scalar_one()
    return None if value is None else float(value.total_seconds())


@dataclass(frozen=True, slots=True)
class JobTypeRow:
    name: str
    queue: str
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    lease_s: float
    heartbeat_s: float


def upsert_job_types(conn: sa.Connection, types: Sequence[JobTypeRow]) -> None:
    if not types:
        return
    conn.execute(
        sql.UPSERT_JOB_TYPES,
        {
            "name": [t.name for t in types],
            "queue": [t.queue for t in types],
            "max_attempts": [t.max_attempts for t in types],
            "base": [t.backoff_base_s for t in types],
            "cap": [t.backoff_cap_s for t in types],
            "lease": [t.lease_s for t in types],
            "heartbeat": [t.heartbeat_s for t in types],
        },
    )


def job_types(conn: sa.Connection) -> dict[str, JobTypeRow]:
    rows = conn.execute(
        sa.text("SELECT name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s FROM job_types")
    )
    return {r[0]: JobTypeRow(*r) for r in rows}


def queues(conn: sa.Connection) -> list[str]:
    """Every queue some job type uses, plus 'default'."""
    rows = conn.execute(sa.text("SELECT DISTINCT queue FROM job_types UNION SELECT 'default' ORDER BY 1"))
    return [r[0] for r in rows]


def insert_event(conn: sa.Connection, *, tenant_id: int | None, kind: str, payload: Mapping[str, Any]) -> None:
    conn.execute(
        sql.INSERT_EVENT, {"tenant_id": tenant_id, "kind": kind, "payload": json.dumps(payload, sort_keys=True)}
    )


def queue_depth(conn: sa.Connection) -> list[sa.Row[Any]]:
    """(tenant_id, queue, state, count) for live jobs."""
    return list(conn.execute(sql.QUEUE_DEPTH))


def sample_queue_depth(conn: sa.Connection, *, keep_days: int = 7) -> None:
    conn.execute(sql.SAMPLE_QUEUE_DEPTH)
    conn.execute(sql.PRUNE_QUEUE_DEPTH, {"days": keep_days})


def oldest_ready(conn: sa.Connection) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute(sql.OLDEST_READY)}


def dead_letter_depth(conn: sa.Connection) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(sql.DEAD_LETTER_DEPTH)}


def submit_counts(conn: sa.Connection) -> list[sa.Row[Any]]:
    return list(conn.execute(sql.SUBMIT_COUNTS))
