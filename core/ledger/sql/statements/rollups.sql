-- Statements of the console's rollups (docs/design.md, "Reads on a big ledger"): one per name,
-- called by the function of that name in core/ledger/rollups.py. The scheduler's rollup step
-- runs them (never the workers); retention's delete_jobs takes off what it deletes.

-- name: ensure_rollup_mark
INSERT INTO rollup_marks (name, until) VALUES ('job_finish', timestamptz 'epoch') ON CONFLICT (name) DO NOTHING;

-- name: lock_rollup_mark
-- Serialises the rollup step (two schedulers, a pass overlapping the next) and retention's
-- deletes: whoever holds the mark sees every job the others committed before it.
SELECT until FROM rollup_marks WHERE name = 'job_finish' FOR UPDATE;

-- name: rollup_horizon
-- How far the rollup may go: a grace before now, and before the start of any transaction
-- still open in this database (finished_at is its now(): it may commit a finish older than
-- the grace), unless that one has been open longer than :max_xact_s. A statement of its own,
-- sent before roll_up_finished in the same transaction: a transaction open when this one
-- reads pg_stat_activity holds the horizon back, and one that committed before is in
-- roll_up_finished's later snapshot. Read inside roll_up_finished, a transaction still open
-- at that statement's snapshot but committed before it read the activity was in neither,
-- and the finishes it committed were passed over for good.
SELECT least(now() - make_interval(secs => :grace_s),
             coalesce((SELECT min(a.xact_start) FROM pg_stat_activity AS a
                       WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                         AND a.xact_start > now() - make_interval(secs => :max_xact_s)),
                      'infinity')) AS horizon;

-- name: roll_up_finished
-- Jobs that finished in [:until, upto) go into their 5-minute bucket and the totals, and the
-- mark moves to upto: at most about :limit jobs on (the :limit-th finish time, to the
-- microsecond after it, so jobs that share it go together), and never past :horizon
-- (rollup_horizon, read by an earlier statement of this transaction).
WITH h AS (
    SELECT CAST(:horizon AS timestamptz) AS horizon
), n AS (
    SELECT (SELECT j.finished_at FROM jobs AS j WHERE j.finished_at >= CAST(:until AS timestamptz)
            ORDER BY j.finished_at OFFSET :limit - 1 LIMIT 1) AS nth
), b AS (
    SELECT greatest(CAST(:until AS timestamptz),
                    least(h.horizon, coalesce(n.nth + interval '1 microsecond', h.horizon))) AS upto,
           n.nth IS NOT NULL AND n.nth + interval '1 microsecond' < h.horizon AS full
    FROM h, n
), f AS (
    SELECT j.tenant_id, j.job_type, date_bin('5 minutes', j.finished_at, timestamptz 'epoch') AS bucket, j.state
    FROM jobs AS j, b
    WHERE j.finished_at >= CAST(:until AS timestamptz) AND j.finished_at < b.upto
      AND j.state IN ('succeeded', 'dead_lettered', 'canceled')
), r AS (
    INSERT INTO job_finish_rollups AS r (tenant_id, job_type, bucket, succeeded, dead_lettered, canceled)
    SELECT tenant_id, job_type, bucket, count(*) FILTER (WHERE state = 'succeeded'),
           count(*) FILTER (WHERE state = 'dead_lettered'), count(*) FILTER (WHERE state = 'canceled')
    FROM f GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, job_type, bucket) DO UPDATE
        SET succeeded = r.succeeded + EXCLUDED.succeeded, dead_lettered = r.dead_lettered + EXCLUDED.dead_lettered,
            canceled = r.canceled + EXCLUDED.canceled
    RETURNING 1
), t AS (
    INSERT INTO job_state_totals AS k (tenant_id, state, jobs)
    SELECT tenant_id, state, count(*) FROM f WHERE state IN ('succeeded', 'canceled') GROUP BY 1, 2
    ON CONFLICT (tenant_id, state) DO UPDATE SET jobs = k.jobs + EXCLUDED.jobs
    RETURNING 1
), m AS (
    UPDATE rollup_marks SET until = b.upto FROM b WHERE rollup_marks.name = 'job_finish' RETURNING rollup_marks.until
)
SELECT (SELECT until FROM m) AS until, (SELECT count(*) FROM f) AS jobs, b.full,
       (SELECT count(*) FROM r) + (SELECT count(*) FROM t) AS rows
FROM b;

-- name: prune_rollup_buckets
-- Buckets older than any window a read sums (the totals keep their jobs).
DELETE FROM job_finish_rollups WHERE bucket < now() - make_interval(days => :days);

-- name: summarize_created_brin
-- The block ranges of jobs appended since the last call (what autovacuum does when it runs).
SELECT brin_summarize_new_values('jobs_created_brin');
