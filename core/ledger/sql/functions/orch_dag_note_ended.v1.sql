-- name: orch_dag_note_ended
-- version 1, installed by migration 0005. A landed version is never edited: a change is
-- orch_dag_note_ended.v2.sql and a new migration that installs it.
--
-- The row trigger on jobs (jobs_dag_note, BEFORE UPDATE, on the locked row about to change):
-- a job of a run that this statement moves into a terminal state is noted, "id:state", in
-- the transaction-local setting orch.dag_ended, for the statement trigger
-- (orch_dag_jobs_ended) to act on all of them at once. The
-- trigger's WHEN clause lets only such rows through (plain jobs never call this), and not
-- the jobs orch_dag_advance itself ends (it cascades those in its own loop).
CREATE OR REPLACE FUNCTION orch_dag_note_ended()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_noted text := coalesce(current_setting('orch.dag_ended', true), '');
BEGIN
    PERFORM set_config(
        'orch.dag_ended',
        CASE WHEN v_noted = '' THEN '' ELSE v_noted || ',' END || NEW.id || ':' || NEW.state,
        true);
    RETURN NEW;
END
$fn$;
