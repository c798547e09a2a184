/* reap_running_jobs */
WITH src AS (
        SELECT id, state AS from_state FROM jobs
        WHERE state IN ('leased', 'running') AND lease_expires_at < now()
          AND state = 'running'
        ORDER BY lease_expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET
        state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead_lettered' ELSE 'retrying' END,
        updated_at = now(),
        not_before = CASE WHEN j.attempt >= j.max_attempts THEN NULL ELSE now() END,
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
        lease_expires_at = NULL,
        error_class = 'lease_expired',
        last_error = 'lease expired: worker ' || coalesce(j.lease_owner, '?') || ' stopped heartbeating (last heartbeat ' || coalesce(to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), 'never') || ' UTC)',
        error_fingerprint = '6ec15bca922b2e04'
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        CASE WHEN j.attempt >= j.max_attempts THEN 'lease expired on the last attempt (' || j.attempt || '/' || j.max_attempts || ')' ELSE 'lease expired' END AS reason,
        'lease_expired' AS f_class, '6ec15bca922b2e04' AS f_fingerprint, 'lease expired: worker ' || coalesce(j.lease_owner, '?') || ' stopped heartbeating (last heartbeat ' || coalesce(to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), 'never') || ' UTC)' AS f_message
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id, error_class, fingerprint, message)
    SELECT id, from_state, 'lease_expired', to_state, :actor, reason, attempt, tenant_id, job_type, run_id, f_class, f_fingerprint, f_message FROM moved
)
SELECT * FROM moved;
