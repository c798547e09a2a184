-- name: orch_trigger_verdict
-- version 1, installed by migration 0005. A landed version is never edited.
--
-- What becomes of a pending job of a run whose p_total parents have so far ended p_ok
-- succeeded, p_failed failed (dead-lettered, upstream-failed, canceled) and p_skipped
-- skipped: 'queued' (it runs), 'upstream_failed' or 'skipped' (its trigger rule can no
-- longer be met), or NULL (wait). The same function as core.domain.dag.verdict (a test
-- compares them on every count). Decided once certain whatever the other parents do, so a
-- job's fate never depends on the order its parents end in.
CREATE OR REPLACE FUNCTION orch_trigger_verdict(
    p_rule text, p_total integer, p_ok integer, p_failed integer, p_skipped integer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT CASE
    WHEN p_total = 0 THEN 'queued'
    WHEN p_rule = 'all_success' THEN
        CASE WHEN p_failed > 0 THEN 'upstream_failed'
             WHEN p_ok + p_failed + p_skipped < p_total THEN NULL
             WHEN p_ok = p_total THEN 'queued'
             ELSE 'skipped' END
    WHEN p_rule = 'all_done' THEN
        CASE WHEN p_ok + p_failed + p_skipped = p_total THEN 'queued' END
    WHEN p_rule = 'one_success' THEN
        CASE WHEN p_ok > 0 THEN 'queued'
             WHEN p_ok + p_failed + p_skipped < p_total THEN NULL
             WHEN p_failed > 0 THEN 'upstream_failed'
             ELSE 'skipped' END
    WHEN p_rule = 'one_failed' THEN
        CASE WHEN p_failed > 0 THEN 'queued'
             WHEN p_ok + p_failed + p_skipped = p_total THEN 'skipped' END
    WHEN p_rule = 'none_failed' THEN
        CASE WHEN p_failed > 0 THEN 'upstream_failed'
             WHEN p_ok + p_failed + p_skipped = p_total THEN 'queued' END
    WHEN p_rule = 'all_failed' THEN
        CASE WHEN p_ok > 0 OR p_skipped > 0 THEN 'skipped'
             WHEN p_failed = p_total THEN 'queued' END
END
$fn$;
