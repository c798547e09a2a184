"""Flow-control rows: sources and their buckets and circuits, pauses, blackouts, quotas,
backlog limits, and the statements that let waiting jobs go when a hold is lifted.

One function per statement; each takes a Connection and never commits. Admission itself
(orch_admit) and outcome feedback (orch_record_outcomes) are database functions that the
claim and writer statements of core/ledger/sql.py call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from core.ledger import sql

Row = sa.RowMapping


def _one(conn: sa.Connection, stmt: sa.TextClause, params: Mapping[str, Any]) -> Row | None:
    return conn.execute(stmt, dict(params)).mappings().first()


def _all(conn: sa.Connection, stmt: sa.TextClause, params: Mapping[str, Any]) -> list[Row]:
    return list(conn.execute(stmt, dict(params)).mappings().all())


# -- sources and buckets ---------------------------------------------------------------

# -- name: upsert_bucket --
# A (tenant, host) bucket; a new configured rate restarts the adaptive one from it.
UPSERT_BUCKET = sql.named(
    "upsert_bucket",
    """WITH old AS (SELECT rate FROM buckets WHERE tenant_id = :tenant_id AND host = :host)
INSERT INTO buckets (tenant_id, host, capacity, base_rate, rate, tokens)
VALUES (:tenant_id, :host, :capacity, :rate, :rate, :capacity)
ON CONFLICT (tenant_id, host) DO UPDATE SET
    capacity = EXCLUDED.capacity, base_rate = EXCLUDED.base_rate, rate = EXCLUDED.rate,
    tokens = least(EXCLUDED.capacity, CASE WHEN buckets.updated_at > now() THEN buckets.tokens
        ELSE buckets.tokens + buckets.rate * extract(epoch FROM now() - buckets.updated_at) END),
    updated_at = greatest(buckets.updated_at, now()),
    streak = 0, ceiling = NULL, ceiling_at = NULL, next_slot = NULL
RETURNING id, (SELECT old.rate FROM old) AS old_rate""",
)

# -- name: find_bucket --
FIND_BUCKET = sql.named("find_bucket", "SELECT id FROM buckets WHERE tenant_id = :tenant_id AND host = :host")

# -- name: insert_source --
INSERT_SOURCE = sql.named(
    "insert_source",
    """INSERT INTO sources (tenant_id, name, host, bucket_id, max_active)
VALUES (:tenant_id, :name, :host, :bucket_id, :max_active)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id""",
)

# -- name: update_source --
UPDATE_SOURCE = sql.named(
    "update_source",
    """UPDATE sources SET host = :host, bucket_id = coalesce(:bucket_id, bucket_id), max_active = :max_active
WHERE id = :id""",
)

# -- name: lock_source --
LOCK_SOURCE = sql.named(
    "lock_source",
    """SELECT s.*, t.name AS tenant FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE t.name = :tenant AND s.name = :name FOR NO KEY UPDATE OF s""",
)

# -- name: throttle_bucket --
# A manual rate: tokens earned so far are settled at the old rate first.
THROTTLE_BUCKET = sql.named(
    "throttle_bucket",
    """UPDATE buckets AS b SET
    tokens = least(coalesce(:capacity, b.capacity), CASE WHEN b.updated_at > now() THEN b.tokens
        ELSE b.tokens + b.rate * extract(epoch FROM now() - b.updated_at) END),
    updated_at = greatest(b.updated_at, now()),
    capacity = coalesce(:capacity, b.capacity), base_rate = :rate, rate = :rate,
    streak = 0, ceiling = NULL, ceiling_at = NULL, next_slot = NULL
FROM (SELECT id, rate AS old_rate, base_rate AS old_base_rate FROM buckets WHERE id = :id FOR NO KEY UPDATE) AS o
WHERE b.id = o.id
RETURNING b.id, b.tenant_id, o.old_rate, o.old_base_rate""",
)

# -- name: insert_throttle --
INSERT_THROTTLE = sql.named(
    "insert_throttle",
    """INSERT INTO throttles (bucket_id, tenant_id, old_rate, new_rate, reason, actor)
VALUES (:bucket_id, :tenant_id, :old_rate, :new_rate, :reason, :actor)""",
)

# -- name: reset_circuit --
RESET_CIRCUIT = sql.named(
    "reset_circuit",
    """UPDATE sources AS s SET circuit_state = 'closed', circuit_until = NULL, circuit_probes = 0,
    circuit_window = '', circuit_since = now()
FROM (SELECT id, circuit_state AS old_state FROM sources WHERE id = :id FOR NO KEY UPDATE) AS o
WHERE s.id = o.id
RETURNING o.old_state""",
)


def upsert_bucket(
    conn: sa.Connection, *, tenant_id: int, host: str, rate: float, capacity: float
) -> tuple[int, float | None]:
    """The bucket's id and its rate before (None for a new bucket)."""
    row = _one(conn, UPSERT_BUCKET, {"tenant_id": tenant_id, "host": host, "rate": rate, "capacity": capacity})
    assert row is not None
    return int(row["id"]), None if row["old_rate"] is None else float(row["old_rate"])


def find_bucket(conn: sa.Connection, *, tenant_id: int, host: str) -> int | None:
    row = _one(conn, FIND_BUCKET, {"tenant_id": tenant_id, "host": host})
    return None if row is None else int(row["id"])


def insert_source(
    conn: sa.Connection, *, tenant_id: int, name: str, host: str, bucket_id: int | None, max_active: int | None
) -> int | None:
    """The new source's id, or None when the tenant already has a source of that name."""
    row = _one(
        conn,
        INSERT_SOURCE,
        {"tenant_id": tenant_id, "name": name, "host": host, "bucket_id": bucket_id, "max_active": max_active},
    )
    return None if row is None else int(row["id"])


def update_source(
    conn: sa.Connection, *, source_id: int, host: str, bucket_id: int | None, max_active: int | None
) -> None:
    conn.execute(UPDATE_SOURCE, {"id": source_id, "host": host, "bucket_id": bucket_id, "max_active": max_active})


def lock_source(conn: sa.Connection, *, tenant: str, name: str) -> Row | None:
    return _one(conn, LOCK_SOURCE, {"tenant": tenant, "name": name})


def throttle_bucket(conn: sa.Connection, *, bucket_id: int, rate: float, capacity: float | None) -> Row | None:
    return _one(conn, THROTTLE_BUCKET, {"id": bucket_id, "rate": rate, "capacity": capacity})


def insert_throttle(
    conn: sa.Connection,
    *,
    bucket_id: int,
    tenant_id: int,
    old_rate: float | None,
    new_rate: float,
    reason: str,
    actor: str,
) -> None:
    conn.execute(
        INSERT_THROTTLE,
        {
            "bucket_id": bucket_id,
            "tenant_id": tenant_id,
            "old_rate": old_rate,
            "new_rate": new_rate,
            "reason": reason,
            "actor": actor,
        },
    )


def reset_circuit(conn: sa.Connection, *, source_id: int) -> str | None:
    row = _one(conn, RESET_CIRCUIT, {"id": source_id})
    return None if row is None else str(row["old_state"])


# -- pauses ------------------------------------------------------------------------------

# -- name: insert_pause --
INSERT_PAUSE = sql.named(
    "insert_pause",
    """INSERT INTO pauses (tenant_id, source_id, job_type, reason, ticket, actor)
VALUES (:tenant_id, :source_id, :job_type, :reason, :ticket, :actor)
ON CONFLICT (tenant_id, coalesce(source_id, 0), coalesce(job_type, '')) DO NOTHING
RETURNING id""",
)

# -- name: delete_pause --
DELETE_PAUSE = sql.named(
    "delete_pause",
    """DELETE FROM pauses
WHERE tenant_id = :tenant_id AND source_id IS NOT DISTINCT FROM :source_id
  AND job_type IS NOT DISTINCT FROM CAST(:job_type AS text)
RETURNING id""",
)


def insert_pause(
    conn: sa.Connection,
    *,
    tenant_id: int,
    source_id: int | None,
    job_type: str | None,
    reason: str,
    ticket: str | None,
    actor: str,
) -> bool:
    """False when that scope was already paused."""
    params = {
        "tenant_id": tenant_id,
        "source_id": source_id,
        "job_type": job_type,
        "reason": reason,
        "ticket": ticket,
        "actor": actor,
    }
    return _one(conn, INSERT_PAUSE, params) is not None


def delete_pause(conn: sa.Connection, *, tenant_id: int, source_id: int | None, job_type: str | None) -> bool:
    """False when that scope was not paused."""
    params = {"tenant_id": tenant_id, "source_id": source_id, "job_type": job_type}
    return _one(conn, DELETE_PAUSE, params) is not None


# -- letting waiting jobs go -------------------------------------------------------------

# -- name: wake_waiting --
# Jobs held for `reason` in a scope may try again now; the scheduler releases them on its
# next pass (and rings their doorbells). Bounded per call; the caller loops.
WAKE_WAITING = sql.named(
    "wake_waiting",
    """UPDATE jobs SET not_before = now()
WHERE id IN (
    SELECT j.id FROM jobs AS j
    WHERE j.state = 'throttled' AND j.wait_reason = :reason AND j.tenant_id = :tenant_id
      AND (CAST(:source_id AS bigint) IS NULL OR j.source_id = :source_id)
      AND (CAST(:job_type AS text) IS NULL OR j.job_type = :job_type)
      AND j.not_before > now()
    ORDER BY j.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING id""",
)


def wake_waiting(
    conn: sa.Connection,
    *,
    reason: str,
    tenant_id: int,
    source_id: int | None = None,
    job_type: str | None = None,
    limit: int = 10_000,
) -> int:
    params = {"reason": reason, "tenant_id": tenant_id, "source_id": source_id, "job_type": job_type, "limit": limit}
    return len(conn.execute(WAKE_WAITING, params).all())


# -- blackouts ---------------------------------------------------------------------------

# -- name: insert_blackout --
INSERT_BLACKOUT = sql.named(
    "insert_blackout",
    """INSERT INTO blackouts (tenant_id, source_id, starts_at, ends_at, cron, duration_s, window_start, window_end,
                       reason, ticket, actor)
VALUES (:tenant_id, :source_id, :starts_at, :ends_at, :cron, :duration_s, :window_start, :window_end,
        :reason, :ticket, :actor)
RETURNING id""",
)

# -- name: delete_blackout --
DELETE_BLACKOUT = sql.named(
    "delete_blackout",
    """DELETE FROM blackouts AS b USING tenants AS t
WHERE b.id = :id AND t.id = b.tenant_id
RETURNING b.id, b.tenant_id, t.name AS tenant, b.source_id, b.window_start, b.window_end""",
)

# -- name: due_cron_blackouts --
# Recurring blackouts whose window has ended: the scheduler moves them to the next one.
DUE_CRON_BLACKOUTS = sql.named(
    "due_cron_blackouts",
    """SELECT id, cron, duration_s FROM blackouts
WHERE cron IS NOT NULL AND window_end <= now()
ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED""",
)

# -- name: move_blackout_window --
MOVE_BLACKOUT_WINDOW = sql.named(
    "move_blackout_window",
    "UPDATE blackouts SET window_start = :window_start, window_end = :window_end WHERE id = :id",
)


def insert_blackout(conn: sa.Connection, **params: Any) -> int:
    row = _one(conn, INSERT_BLACKOUT, params)
    assert row is not None
    return int(row["id"])


def delete_blackout(conn: sa.Connection, blackout_id: int) -> Row | None:
    return _one(conn, DELETE_BLACKOUT, {"id": blackout_id})


def due_cron_blackouts(conn: sa.Connection, *, limit: int) -> list[Row]:
    return _all(conn, DUE_CRON_BLACKOUTS, {"limit": limit})


def move_blackout_window(conn: sa.Connection, blackout_id: int, start: dt.datetime, end: dt.datetime) -> None:
    conn.execute(MOVE_BLACKOUT_WINDOW, {"id": blackout_id, "window_start": start, "window_end": end})


# -- quotas and backlog limits ------------------------------------------------------------

# -- name: upsert_quota --
UPSERT_QUOTA = sql.named(
    "upsert_quota",
    """INSERT INTO quotas (tenant_id, job_type, max_active, max_per_hour)
VALUES (:tenant_id, :job_type, :max_active, :max_per_hour)
ON CONFLICT (tenant_id, job_type) DO UPDATE SET
    max_active = EXCLUDED.max_active, max_per_hour = EXCLUDED.max_per_hour, updated_at = now()
RETURNING id""",
)

# -- name: delete_quota --
DELETE_QUOTA = sql.named(
    "delete_quota",
    "DELETE FROM quotas WHERE tenant_id = :tenant_id AND job_type = :job_type RETURNING id",
)

# -- name: set_backlog_limit --
SET_BACKLOG_LIMIT = sql.named(
    "set_backlog_limit",
    "UPDATE tenants SET backlog_limit = :limit, backlog_policy = :policy WHERE id = :tenant_id",
)

# -- name: backlog_of --
# A tenant's waiting jobs that count against its backlog limit (deferred ones do not),
# counted no further than the limit needs; the tenant row is locked so concurrent
# submits of one tenant take turns and cannot both use the last of the room.
BACKLOG_OF = sql.named(
    "backlog_of",
    """SELECT t.backlog_limit, t.backlog_policy, (
    SELECT count(*) FROM (
        SELECT 1 FROM jobs AS j
        WHERE j.tenant_id = t.id AND j.state IN ('pending', 'queued', 'retrying', 'throttled')
          AND j.wait_reason IS DISTINCT FROM 'backpressure'
        LIMIT t.backlog_limit + 1
    ) AS w) AS backlog
FROM tenants AS t WHERE t.id = :tenant_id AND t.backlog_limit IS NOT NULL
FOR NO KEY UPDATE OF t""",
)

# -- name: release_backpressure --
# Deferred jobs go (oldest first) as far as their tenant's backlog has room again.
RELEASE_BACKPRESSURE = sql.named(
    "release_backpressure",
    """WITH room AS (
    SELECT t.id AS tenant_id, t.backlog_limit - (
        SELECT count(*) FROM (
            SELECT 1 FROM jobs AS j
            WHERE j.tenant_id = t.id AND j.state IN ('pending', 'queued', 'retrying', 'throttled')
              AND j.wait_reason IS DISTINCT FROM 'backpressure'
            LIMIT t.backlog_limit
        ) AS w) AS room
    FROM tenants AS t
    WHERE t.backlog_limit IS NOT NULL
      AND EXISTS (SELECT 1 FROM jobs AS d WHERE d.tenant_id = t.id AND d.state = 'throttled'
                  AND d.wait_reason = 'backpressure')
)
UPDATE jobs SET not_before = now()
WHERE id IN (
    SELECT d.id FROM room, LATERAL (
        SELECT j.id FROM jobs AS j
        WHERE j.tenant_id = room.tenant_id AND j.state = 'throttled' AND j.wait_reason = 'backpressure'
        ORDER BY j.id LIMIT greatest(room.room, 0)
    ) AS d
    LIMIT :limit
)
RETURNING id""",
)


def upsert_quota(
    conn: sa.Connection, *, tenant_id: int, job_type: str, max_active: int | None, max_per_hour: int | None
) -> int:
    params = {"tenant_id": tenant_id, "job_type": job_type, "max_active": max_active, "max_per_hour": max_per_hour}
    row = _one(conn, UPSERT_QUOTA, params)
    assert row is not None
    return int(row["id"])


def delete_quota(conn: sa.Connection, *, tenant_id: int, job_type: str) -> bool:
    return _one(conn, DELETE_QUOTA, {"tenant_id": tenant_id, "job_type": job_type}) is not None


def set_backlog_limit(conn: sa.Connection, *, tenant_id: int, limit: int | None, policy: str) -> None:
    conn.execute(SET_BACKLOG_LIMIT, {"tenant_id": tenant_id, "limit": limit, "policy": policy})


def backlog_of(conn: sa.Connection, tenant_id: int) -> Row | None:
    """(backlog_limit, backlog_policy, backlog) of a tenant with a limit, else None."""
    return _one(conn, BACKLOG_OF, {"tenant_id": tenant_id})


def release_backpressure(conn: sa.Connection, *, limit: int) -> int:
    return len(conn.execute(RELEASE_BACKPRESSURE, {"limit": limit}).all())


# -- name: prune_quota_starts --
PRUNE_QUOTA_STARTS = sql.named(
    "prune_quota_starts",
    "DELETE FROM quota_starts WHERE minute < now() - interval '2 hours'",
)


def prune_quota_starts(conn: sa.Connection) -> None:
    conn.execute(PRUNE_QUOTA_STARTS)


# -- metrics, read at scrape time --------------------------------------------------------
# Each statement reads one small table (a row per bucket, source or quota) or the partial
# indexes of throttled / active jobs; nothing scans the whole ledger.

# -- name: metrics_buckets --
METRICS_BUCKETS = sql.named(
    "metrics_buckets",
    """SELECT t.name AS tenant, b.host, b.capacity, b.base_rate, b.rate,
    CASE WHEN b.updated_at > now() THEN 0
         ELSE least(b.capacity, b.tokens + b.rate * extract(epoch FROM now() - b.updated_at)) END AS tokens,
    b.denied_total, b.upstream_429_total
FROM buckets AS b JOIN tenants AS t ON t.id = b.tenant_id ORDER BY t.name, b.host""",
)

# -- name: metrics_circuits --
METRICS_CIRCUITS = sql.named(
    "metrics_circuits",
    """SELECT t.name AS tenant, s.name AS source, s.circuit_state, s.opened_total
FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id ORDER BY t.name, s.name""",
)

# -- name: metrics_quotas --
METRICS_QUOTAS = sql.named(
    "metrics_quotas",
    """SELECT t.name AS tenant, q.job_type, q.max_active,
    (SELECT count(*) FROM jobs AS a WHERE a.tenant_id = q.tenant_id AND a.job_type = q.job_type
        AND a.state IN ('leased', 'running')) AS active
FROM quotas AS q JOIN tenants AS t ON t.id = q.tenant_id ORDER BY t.name, q.job_type""",
)

# -- name: metrics_waiting --
METRICS_WAITING = sql.named(
    "metrics_waiting",
    """SELECT t.name AS tenant, w.wait_reason, w.n
FROM (SELECT tenant_id, wait_reason, count(*) AS n FROM jobs WHERE state = 'throttled' GROUP BY 1, 2) AS w
JOIN tenants AS t ON t.id = w.tenant_id""",
)


def metrics_buckets(conn: sa.Connection) -> list[Row]:
    return _all(conn, METRICS_BUCKETS, {})


def metrics_circuits(conn: sa.Connection) -> list[Row]:
    return _all(conn, METRICS_CIRCUITS, {})


def metrics_quotas(conn: sa.Connection) -> list[Row]:
    return _all(conn, METRICS_QUOTAS, {})


def metrics_waiting(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """(tenant, wait_reason, throttled jobs)."""
    return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(METRICS_WAITING)]
