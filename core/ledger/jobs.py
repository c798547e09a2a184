"""Job ledger statements: one function per statement of core/ledger/sql/statements/jobs.sql
(named alike) and per transition of core/ledger/statements.py.

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
from core.domain.jobtypes import JobTypeRow
from core.ledger.statements import stmt, transition

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
    #: The event-time window the job does (schedules, backfills).
    window_id: int | None = None


def ensure_tenants(conn: sa.Connection, names: Sequence[str]) -> dict[str, int]:
    """{name: id} of these tenants, creating those that do not exist (concurrent creators of
    one name get the same id, without taking a lock)."""
    rows = _rows(conn, stmt("ensure_tenants"), {"names": list(names)})
    found = {r["name"]: r["id"] for r in rows}
    missing = [n for n in names if n not in found]
    if missing:
        found.update({r["name"]: r["id"] for r in _rows(conn, stmt("find_tenants"), {"names": missing})})
    return found


def allocate_job_ids(conn: sa.Connection, n: int) -> list[int]:
    return list(conn.execute(stmt("allocate_job_ids"), {"n": n}).scalar_one() or [])


def insert_jobs(conn: sa.Connection, jobs: Sequence[NewJob], *, actor: str, reason: str | None) -> set[int]:
    """Insert jobs and their creation history (whose trigger writes a job.submitted event per job); returns
    the ids actually inserted (a job whose idempotency key already exists is skipped)."""
    got = insert_jobs_unless_limited(conn, jobs, actor=actor, reason=reason, tenant_ids=())
    assert got is not None  # nothing to check: always inserts
    return got


def insert_jobs_unless_limited(
    conn: sa.Connection,
    jobs: Sequence[NewJob],
    *,
    actor: str,
    reason: str | None,
    tenant_ids: Sequence[int],
    audit: Mapping[str, Any] | None = None,
) -> set[int] | None:
    """insert_jobs, unless one of `tenant_ids` has a backlog limit: then nothing is inserted
    and None comes back (the caller counts the backlog and inserts with insert_jobs).

    With `audit` (audit.deferred_params of the submit's entry, whose reason must be
    `reason`), the same statement appends the submit's audit row for the jobs it inserted
    (insert_jobs_audited)."""
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
                j.window_id,
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
        "limited_check": list(tenant_ids),
    }
    if audit is not None:
        if audit.get("reason") != reason:
            raise ValueError("the audit row's reason must be the history's")
        params.update(audit)
    ids = {r[0] for r in conn.execute(stmt("insert_jobs" if audit is None else "insert_jobs_audited"), params)}
    return None if None in ids else ids


def find_idempotent_jobs(conn: sa.Connection, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], Row]:
    rows = _rows(
        conn,
        stmt("find_idempotent_jobs"),
        {"tenant_id": [k[0] for k in keys], "idem": [k[1] for k in keys]},
    )
    return {(r["tenant_id"], r["idempotency_key"]): r for r in rows}


def claim_jobs(conn: sa.Connection, *, queue: str, limit: int, owner: str, job_types: Sequence[str]) -> list[Row]:
    """queued -> leased for up to `limit` jobs of `queue` whose type the caller can run
    (best priority, then oldest)."""
    return _rows(
        conn,
        transition("claim_jobs"),
        {"queue": queue, "limit": limit, "owner": owner, "actor": owner, "job_types": list(job_types)},
    )


def claim_and_start_jobs(
    conn: sa.Connection, *, queue: str, limit: int, owner: str, job_types: Sequence[str]
) -> list[Row]:
    """queued -> leased -> running in one statement, counting the attempt; for handlers that
    start at once. Rows carry the new attempt number and everything the handler needs."""
    return _rows(
        conn,
        transition("claim_and_start_jobs"),
        {"queue": queue, "limit": limit, "owner": owner, "actor": owner, "job_types": list(job_types)},
    )


def succeed_and_claim_jobs(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    *,
    queue: str,
    limit: int,
    owner: str,
    job_types: Sequence[str],
) -> tuple[set[int], list[Row]]:
    """running -> succeeded for these jobs (no results), then claim_and_start_jobs, in one
    statement. Returns the ids that took the success and the claimed rows. A job missing
    from the ids lost its lease, or its row was locked by another transaction (skipped, not
    waited for): succeed_jobs, which waits, tells the two apart."""
    got = _rows(
        conn,
        transition("succeed_and_claim_jobs"),
        {
            "id": list(ids),
            "lease_id": list(leases),
            "queue": queue,
            "limit": limit,
            "owner": owner,
            "actor": owner,
            "job_types": list(job_types),
        },
    )
    succeeded = set(got[0]["succeeded"] or ()) if got else set()
    return succeeded, [r for r in got if r["id"] is not None]


def ack_jobs(conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], *, actor: str) -> list[Row]:
    """leased -> running; counts the attempt."""
    return _rows(conn, transition("ack_jobs"), {"id": list(ids), "lease_id": list(leases), "actor": actor})


def succeed_jobs(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    *,
    actor: str,
    results: Sequence[str | None] | None = None,
) -> list[Row]:
    """running -> succeeded; `results` (JSON text or None per job) are stored with it."""
    params = {
        "id": list(ids),
        "lease_id": list(leases),
        "result": list(results) if results is not None else [None] * len(ids),
        "actor": actor,
    }
    return _rows(conn, transition("succeed_jobs"), params)


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
        transition("fail_retryable_jobs"),
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
        transition("fail_final_jobs"),
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
        transition("throttle_jobs"),
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
            stmt("record_outcomes"),
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
    return _rows(conn, transition("cancel_running_jobs"), {"id": list(ids), "lease_id": list(leases), "actor": actor})


def cancel_waiting_jobs(conn: sa.Connection, ids: Sequence[int], *, actor: str, reason: str | None) -> list[Row]:
    return _rows(conn, transition("cancel_waiting_jobs"), {"id": list(ids), "actor": actor, "reason": reason})


def lock_jobs(conn: sa.Connection, job_ids: Sequence[int]) -> list[Row]:
    """The jobs (with their tenant's name), locked in id order until the transaction ends."""
    return _rows(conn, stmt("lock_jobs"), {"ids": list(job_ids)})


def tenant_id(conn: sa.Connection, name: str) -> int | None:
    value = conn.execute(stmt("tenant_id"), {"name": name}).scalar()
    return None if value is None else int(value)


def make_retry_due(conn: sa.Connection, job_id: int) -> bool:
    """A retrying job is due now; False when it is not retrying."""
    return conn.execute(stmt("make_retry_due"), {"id": job_id}).rowcount > 0


def request_cancel(conn: sa.Connection, job_id: int) -> bool:
    return conn.execute(stmt("request_cancel"), {"id": job_id}).first() is not None


def reap_leased_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, transition("reap_leased_jobs"), {"limit": limit, "actor": actor})


def reap_running_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, transition("reap_running_jobs"), {"limit": limit, "actor": actor})


def release_due_jobs(conn: sa.Connection, *, limit: int, actor: str) -> list[Row]:
    return _rows(conn, transition("release_due_jobs"), {"limit": limit, "actor": actor})


def renew_leases(
    conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], lease_s: Sequence[float]
) -> dict[int, bool]:
    """Extend leases; returns {job_id: cancel_requested} for the leases still held."""
    rows = conn.execute(stmt("renew_leases"), {"id": list(ids), "lease_id": list(leases), "lease_s": list(lease_s)})
    return {r[0]: r[1] for r in rows}


def expire_leases(conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID]) -> None:
    if ids:
        conn.execute(stmt("expire_leases"), {"id": list(ids), "lease_id": list(leases)})


def set_progress(
    conn: sa.Connection,
    ids: Sequence[int],
    leases: Sequence[uuid.UUID],
    fractions: Sequence[float],
    messages: Sequence[str | None],
) -> None:
    conn.execute(
        stmt("set_progress"),
        {"id": list(ids), "lease_id": list(leases), "fraction": list(fractions), "message": list(messages)},
    )


def insert_logs(
    conn: sa.Connection,
    ids: Sequence[int],
    attempts: Sequence[int],
    seqs: Sequence[int],
    ats: Sequence[dt.datetime],
    levels: Sequence[str],
    messages: Sequence[str],
) -> None:
    """Append log lines; a line whose (job, attempt, seq) is stored already is skipped, so
    writing a batch twice writes it once."""
    conn.execute(
        stmt("insert_logs"),
        {
            "id": list(ids),
            "attempt": list(attempts),
            "seq": list(seqs),
            "at": list(ats),
            "level": list(levels),
            "message": list(messages),
        },
    )


def outcomes_written(
    conn: sa.Connection, ids: Sequence[int], leases: Sequence[uuid.UUID], states: Sequence[str]
) -> set[int]:
    """The jobs among `ids` that are in one of `states` under the given leases: outcomes a
    retried write finds already committed."""
    rows = conn.execute(stmt("outcomes_written"), {"id": list(ids), "lease_id": list(leases), "states": list(states)})
    return {int(r[0]) for r in rows}


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
        stmt("insert_artifact"),
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
    return int(conn.execute(stmt("count_ready"), {"queue": queue, "cap": cap}).scalar_one())


def count_stale_ready(conn: sa.Connection, *, queue: str, grace_s: float, cap: int) -> int:
    return int(conn.execute(stmt("count_stale_ready"), {"queue": queue, "grace_s": grace_s, "cap": cap}).scalar_one())


def mark_rung(conn: sa.Connection, *, queue: str, limit: int) -> list[int]:
    return [r[0] for r in conn.execute(stmt("mark_rung"), {"queue": queue, "limit": limit})]


def seconds_to_next_due(conn: sa.Connection) -> float | None:
    value = conn.execute(stmt("next_due")).scalar_one()
    return None if value is None else float(value.total_seconds())


def upsert_job_types(conn: sa.Connection, types: Sequence[JobTypeRow]) -> None:
    if not types:
        return
    conn.execute(
        stmt("upsert_job_types"),
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
    rows = conn.execute(stmt("job_types"))
    return {r[0]: JobTypeRow(*r) for r in rows}


def queues(conn: sa.Connection) -> list[str]:
    """Every queue some job type uses, plus 'default'."""
    rows = conn.execute(stmt("queues"))
    return [r[0] for r in rows]


def insert_event(conn: sa.Connection, *, tenant_id: int | None, kind: str, payload: Mapping[str, Any]) -> None:
    conn.execute(
        stmt("insert_event"), {"tenant_id": tenant_id, "kind": kind, "payload": json.dumps(payload, sort_keys=True)}
    )


def queue_depth(conn: sa.Connection) -> list[sa.Row[Any]]:
    """(tenant_id, queue, state, count) for live jobs."""
    return list(conn.execute(stmt("queue_depth")))


def sample_queue_depth(conn: sa.Connection, *, keep_days: int = 7) -> None:
    conn.execute(stmt("sample_queue_depth"))
    conn.execute(stmt("prune_queue_depth"), {"days": keep_days})


def oldest_ready(conn: sa.Connection) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute(stmt("oldest_ready"))}


def dead_letter_depth(conn: sa.Connection) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(stmt("dead_letter_depth"))}


def submit_counts(conn: sa.Connection) -> list[sa.Row[Any]]:
    return list(conn.execute(stmt("submit_counts")))
