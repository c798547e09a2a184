-- Job statements that are not state transitions (those are rendered from the TransitionSpecs
-- of core/ledger/statements.py; docs/sql/ holds their rendered text): one per name, called by
-- the function of that name in core/ledger/jobs.py.

-- name: allocate_job_ids
-- Ids up front, so the caller maps input rows to jobs without trusting RETURNING order. The
-- sequence is looked up once (per row it cost 4 µs, 20 ms of a 5,000-job batch) and the ids
-- come back as one array, not 5,000 rows.
WITH s AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence('jobs', 'id') AS regclass) AS seq)
SELECT array_agg(nextval(s.seq)) FROM s, generate_series(1, :n);

-- name: insert_jobs
-- Multi-row insert from arrays (one round trip for thousands of jobs) with the creation
-- history rows (carrying each job's tenant, type and run for the events trigger) and one
-- outbox event per tenant in the same statement. A repeated
-- idempotency key inserts nothing; the caller looks the existing job up and compares
-- digests. A NULL id takes the next value of the sequence (the one-job fast path).
-- Rows come as one JSON array of arrays (and payloads as a parallel JSON array): encoding
-- that is a single C call, where binding thirteen text arrays costs a regex per element.
-- :limited_check names tenants whose backlog limit the caller has not counted: when one of
-- them has a limit, nothing is inserted and one NULL id comes back (the caller counts that
-- backlog, locked, and inserts again), so a submit of a tenant without a limit needs no
-- round trip of its own for the check. An empty array inserts unconditionally.
WITH limited AS (
    SELECT t.id FROM tenants AS t
    WHERE t.id = ANY(CAST(:limited_check AS bigint[])) AND t.backlog_limit IS NOT NULL
    LIMIT 1
), ins AS (
    INSERT INTO jobs (id, tenant_id, job_type, queue, priority, payload, payload_digest,
                      idempotency_key, state, max_attempts, correlation_id, replay_of,
                      run_id, rung_at, source_id, wait_reason, not_before, window_id)
    SELECT coalesce((r.v->>0)::bigint, nextval(pg_get_serial_sequence('jobs', 'id'))),
           (r.v->>1)::bigint, r.v->>2, r.v->>3, (r.v->>4)::smallint, p.v, r.v->>5, r.v->>6,
           r.v->>7, (r.v->>8)::int, r.v->>9, (r.v->>10)::bigint, (r.v->>11)::bigint,
           CASE WHEN r.v->>7 = 'queued' THEN now() END, (r.v->>12)::bigint, r.v->>13,
           -- Deferred by backpressure: no time of their own; the scheduler makes them due as
           -- their tenant's backlog drains (flow.release_backpressure).
           CASE WHEN r.v->>13 IS NOT NULL THEN now() + interval '10 years' END,
           (r.v->>14)::bigint
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS r(v, n)
    JOIN jsonb_array_elements(CAST(:payloads AS jsonb)) WITH ORDINALITY AS p(v, n) USING (n)
    WHERE NOT EXISTS (SELECT 1 FROM limited)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, state, tenant_id, job_type, run_id
), counted AS (
    INSERT INTO submit_counters (tenant_id, job_type, submitted)
    SELECT tenant_id, job_type, count(*) FROM ins GROUP BY tenant_id, job_type
    ON CONFLICT (tenant_id, job_type) DO UPDATE SET submitted = submit_counters.submitted + EXCLUDED.submitted
    RETURNING tenant_id
), history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt,
                             tenant_id, job_type, run_id)
    SELECT id, NULL, 'submit', state, now(), :actor, :reason, 0, tenant_id, job_type, run_id FROM ins
)
SELECT id FROM ins
UNION ALL
SELECT NULL FROM limited;

-- name: submit_audit
-- Not sent alone: the CTEs that stmt("insert_jobs_audited") puts between insert_jobs' CTEs
-- and its final SELECT, so that a submit's jobs and its audit row are one statement, sent
-- in autocommit: one round trip for the whole submit (docs/adr/0021). The row is
-- append_audit's for the jobs this statement inserted: its target names them ("job N", or
-- "jobs LO..HI") and its details count them; the hashed body is built from the parts
-- audit.deferred_params computed around those two values. Nothing inserted, no row.
, made AS (
    SELECT count(*) AS n, min(id) AS lo, max(id) AS hi, (SELECT count(*) FROM counted) AS counters FROM ins
), said AS (
    SELECT CASE WHEN m.n = 1 THEN 'job ' || m.lo ELSE 'jobs ' || m.lo || '..' || m.hi END AS target,
           CAST(:details_head AS text) || m.n || CAST(:details_tail AS text) AS details
    FROM made AS m
    -- Testing m.counters (at least one counter row whenever jobs were inserted) makes the
    -- upsert of `counted` run, and lock the counter rows, before the chain's head is locked
    -- below: the order of a submit in a transaction (the insert, then append_audit). Left
    -- unread, that CTE runs last, and two submits of one tenant deadlock on the two rows.
    WHERE m.n > 0 AND m.counters > 0
), appended AS (
    SELECT orch_audit_append(:chain, :subject, :scopes, :action, s.target, :tenant, :reason, :ticket,
                             CAST(s.details AS jsonb), :head,
                             CAST(:mid_head AS text) || s.details || CAST(:mid_tail AS text),
                             CAST(:tail_head AS text) || to_json(s.target)::text || CAST(:tail_tail AS text)) AS id,
           s.target, s.details
    FROM said AS s
), announce AS (
    INSERT INTO events (tenant_id, kind, payload)
    SELECT (SELECT t.id FROM tenants AS t WHERE t.name = :tenant), 'action.' || replace(:action, '.', '_'),
           jsonb_build_object('audit_id', a.id, 'action', CAST(:action AS text), 'target', a.target,
                              'reason', CAST(:reason AS text), 'ticket', CAST(:ticket AS text),
                              'details', CAST(a.details AS jsonb), 'actor', CAST(:subject AS text))
    FROM appended AS a
)

-- name: find_idempotent_jobs
SELECT j.id, j.tenant_id, j.idempotency_key, j.payload_digest, j.job_type
FROM unnest(CAST(:tenant_id AS bigint[]), CAST(:idem AS text[])) AS i(tenant_id, idem)
JOIN jobs AS j ON j.tenant_id = i.tenant_id AND j.idempotency_key = i.idem;

-- name: ensure_tenants
-- Creates the tenants that do not exist yet; returns the ids of those it created and of
-- those it can see. A name another transaction inserted concurrently is in neither (this
-- statement's snapshot predates that commit): find_tenants, a new statement, sees it.
WITH ins AS (
    INSERT INTO tenants (name) SELECT unnest(CAST(:names AS text[]))
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name
)
SELECT id, name FROM ins
UNION ALL
SELECT id, name FROM tenants WHERE name = ANY(CAST(:names AS text[]));

-- name: find_tenants
SELECT id, name FROM tenants WHERE name = ANY(CAST(:names AS text[]));

-- name: record_outcomes
-- Circuits and adaptive buckets learn from finished jobs (orch_record_outcomes).
SELECT orch_record_outcomes(CAST(:source AS bigint[]), CAST(:kind AS text[]),
    CAST(:retry_after AS float8[]), CAST(:started AS timestamptz[]), :actor);

-- name: renew_leases
-- Heartbeat for every running job of a worker process in one statement. A job missing from
-- the result has lost its lease; cancel_requested tells the handler to stop.
UPDATE jobs AS j
SET lease_expires_at = now() + make_interval(secs => i.lease_s), heartbeat_at = now()
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:lease_s AS float8[]))
     AS i(id, lease_id, lease_s)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state IN ('leased', 'running')
RETURNING j.id, j.cancel_requested;

-- name: expire_leases
-- A stopping worker gives up leases it can no longer serve, so the reaper takes them now
-- instead of after the lease would have run out.
UPDATE jobs AS j SET lease_expires_at = now() - interval '1 millisecond'
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[])) AS i(id, lease_id)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state IN ('leased', 'running');

-- name: set_progress
UPDATE jobs AS j SET progress = i.fraction, progress_message = i.message
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:fraction AS real[]),
            CAST(:message AS text[])) AS i(id, lease_id, fraction, message)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state = 'running';

-- name: insert_logs
-- Each line carries its number within the attempt (the worker counts them), so a batch
-- written again after a connection broke mid-way adds no line twice.
INSERT INTO job_logs (job_id, attempt, seq, at, level, message)
SELECT * FROM unnest(CAST(:id AS bigint[]), CAST(:attempt AS int[]), CAST(:seq AS int[]),
                     CAST(:at AS timestamptz[]), CAST(:level AS text[]), CAST(:message AS text[]))
ON CONFLICT (job_id, attempt, seq) WHERE seq IS NOT NULL DO NOTHING;

-- name: insert_artifact
-- Only the lease holder of a running job may attach an artifact.
INSERT INTO artifacts (job_id, tenant_id, attempt, name, media_type, sha256, size_bytes, data)
SELECT j.id, j.tenant_id, j.attempt, :name, :media_type, :sha256, :size_bytes, :data
FROM jobs AS j WHERE j.id = :id AND j.lease_id = :lease_id AND j.state = 'running'
RETURNING id;

-- name: request_cancel
UPDATE jobs SET cancel_requested = true, updated_at = now()
WHERE id = :id AND state IN ('leased', 'running') AND NOT cancel_requested
RETURNING id;

-- name: count_ready
-- Bounded count of a queue's ready jobs (the claim index), for the doorbell check.
SELECT count(*) FROM (
    SELECT 1 FROM jobs WHERE queue = :queue AND state = 'queued' LIMIT :cap
) AS ready;

-- name: count_stale_ready
SELECT count(*) FROM (
    SELECT 1 FROM jobs
    WHERE queue = :queue AND state = 'queued'
      AND (rung_at IS NULL OR rung_at < now() - make_interval(secs => :grace_s))
    LIMIT :cap
) AS stale;

-- name: mark_rung
-- The next :limit ready jobs of a queue get a fresh doorbell (claims take the best ready
-- job, so which ids a doorbell names does not matter, only how many doorbells exist).
UPDATE jobs SET rung_at = now()
WHERE id IN (
    SELECT id FROM jobs WHERE queue = :queue AND state = 'queued'
    ORDER BY priority DESC, id LIMIT :limit FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: next_due
SELECT min(not_before) - now() FROM jobs WHERE state IN ('retrying', 'throttled');

-- name: upsert_job_types
INSERT INTO job_types (name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s)
SELECT * FROM unnest(CAST(:name AS text[]), CAST(:queue AS text[]), CAST(:max_attempts AS int[]),
                     CAST(:base AS float8[]), CAST(:cap AS float8[]), CAST(:lease AS float8[]),
                     CAST(:heartbeat AS float8[]))
ON CONFLICT (name) DO UPDATE SET
    queue = EXCLUDED.queue, max_attempts = EXCLUDED.max_attempts,
    backoff_base_s = EXCLUDED.backoff_base_s, backoff_cap_s = EXCLUDED.backoff_cap_s,
    lease_s = EXCLUDED.lease_s, heartbeat_s = EXCLUDED.heartbeat_s, updated_at = now()
WHERE (job_types.queue, job_types.max_attempts, job_types.backoff_base_s, job_types.backoff_cap_s,
       job_types.lease_s, job_types.heartbeat_s)
   IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.max_attempts, EXCLUDED.backoff_base_s,
                     EXCLUDED.backoff_cap_s, EXCLUDED.lease_s, EXCLUDED.heartbeat_s);

-- name: job_types
SELECT name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s FROM job_types;

-- name: queues
-- Every queue some job type uses, plus 'default'.
SELECT DISTINCT queue FROM job_types UNION SELECT 'default' ORDER BY 1;

-- name: insert_event
INSERT INTO events (tenant_id, kind, payload) VALUES (:tenant_id, :kind, CAST(:payload AS jsonb));

-- name: queue_depth
-- Live jobs per tenant, queue and state, one partial index per group of states. Pending jobs
-- (jobs of runs waiting for their parents) are not queue depth: no worker could take them;
-- the runs' views count them (orch runs show, the console's Runs page).
SELECT tenant_id, queue, state, count(*) AS count FROM jobs WHERE state = 'queued' GROUP BY 1, 2, 3
UNION ALL
SELECT tenant_id, queue, state, count(*) FROM jobs WHERE state IN ('leased', 'running') GROUP BY 1, 2, 3
UNION ALL
SELECT tenant_id, queue, state, count(*) FROM jobs WHERE state IN ('retrying', 'throttled') GROUP BY 1, 2, 3;

-- name: prune_queue_depth
DELETE FROM queue_depth_samples WHERE at < now() - make_interval(days => :days);

-- name: oldest_ready
SELECT queue, extract(epoch FROM now() - min(coalesce(rung_at, created_at))) AS age_s
FROM jobs WHERE state = 'queued' GROUP BY queue;

-- name: dead_letter_depth
SELECT t.name AS tenant, (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id AND j.state = 'dead_lettered')
FROM tenants t;

-- name: submit_counts
SELECT t.name AS tenant, c.job_type, c.submitted FROM submit_counters c JOIN tenants t ON t.id = c.tenant_id;

-- name: lock_jobs
-- Jobs (with their tenant's name) locked in id order for the rest of a control transaction.
SELECT j.id, j.state, j.tenant_id, t.name AS tenant, j.job_type, j.queue, j.priority,
       j.payload, j.max_attempts, j.correlation_id, j.run_id, j.source_id
FROM jobs AS j JOIN tenants AS t ON t.id = j.tenant_id
WHERE j.id = ANY(CAST(:ids AS bigint[]))
ORDER BY j.id FOR UPDATE OF j;

-- name: tenant_id
SELECT id FROM tenants WHERE name = :name;

-- name: make_retry_due
-- An operator's retry of a retrying job: due now (the scheduler releases it on its next pass).
UPDATE jobs SET not_before = now() WHERE id = :id AND state = 'retrying';

-- name: outcomes_written
-- Which of these jobs already carry the outcome the worker is writing: the target state
-- under the worker's own lease. A batch retried after its connection broke finds the
-- outcomes that did commit here, instead of taking them for lost leases.
SELECT j.id
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[])) AS i(id, lease_id)
JOIN jobs AS j ON j.id = i.id AND j.lease_id = i.lease_id
WHERE j.state = ANY(CAST(:states AS text[]));
