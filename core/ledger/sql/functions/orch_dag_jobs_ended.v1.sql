-- name: orch_dag_jobs_ended
-- version 1, installed by migration 0005. A landed version is never edited: a change is
-- orch_dag_jobs_ended.v2.sql and a new migration that installs it.
--
-- The statement trigger on jobs (jobs_dag_advance): whatever statement ended jobs of runs
-- (a worker's outcome, a reaped lease, a cancel), their runs move on in the same
-- transaction (orch_dag_advance). One call per statement however many rows it changed;
-- plain jobs (run_id NULL) cost a scan of the transition table and nothing else.
CREATE OR REPLACE FUNCTION orch_dag_jobs_ended()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
    v_states text[];
BEGIN
    IF current_setting('orch.dag_advancing', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(n.id ORDER BY n.id), array_agg(n.state ORDER BY n.id) INTO v_ids, v_states
    FROM ended_new AS n
    JOIN ended_old AS o ON o.id = n.id
    WHERE n.run_id IS NOT NULL
      AND n.state IN ('succeeded', 'dead_lettered', 'canceled', 'upstream_failed', 'skipped')
      AND o.state NOT IN ('succeeded', 'dead_lettered', 'canceled', 'upstream_failed', 'skipped');
    IF v_ids IS NOT NULL THEN
        PERFORM orch_dag_advance(v_ids, v_states, NULL, 'orch:dag');
    END IF;
    RETURN NULL;
END
$fn$;
