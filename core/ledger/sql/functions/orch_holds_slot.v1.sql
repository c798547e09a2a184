-- name: orch_holds_slot
-- version 1, installed by migration 0004. A landed version is never edited: a change is
-- orch_holds_slot.v2.sql and a new migration that installs it.
--
-- The one definition of a job holding an active slot of its quota and source: a worker
-- holds its lease (core.domain.states.LEASED_STATES; a test checks the two agree). The
-- planner inlines it, so the partial indexes on exactly these states still serve counts.
CREATE OR REPLACE FUNCTION orch_holds_slot(p_state text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT p_state IN ('leased', 'running')
$fn$;
