-- name: orch_job_history_events
-- version 1, installed by migration 0013. A landed version is never edited: a change is
-- orch_job_history_events.v2.sql and a new migration.
--
-- A job's state changes as outbox events (issue 12, docs/adr/0019): a statement-level
-- trigger on job_history announces the rows a statement wrote, in the same statement and so
-- in the same transaction. Every writer of job_history (the transition statements, submit,
-- DAG release) announces its changes without a line of its own.
--
-- One outbox row per tenant, target state and actor of the statement, holding its changes as
-- `jobs` (arrays of job id, job type, run id, history event, from state, state, attempt,
-- reason, in history order) and their count as `n`: a worker's batch of 100 successes is one row, not
-- 100. The relay numbers such a row with n consecutive sequence numbers, and readers expand
-- it into one orch.event.v1 envelope per job (core/domain/events.py), so the stream still
-- carries one event per change.
--
-- Each job is looked up by its primary key, one probe per history row (LIMIT keeps the
-- lateral lookup from being flattened into a hash join over all of jobs: the planner knows
-- nothing of a transition table's size). The function plans afresh on each call, so fresh
-- statistics take effect at once, and never scans jobs sequentially. Statistics that say
-- jobs is empty while it is not (an ANALYZE of the empty table, then a burst of submits)
-- can still make each probe a full scan of jobs_tenant_state_idx (id is its last column):
-- 8.8 s for a 5,000-job submit at 20,000 jobs in bench/throughput.py. The scheduler
-- therefore refreshes the statistics of jobs once the table has grown well past what they
-- describe (Scheduler.check_maintenance).
CREATE OR REPLACE FUNCTION orch_job_history_events() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan SET enable_seqscan = off AS $fn$
BEGIN
    INSERT INTO events (tenant_id, kind, n, payload)
    SELECT c.tenant_id, c.kind, count(*),
           jsonb_build_object('actor', c.actor,
                              'jobs', jsonb_agg(jsonb_build_array(c.job_id, c.job_type, c.run_id, c.event,
                                                                  c.from_state, c.to_state, c.attempt, c.reason)
                                        ORDER BY c.id))
    FROM (
        SELECT h.id, h.job_id, h.event, h.from_state, h.to_state, h.attempt, h.reason, h.actor,
               j.tenant_id, j.job_type, j.run_id,
               CASE WHEN h.from_state IS NULL THEN 'job.submitted' ELSE 'job.' || h.to_state END AS kind
        FROM orch_new_history AS h
        CROSS JOIN LATERAL (
            SELECT jj.tenant_id, jj.job_type, jj.run_id FROM jobs AS jj WHERE jj.id = h.job_id LIMIT 1
        ) AS j
    ) AS c
    GROUP BY c.tenant_id, c.kind, c.actor
    ORDER BY min(c.id);
    RETURN NULL;
END $fn$;
