/* reap_leased_jobs */
WITH src AS (
        SELECT id, state AS from_state FROM jobs
        WHERE state IN ('leased', 'running') AND lease_expires_at < now()
          AND state = 'leased'
        ORDER BY lease_expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET
        state = 'queued',
        updated_at = now(),
        lease_id = NULL,
        lease_expires_at = NULL,
        rung_at = now()
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        'lease of ' || coalesce(j.lease_owner, '?') || ' expired before the handler started' AS reason,
        j.queue
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id)
    SELECT id, from_state, 'lease_expired', to_state, :actor, reason, attempt, tenant_id, job_type, run_id FROM moved
)
SELECT * FROM moved;
