-- Flow-control statements: one per name, called by the function of that name in
-- core/ledger/flow.py. The tokens of a bucket (orch_bucket_tokens), a job holding an active
-- slot (orch_holds_slot) and a tenant's backlog (orch_tenant_backlog) are database functions
-- (core/ledger/sql/functions), each defined once.

-- name: upsert_bucket
-- A (tenant, host) bucket; a new configured rate restarts the adaptive one from it.
WITH old AS (SELECT rate FROM buckets WHERE tenant_id = :tenant_id AND host = :host)
INSERT INTO buckets (tenant_id, host, capacity, base_rate, rate, tokens)
VALUES (:tenant_id, :host, :capacity, :rate, :rate, :capacity)
ON CONFLICT (tenant_id, host) DO UPDATE SET
    capacity = EXCLUDED.capacity, base_rate = EXCLUDED.base_rate, rate = EXCLUDED.rate,
    -- Tokens earned so far are settled at the old rate (a block of a Retry-After stays).
    tokens = least(EXCLUDED.capacity, orch_bucket_tokens(buckets, greatest(buckets.updated_at, now()))),
    updated_at = greatest(buckets.updated_at, now()),
    streak = 0, ceiling = NULL, ceiling_at = NULL, next_slot = NULL
RETURNING id, (SELECT old.rate FROM old) AS old_rate;

-- name: find_bucket
SELECT id FROM buckets WHERE tenant_id = :tenant_id AND host = :host;

-- name: insert_source
INSERT INTO sources (tenant_id, name, host, bucket_id, max_active, allow_private)
VALUES (:tenant_id, :name, :host, :bucket_id, :max_active, :allow_private)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id;

-- name: update_source
UPDATE sources SET host = :host, bucket_id = coalesce(:bucket_id, bucket_id), max_active = :max_active,
    allow_private = :allow_private
WHERE id = :id;

-- name: source_ids
SELECT t.name AS tenant, s.name, s.id FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE (t.name, s.name) IN (SELECT * FROM unnest(CAST(:t AS text[]), CAST(:n AS text[])));

-- name: source_policy
-- What the jobs of a source may fetch: its host, and whether private addresses are allowed.
SELECT id, name, host, allow_private FROM sources WHERE id = :id;

-- name: lock_source
SELECT s.*, t.name AS tenant FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE t.name = :tenant AND s.name = :name FOR NO KEY UPDATE OF s;

-- name: throttle_bucket
-- A manual rate: tokens earned so far are settled at the old rate first.
UPDATE buckets AS b SET
    tokens = least(coalesce(:capacity, b.capacity), orch_bucket_tokens(b, greatest(b.updated_at, now()))),
    updated_at = greatest(b.updated_at, now()),
    capacity = coalesce(:capacity, b.capacity), base_rate = :rate, rate = :rate,
    streak = 0, ceiling = NULL, ceiling_at = NULL, next_slot = NULL
FROM (SELECT id, rate AS old_rate, base_rate AS old_base_rate FROM buckets WHERE id = :id FOR NO KEY UPDATE) AS o
WHERE b.id = o.id
RETURNING b.id, b.tenant_id, o.old_rate, o.old_base_rate;

-- name: insert_throttle
INSERT INTO throttles (bucket_id, tenant_id, old_rate, new_rate, reason, actor)
VALUES (:bucket_id, :tenant_id, :old_rate, :new_rate, :reason, :actor);

-- name: reset_circuit
UPDATE sources AS s SET circuit_state = 'closed', circuit_until = NULL, circuit_probes = 0,
    circuit_window = '', circuit_since = now()
FROM (SELECT id, circuit_state AS old_state FROM sources WHERE id = :id FOR NO KEY UPDATE) AS o
WHERE s.id = o.id
RETURNING o.old_state;

-- name: insert_pause
INSERT INTO pauses (tenant_id, source_id, job_type, reason, ticket, actor)
VALUES (:tenant_id, :source_id, :job_type, :reason, :ticket, :actor)
ON CONFLICT (tenant_id, coalesce(source_id, 0), coalesce(job_type, '')) DO NOTHING
RETURNING id;

-- name: delete_pause
DELETE FROM pauses
WHERE tenant_id = :tenant_id AND source_id IS NOT DISTINCT FROM :source_id
  AND job_type IS NOT DISTINCT FROM CAST(:job_type AS text)
RETURNING id;

-- name: wake_waiting
-- Every job held for `reason` in a scope may try again now, however many: the control call
-- that lifted the hold runs this in its own transaction, so a crash cannot separate the two.
-- The scheduler's release_due_jobs then moves them to queued in bounded batches (and rings
-- their doorbells). Rows are locked in id order and not skipped: a job another transaction
-- holds is waited for and re-checked, never left behind.
WITH held AS MATERIALIZED (
    SELECT j.id FROM jobs AS j
    WHERE j.state = 'throttled' AND j.wait_reason = :reason AND j.tenant_id = :tenant_id
      AND (CAST(:source_id AS bigint) IS NULL OR j.source_id = :source_id)
      AND (CAST(:job_type AS text) IS NULL OR j.job_type = :job_type)
      AND j.not_before > now()
    ORDER BY j.id
    FOR UPDATE
), woken AS (
    -- By primary key from the locked set (an IN (subquery) here let stale statistics pick a
    -- nested loop that scanned the held set once per held job).
    UPDATE jobs AS w SET not_before = now() FROM held WHERE w.id = held.id
    RETURNING 1
)
SELECT count(*) FROM woken;

-- name: insert_blackout
INSERT INTO blackouts (tenant_id, source_id, starts_at, ends_at, cron, duration_s, window_start, window_end,
                       reason, ticket, actor)
VALUES (:tenant_id, :source_id, :starts_at, :ends_at, :cron, :duration_s, :window_start, :window_end,
        :reason, :ticket, :actor)
RETURNING id;

-- name: delete_blackout
DELETE FROM blackouts AS b USING tenants AS t
WHERE b.id = :id AND t.id = b.tenant_id
RETURNING b.id, b.tenant_id, t.name AS tenant, b.source_id, b.window_start, b.window_end;

-- name: due_cron_blackouts
-- Recurring blackouts whose window has ended: the scheduler moves them to the next one.
SELECT id, cron, duration_s FROM blackouts
WHERE cron IS NOT NULL AND window_end <= now()
ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED;

-- name: move_blackout_window
UPDATE blackouts SET window_start = :window_start, window_end = :window_end WHERE id = :id;

-- name: upsert_quota
INSERT INTO quotas (tenant_id, job_type, max_active, max_per_hour)
VALUES (:tenant_id, :job_type, :max_active, :max_per_hour)
ON CONFLICT (tenant_id, job_type) DO UPDATE SET
    max_active = EXCLUDED.max_active, max_per_hour = EXCLUDED.max_per_hour, updated_at = now()
RETURNING id;

-- name: delete_quota
DELETE FROM quotas WHERE tenant_id = :tenant_id AND job_type = :job_type RETURNING id;

-- name: set_backlog_limit
UPDATE tenants SET backlog_limit = :limit, backlog_policy = :policy WHERE id = :tenant_id;

-- name: backlog_of
-- A tenant's waiting jobs that count against its backlog limit (deferred ones do not),
-- counted no further than the limit needs; the tenant row is locked so concurrent
-- submits of one tenant take turns and cannot both use the last of the room.
SELECT t.backlog_limit, t.backlog_policy, orch_tenant_backlog(t.id, t.backlog_limit + 1) AS backlog
FROM tenants AS t WHERE t.id = :tenant_id AND t.backlog_limit IS NOT NULL
FOR NO KEY UPDATE OF t;

-- name: release_backpressure
-- Deferred jobs go (oldest first) as far as their tenant's backlog has room again.
WITH room AS (
    SELECT t.id AS tenant_id, t.backlog_limit - orch_tenant_backlog(t.id, t.backlog_limit) AS room
    FROM tenants AS t
    WHERE t.backlog_limit IS NOT NULL
      AND EXISTS (SELECT 1 FROM jobs AS d WHERE d.tenant_id = t.id AND d.state = 'throttled'
                  AND d.wait_reason = 'backpressure')
)
, picked AS MATERIALIZED (
    SELECT d.id FROM room, LATERAL (
        SELECT j.id FROM jobs AS j
        WHERE j.tenant_id = room.tenant_id AND j.state = 'throttled' AND j.wait_reason = 'backpressure'
        ORDER BY j.id LIMIT greatest(room.room, 0)
    ) AS d
    LIMIT :limit
)
-- By primary key from the picked set, as wake_waiting does.
UPDATE jobs AS w SET not_before = now() FROM picked
WHERE w.id = picked.id AND w.state = 'throttled' AND w.wait_reason = 'backpressure'
RETURNING w.id;

-- name: prune_quota_starts
DELETE FROM quota_starts WHERE minute < now() - interval '2 hours';

-- name: prune_reservations
-- Reservations of room that expired a minute ago and that no claim of their quota deleted
-- (orch_admit deletes the expired ones it counts; these belong to a bucket only, or to a
-- group nobody claimed since). One a claim still holds is left for the next pass.
DELETE FROM admission_reservations AS r WHERE r.id IN (
    SELECT o.id FROM admission_reservations AS o WHERE o.expires_at < now() - interval '1 minute'
    FOR UPDATE SKIP LOCKED);

-- name: metrics_buckets
SELECT t.name AS tenant, b.host, b.capacity, b.base_rate, b.rate,
    greatest(orch_bucket_tokens(b), 0) AS tokens,
    b.denied_total, b.upstream_429_total
FROM buckets AS b JOIN tenants AS t ON t.id = b.tenant_id ORDER BY t.name, b.host;

-- name: metrics_circuits
SELECT t.name AS tenant, s.name AS source, s.circuit_state, s.opened_total
FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id ORDER BY t.name, s.name;

-- name: metrics_quotas
SELECT t.name AS tenant, q.job_type, q.max_active,
    (SELECT count(*) FROM jobs AS a WHERE a.tenant_id = q.tenant_id AND a.job_type = q.job_type
        AND orch_holds_slot(a.state)) AS active
FROM quotas AS q JOIN tenants AS t ON t.id = q.tenant_id ORDER BY t.name, q.job_type;

-- name: metrics_waiting
SELECT t.name AS tenant, w.wait_reason, w.n
FROM (SELECT tenant_id, wait_reason, count(*) AS n FROM jobs WHERE state = 'throttled' GROUP BY 1, 2) AS w
JOIN tenants AS t ON t.id = w.tenant_id;
