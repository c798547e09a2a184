-- name: orch_check_job
-- version 1, installed by migration 0020. A landed version is never edited: a change is
-- orch_check_job.v2.sql and a new migration.
--
-- The row rules of jobs as one CHECK, jobs_row_valid (docs/adr/0024). PostgreSQL builds a
-- table's CHECK expressions again for every statement node that writes the table: it
-- parses each from its stored node text and simplifies it. For the ten CHECKs jobs had
-- that was about 25 µs more than this function's call, paid by every claim, success and
-- submit whatever the number of rows. PL/pgSQL keeps the function compiled for the
-- session; a row costs one call and one evaluation of the conjunction below, about 0.5 µs
-- more than the ten CHECKs cost it (bench/row_checks.py).
--
-- It returns true or raises. A row that breaks a rule is refused with the name and message
-- of the CHECK that held the rule before (jobs_state_valid, jobs_lease_held, ...), so an
-- error reads as it did. Each rule is written twice, in the conjunction and in its branch
-- of the CASE; tests/integration/test_state_table.py compares the two and breaks each rule
-- alone. NULL passes, as in a CHECK: a rule fails only when it is false.
CREATE OR REPLACE FUNCTION orch_check_job(
    state text, wait_reason text, not_before timestamptz, lease_id uuid, lease_expires_at timestamptz,
    attempt integer, max_attempts integer, progress real, idempotency_key text, payload_digest text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_rule text;
BEGIN
    IF (state = ANY (ARRAY['pending', 'queued', 'leased', 'running', 'throttled', 'retrying', 'succeeded',
                           'dead_lettered', 'canceled', 'upstream_failed', 'skipped'])
        AND wait_reason = ANY (ARRAY['rate_limited', 'quota', 'paused', 'blackout', 'circuit_open', 'backpressure'])
        AND (state <> 'throttled' OR wait_reason IS NOT NULL)
        AND (state <> ALL (ARRAY['retrying', 'throttled']) OR not_before IS NOT NULL)
        AND (state <> ALL (ARRAY['leased', 'running']) OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL))
        AND attempt >= 0
        AND max_attempts >= 1
        AND progress >= 0 AND progress <= 1
        AND length(idempotency_key) >= 1 AND length(idempotency_key) <= 256
        AND length(payload_digest) = 64) IS NOT FALSE THEN
        RETURN true;
    END IF;
    v_rule := CASE
        WHEN (state = ANY (ARRAY['pending', 'queued', 'leased', 'running', 'throttled', 'retrying', 'succeeded',
                                 'dead_lettered', 'canceled', 'upstream_failed', 'skipped'])) IS FALSE
            THEN 'jobs_state_valid'
        WHEN (wait_reason = ANY (ARRAY['rate_limited', 'quota', 'paused', 'blackout', 'circuit_open',
                                       'backpressure'])) IS FALSE
            THEN 'jobs_wait_reason_valid'
        WHEN (state <> 'throttled' OR wait_reason IS NOT NULL) IS FALSE THEN 'jobs_wait_reason'
        WHEN (state <> ALL (ARRAY['retrying', 'throttled']) OR not_before IS NOT NULL) IS FALSE THEN 'jobs_wait_until'
        WHEN (state <> ALL (ARRAY['leased', 'running']) OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)) IS FALSE
            THEN 'jobs_lease_held'
        WHEN (attempt >= 0) IS FALSE THEN 'jobs_attempt_check'
        WHEN (max_attempts >= 1) IS FALSE THEN 'jobs_max_attempts_check'
        WHEN (progress >= 0 AND progress <= 1) IS FALSE THEN 'jobs_progress_check'
        WHEN (length(idempotency_key) >= 1 AND length(idempotency_key) <= 256) IS FALSE THEN 'jobs_idempotency_key_check'
        WHEN (length(payload_digest) = 64) IS FALSE THEN 'jobs_payload_digest_check'
        ELSE 'jobs_row_valid' END;
    RAISE EXCEPTION 'new row for relation "jobs" violates check constraint "%"', v_rule
        USING ERRCODE = 'check_violation', TABLE = 'jobs', CONSTRAINT = v_rule;
END $fn$;
