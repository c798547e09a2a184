/* ack_jobs */
WITH src AS (
        SELECT j.id, j.state AS from_state, i.lease_id
        FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[])) AS i(id, lease_id)
        JOIN jobs AS j ON j.id = i.id
        WHERE (j.state IN ('leased')) IS TRUE AND j.lease_id = i.lease_id
), moved AS (
    UPDATE jobs AS j SET
        state = 'running',
        updated_at = now(),
        heartbeat_at = now(),
        started_at = now(),
        attempt = j.attempt + 1,
        progress = NULL,
        progress_message = NULL,
        lease_expires_at = now() + make_interval(secs => coalesce((SELECT t.lease_s FROM job_types AS t WHERE t.name = j.job_type), 30))
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state AND j.lease_id = src.lease_id
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        NULL AS reason,
        j.cancel_requested
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id)
    SELECT id, from_state, 'ack', to_state, :actor, reason, attempt, tenant_id, job_type, run_id FROM moved
)
SELECT * FROM moved;
