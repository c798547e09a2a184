-- Statements of retention (docs/design.md, "Retention"): one per name, called by the function
-- of that name in core/ledger/retention.py. Every statement is bounded by :limit and takes
-- only rows that have ended, so claims never wait on it.

-- name: retention_groups
-- Each tenant with its retention in days (its own, or the default).
SELECT id, name, coalesce(retention_days, :default_days) AS days FROM tenants ORDER BY id;

-- name: prunable_jobs
-- Plain jobs of a tenant that ended (not dead-lettered) before its cutoff, oldest first, and
-- that no kept job replays (a replay_of never dangles: the newer job goes first).
SELECT j.id FROM jobs AS j
WHERE j.tenant_id = :tenant_id AND j.finished_at IS NOT NULL AND j.run_id IS NULL AND j.state <> 'dead_lettered'
  AND j.finished_at < now() - make_interval(days => :days)
  AND NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.replay_of = j.id)
ORDER BY j.finished_at
LIMIT :limit
FOR UPDATE OF j SKIP LOCKED;

-- name: prunable_runs
-- Runs of a tenant that ended before its cutoff, with every job ended and none dead-lettered:
-- a run goes as a unit.
SELECT r.id FROM runs AS r
WHERE r.tenant_id = :tenant_id AND r.finished_at IS NOT NULL AND r.state <> 'running'
  AND r.finished_at < now() - make_interval(days => :days)
  AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.run_id = r.id
                  AND (j.state = 'dead_lettered' OR j.finished_at IS NULL
                       OR j.finished_at >= now() - make_interval(days => :days)))
  AND NOT EXISTS (SELECT 1 FROM jobs AS o JOIN jobs AS j ON o.replay_of = j.id
                  WHERE j.run_id = r.id AND o.run_id IS DISTINCT FROM r.id)
ORDER BY r.finished_at
LIMIT :limit
FOR UPDATE OF r SKIP LOCKED;

-- name: run_job_ids
SELECT id FROM jobs WHERE run_id = ANY(CAST(:runs AS bigint[]));

-- name: delete_jobs
-- The jobs and everything hanging off them, in one statement (foreign keys are checked at
-- its end, when all of it is gone). Returns how many rows of each kind went. The updates of
-- the rollups run though no SELECT reads them (every data-modifying WITH runs to its end).
WITH ids AS (SELECT unnest(CAST(:ids AS bigint[])) AS id),
h AS (DELETE FROM job_history WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
l AS (DELETE FROM job_logs WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
a AS (DELETE FROM artifacts WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
r AS (DELETE FROM job_results WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
rj AS (DELETE FROM run_jobs WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
e AS (DELETE FROM dag_edges WHERE parent_id IN (SELECT id FROM ids) OR child_id IN (SELECT id FROM ids) RETURNING 1),
d AS (DELETE FROM dag_released WHERE job_id IN (SELECT id FROM ids) RETURNING 1),
j AS (DELETE FROM jobs WHERE id IN (SELECT id FROM ids) RETURNING tenant_id, job_type, state, finished_at),
-- The console's rollups (rollups.sql) hold the jobs that finished before their mark: those
-- deleted come off them. The mark's lock orders this against the rollup step.
m AS (SELECT coalesce((SELECT until FROM rollup_marks WHERE name = 'job_finish' FOR UPDATE), timestamptz 'epoch')
             AS until),
gone AS (SELECT j.tenant_id, j.job_type, j.state, date_bin('5 minutes', j.finished_at, timestamptz 'epoch') AS bucket
         FROM j, m WHERE j.finished_at < m.until AND j.state IN ('succeeded', 'dead_lettered', 'canceled')),
rb AS (UPDATE job_finish_rollups AS ro
       SET succeeded = ro.succeeded - g.s, dead_lettered = ro.dead_lettered - g.d, canceled = ro.canceled - g.c
       FROM (SELECT tenant_id, job_type, bucket, count(*) FILTER (WHERE state = 'succeeded') AS s,
                    count(*) FILTER (WHERE state = 'dead_lettered') AS d,
                    count(*) FILTER (WHERE state = 'canceled') AS c
             FROM gone GROUP BY 1, 2, 3) AS g
       WHERE ro.tenant_id = g.tenant_id AND ro.job_type = g.job_type AND ro.bucket = g.bucket RETURNING 1),
rt AS (UPDATE job_state_totals AS k SET jobs = k.jobs - g.n
       FROM (SELECT tenant_id, state, count(*) AS n FROM gone WHERE state IN ('succeeded', 'canceled') GROUP BY 1, 2) AS g
       WHERE k.tenant_id = g.tenant_id AND k.state = g.state RETURNING 1)
SELECT (SELECT count(*) FROM j) AS jobs, (SELECT count(*) FROM h) AS history, (SELECT count(*) FROM l) AS logs,
       (SELECT count(*) FROM a) AS artifacts, (SELECT count(*) FROM r) AS results;

-- name: delete_runs
WITH d AS (DELETE FROM runs WHERE id = ANY(CAST(:runs AS bigint[])) RETURNING 1) SELECT count(*) FROM d;

-- name: prune_events
-- The outbox keeps its own window (the event stream's resume window), pruned from the start
-- of the stream: the numbered rows, in stream order, up to the first one still inside the
-- window. A row that committed late (an old time, a later number) waits for the rows before
-- it, so the stream never has a hole a reader could not be told about, and a row the relay
-- has not numbered yet is never pruned.
WITH head AS (
    SELECT id, seq, at < now() - make_interval(days => :days) AS old
    FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT :limit
), d AS (
    DELETE FROM events WHERE id IN (
        SELECT id FROM head WHERE old AND seq < coalesce((SELECT min(seq) FROM head WHERE NOT old), 9223372036854775807)
    ) RETURNING 1
)
SELECT count(*) FROM d;

-- name: count_pruned
INSERT INTO prune_counters (kind, removed)
SELECT k, n FROM unnest(CAST(:kind AS text[]), CAST(:n AS bigint[])) AS c(k, n) WHERE n > 0
ON CONFLICT (kind) DO UPDATE SET removed = prune_counters.removed + EXCLUDED.removed;

-- name: pruned_totals
SELECT kind, removed FROM prune_counters ORDER BY kind;

-- name: count_old_events
-- What prune_events would remove: the numbered rows before the first one inside the window.
SELECT count(*) FROM events
WHERE seq IS NOT NULL AND seq < coalesce(
    (SELECT seq FROM events WHERE seq IS NOT NULL AND at >= now() - make_interval(days => :days) ORDER BY seq LIMIT 1),
    9223372036854775807);

-- name: set_tenant_retention
UPDATE tenants SET retention_days = :days WHERE name = :tenant RETURNING id;
