/* release_due_jobs */
WITH src AS (
        SELECT id, state AS from_state FROM jobs
        WHERE state IN ('retrying', 'throttled') AND not_before <= now()
        ORDER BY not_before
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET
        state = 'queued',
        updated_at = now(),
        not_before = NULL,
        wait_reason = NULL,
        rung_at = now()
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        NULL AS reason,
        j.queue
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id)
    SELECT id, from_state, 'due', to_state, :actor, reason, attempt, tenant_id, job_type, run_id FROM moved
)
SELECT * FROM moved;
