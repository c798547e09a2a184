/* succeed_jobs */
WITH src AS (
        SELECT j.id, j.state AS from_state, i.lease_id, i.result
        FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:result AS text[])) AS i(id, lease_id, result)
        JOIN jobs AS j ON j.id = i.id
        WHERE (j.state IN ('running')) IS TRUE AND j.lease_id = i.lease_id
), moved AS (
    UPDATE jobs AS j SET
        state = 'succeeded',
        updated_at = now(),
        finished_at = now(),
        lease_expires_at = NULL,
        progress = 1
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state AND j.lease_id = src.lease_id
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        NULL AS reason,
        j.queue
),
results AS (
    INSERT INTO job_results (job_id, tenant_id, result, size_bytes)
    SELECT m.id, m.tenant_id, CAST(src.result AS jsonb), octet_length(src.result)
    FROM moved AS m JOIN src ON src.id = m.id
    WHERE src.result IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id)
    SELECT id, from_state, 'succeed', to_state, :actor, reason, attempt, tenant_id, job_type, run_id FROM moved
)
SELECT * FROM moved;
