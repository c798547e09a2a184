-- name: orch_job_history_events
-- version 2, installed by migration 0019. A landed version is never edited: a change is
-- orch_job_history_events.v3.sql and a new migration.
--
-- A job's state changes as outbox events (issue 12, docs/adr/0019): a statement-level
-- trigger on job_history announces the rows a statement wrote, in the same statement and so
-- in the same transaction. Every writer of job_history (the transition statements, submit,
-- DAG release) announces its changes without a line of its own.
--
-- One outbox row per tenant, target state and actor of the statement, holding its changes as
-- `jobs` (arrays of job id, job type, run id, history event, from state, state, attempt,
-- reason, in history order) and their count as `n`: a worker's batch of 100 successes is one
-- row, not 100. The relay numbers such a row with n consecutive sequence numbers, and
-- readers expand it into one orch.event.v1 envelope per job (core/domain/events.py), so the
-- stream still carries one event per change.
--
-- Version 2 (docs/adr/0023): the writers carry the job's tenant, type and run in the history
-- row itself (job_history.tenant_id, job_type, run_id, copied from the row they have just
-- updated or inserted; a job never changes them), so the trigger reads them from the
-- transition table. Version 1 looked each job up by primary key, a third of the trigger's
-- time and all of it spent while a claim held its flow-control rows locked. A row without
-- them (written by a writer older than migration 0019, during a rolling upgrade) is still
-- looked up, by primary key, as version 1 did: the lookup's one-time filter skips the probe
-- for every other row. LIMIT keeps the lateral lookup from being flattened into a hash join
-- over all of jobs (the planner knows nothing of a transition table's size).
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
               coalesce(h.tenant_id, j.tenant_id) AS tenant_id,
               CASE WHEN h.tenant_id IS NULL THEN j.job_type ELSE h.job_type END AS job_type,
               CASE WHEN h.tenant_id IS NULL THEN j.run_id ELSE h.run_id END AS run_id,
               CASE WHEN h.from_state IS NULL THEN 'job.submitted' ELSE 'job.' || h.to_state END AS kind
        FROM orch_new_history AS h
        LEFT JOIN LATERAL (
            SELECT jj.tenant_id, jj.job_type, jj.run_id FROM jobs AS jj
            WHERE h.tenant_id IS NULL AND jj.id = h.job_id LIMIT 1
        ) AS j ON true
    ) AS c
    GROUP BY c.tenant_id, c.kind, c.actor
    ORDER BY min(c.id);
    RETURN NULL;
END $fn$;
