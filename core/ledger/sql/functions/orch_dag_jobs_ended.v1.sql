-- name: orch_dag_jobs_ended
-- version 1, installed by migration 0005. A landed version is never edited: a change is
-- orch_dag_jobs_ended.v2.sql and a new migration that installs it.
--
-- The statement trigger on jobs (jobs_dag_advance): the jobs of runs that this statement
-- ended (a worker's outcome, a reaped lease, a cancel), noted row by row by
-- orch_dag_note_ended, move their runs on in the same transaction (orch_dag_advance), in
-- one call per statement however many rows it changed. Its WHEN clause skips statements
-- that ended no job of a run, so plain jobs pay for nothing but that test.
CREATE OR REPLACE FUNCTION orch_dag_jobs_ended()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_noted text := current_setting('orch.dag_ended', true);
    v_ids bigint[];
    v_states text[];
BEGIN
    PERFORM set_config('orch.dag_ended', '', true);
    IF v_noted IS NULL OR v_noted = '' THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(split_part(x, ':', 1)::bigint ORDER BY split_part(x, ':', 1)::bigint),
           array_agg(split_part(x, ':', 2) ORDER BY split_part(x, ':', 1)::bigint)
    INTO v_ids, v_states
    FROM unnest(string_to_array(v_noted, ',')) AS x;
    PERFORM orch_dag_advance(v_ids, v_states, NULL, 'orch:dag');
    RETURN NULL;
END
$fn$;
