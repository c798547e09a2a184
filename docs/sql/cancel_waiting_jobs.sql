/* cancel_waiting_jobs */
WITH src AS (
        SELECT j.id, j.state AS from_state
        FROM unnest(CAST(:id AS bigint[])) AS i(id)
        JOIN jobs AS j ON j.id = i.id
        WHERE (j.state IN ('pending', 'queued', 'throttled', 'retrying')) IS TRUE
        ORDER BY j.id
        FOR UPDATE OF j
), moved AS (
    UPDATE jobs AS j SET
        state = 'canceled',
        updated_at = now(),
        finished_at = now(),
        not_before = NULL,
        wait_reason = NULL
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        CAST(:reason AS text) AS reason
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id)
    SELECT id, from_state, 'cancel', to_state, :actor, reason, attempt, tenant_id, job_type, run_id FROM moved
)
SELECT * FROM moved;
