-- name: orch_circuit_learns
-- version 1, installed by migration 0004. A landed version is never edited: a change is
-- orch_circuit_learns.v2.sql and a new migration that installs it.
CREATE OR REPLACE FUNCTION orch_circuit_learns(s sources) RETURNS boolean LANGUAGE sql STABLE AS $fn$
    SELECT s.circuit_state <> 'closed' OR s.circuit_window <> repeat('0', s.cb_window)
$fn$;
