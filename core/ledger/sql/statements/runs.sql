-- Statements of DAG runs (docs/design.md, "DAG runs"): one per name, called by the function
-- of that name in core/ledger/runs.py. Moving runs on when jobs end is the database's
-- orch_dag_advance (sql/functions), run by the jobs trigger in the finishing transaction.

-- name: insert_run
-- A repeated idempotency key inserts nothing (the caller looks the run up).
INSERT INTO runs (tenant_id, kind, name, correlation_id, params, created_by, idempotency_key, spec_digest,
                  max_jobs, jobs_total, jobs_live)
VALUES (:tenant_id, 'dag', :name, :correlation_id, CAST(:params AS jsonb), :actor, :idempotency_key, :digest,
        :max_jobs, :jobs, :jobs)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: find_run_by_key
SELECT id, spec_digest FROM runs WHERE tenant_id = :tenant_id AND idempotency_key = :idempotency_key;

-- name: insert_run_jobs
-- Rows as one JSON array of arrays: [job_id, run_id, key, rule, allow_failure, spawned_by,
-- deps_total, deps_ok, deps_failed, deps_skipped].
INSERT INTO run_jobs (job_id, run_id, key, trigger_rule, allow_failure, spawned_by,
                      deps_total, deps_ok, deps_failed, deps_skipped)
SELECT (r.v->>0)::bigint, (r.v->>1)::bigint, r.v->>2, r.v->>3, (r.v->>4)::boolean, (r.v->>5)::bigint,
       (r.v->>6)::int, (r.v->>7)::int, (r.v->>8)::int, (r.v->>9)::int
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(v);

-- name: insert_edges
INSERT INTO dag_edges (parent_id, child_id, run_id)
SELECT p, c, :run_id FROM unnest(CAST(:parent AS bigint[]), CAST(:child AS bigint[])) AS e(p, c)
ON CONFLICT DO NOTHING;

-- name: lock_run
-- The run with its tenant's name, locked until the transaction ends.
SELECT r.id, r.tenant_id, t.name AS tenant, r.name, r.state, r.attempt, r.cancel_requested, r.max_jobs,
       r.jobs_total, r.jobs_live
FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
WHERE r.id = :id
FOR UPDATE OF r;

-- name: run_row
SELECT r.id, r.tenant_id, t.name AS tenant, r.name, r.state, r.attempt, r.cancel_requested, r.max_jobs,
       r.jobs_total, r.jobs_live, r.idempotency_key, r.created_by, r.created_at, r.started_at, r.finished_at,
       r.updated_at
FROM runs AS r JOIN tenants AS t ON t.id = r.tenant_id
WHERE r.id = :id;

-- name: run_job_rows
-- The current job of every key of a run, with what a copy of it needs.
SELECT rj.job_id AS id, rj.key, rj.trigger_rule, rj.allow_failure, rj.spawned_by,
       rj.deps_total, rj.deps_ok, rj.deps_failed, rj.deps_skipped,
       j.state, j.job_type, j.queue, j.priority, j.payload, j.max_attempts, j.correlation_id, j.source_id,
       j.tenant_id, j.attempt, j.replay_of, j.wait_reason, j.not_before, j.created_at, j.started_at,
       j.finished_at, j.error_class, j.last_error, j.progress, j.cancel_requested
FROM run_jobs AS rj JOIN jobs AS j ON j.id = rj.job_id
WHERE rj.run_id = :run_id AND rj.current
ORDER BY rj.job_id;

-- name: lock_run_jobs
-- Every current job of a run, locked in id order (cancel takes these before the run row,
-- the order finishers take them in).
SELECT j.id, j.state, j.queue
FROM run_jobs AS rj JOIN jobs AS j ON j.id = rj.job_id
WHERE rj.run_id = :run_id AND rj.current
ORDER BY j.id
FOR UPDATE OF j;

-- name: request_run_cancel
UPDATE runs SET cancel_requested = true, updated_at = now() WHERE id = :id;

-- name: request_cancel_many
UPDATE jobs SET cancel_requested = true, updated_at = now()
WHERE id = ANY(CAST(:ids AS bigint[])) AND state IN ('leased', 'running');

-- name: supersede_run_jobs
UPDATE run_jobs SET current = false WHERE job_id = ANY(CAST(:ids AS bigint[]));

-- name: restart_run
-- A replay: the run runs again, one attempt later, with its new jobs counted.
UPDATE runs SET state = 'running', attempt = attempt + 1, finished_at = NULL, cancel_requested = false,
    jobs_total = jobs_total - :superseded + :added, jobs_live = jobs_live + :added, updated_at = now()
WHERE id = :id
RETURNING attempt;

-- name: grow_run
-- Jobs spawned into a running run, within its size limit; no row when it is not running,
-- canceled or full.
UPDATE runs SET jobs_total = jobs_total + :added, jobs_live = jobs_live + :added, updated_at = now()
WHERE id = :id AND state = 'running' AND NOT cancel_requested AND jobs_total + :added <= max_jobs
RETURNING jobs_total;

-- name: lock_spawner
-- The job spawning, under the caller's lease: shared, so its own outcome (and a reaper)
-- waits until the spawn commits, and its children are all wired before it can end.
SELECT j.id, j.run_id, j.tenant_id, t.name AS tenant, rj.key, j.state
FROM jobs AS j
JOIN run_jobs AS rj ON rj.job_id = j.id AND rj.current
JOIN tenants AS t ON t.id = j.tenant_id
WHERE j.id = :id AND j.lease_id = :lease_id AND j.state = 'running'
FOR SHARE OF j;

-- name: pending_children
-- A spawner's current children still pending: a join after the spawner waits for every
-- job it spawns as well.
SELECT c.job_id
FROM dag_edges AS e
JOIN run_jobs AS c ON c.job_id = e.child_id AND c.current
JOIN jobs AS j ON j.id = c.job_id AND j.state = 'pending'
WHERE e.parent_id = :id
ORDER BY c.job_id;

-- name: add_parents
UPDATE run_jobs SET deps_total = deps_total + :added WHERE job_id = ANY(CAST(:ids AS bigint[]));

-- name: advance_runs
SELECT orch_dag_advance(CAST(:done AS bigint[]), CAST(:states AS text[]), CAST(:check AS bigint[]), :actor);

-- name: ring_unrung
-- Released jobs of these runs whose doorbells nobody rang yet: the caller rings them after
-- this commits (two callers racing take each row once: the delete decides).
DELETE FROM dag_released WHERE run_id = ANY(CAST(:runs AS bigint[]))
RETURNING job_id, queue;

-- name: ring_stale_unrung
-- Scheduler: released jobs still unrung after the grace (their finisher stopped between
-- commit and doorbell).
DELETE FROM dag_released
WHERE job_id IN (
    SELECT job_id FROM dag_released
    WHERE at < now() - make_interval(secs => :grace_s)
    ORDER BY at LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING job_id, queue;

-- name: parents_of
-- A job's parents by key, with their results and artifacts (JobContext.parent).
SELECT rj.key, p.id, p.state, res.result,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name, 'media_type', a.media_type,
                                                     'sha256', a.sha256, 'size_bytes', a.size_bytes) ORDER BY a.id)
                 FROM artifacts AS a WHERE a.job_id = p.id), '[]'::jsonb) AS artifacts
FROM dag_edges AS e
JOIN jobs AS p ON p.id = e.parent_id
JOIN run_jobs AS rj ON rj.job_id = p.id
LEFT JOIN job_results AS res ON res.job_id = p.id
WHERE e.child_id = :id
ORDER BY p.id;

-- name: artifact_data
-- An artifact's bytes, if it belongs to a parent of the asking job.
SELECT a.data FROM artifacts AS a
JOIN dag_edges AS e ON e.parent_id = a.job_id AND e.child_id = :job_id
WHERE a.id = :artifact_id;

-- name: run_finished_since
-- Runs that ended after a watermark, for the run-duration histogram (scheduler).
SELECT r.id, r.state, r.finished_at, extract(epoch FROM r.finished_at - r.started_at) AS duration_s
FROM runs AS r
WHERE r.finished_at >= CAST(:after AS timestamptz) AND (r.finished_at, r.id) > (CAST(:after AS timestamptz), :after_id)
ORDER BY r.finished_at, r.id
LIMIT :limit;

-- name: run_counters
SELECT t.name AS tenant, c.state, c.finished FROM run_counters AS c JOIN tenants AS t ON t.id = c.tenant_id;

-- name: set_run_window
UPDATE runs SET window_id = :window_id WHERE id = :run_id;
