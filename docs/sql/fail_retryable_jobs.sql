/* fail_retryable_jobs */
WITH src AS (
        SELECT j.id, j.state AS from_state, i.lease_id, i.delay_s, i.error_class, i.message, i.fingerprint
        FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:delay_s AS float8[]), CAST(:error_class AS text[]), CAST(:message AS text[]), CAST(:fingerprint AS text[])) AS i(id, lease_id, delay_s, error_class, message, fingerprint)
        JOIN jobs AS j ON j.id = i.id
        WHERE (j.state IN ('running')) IS TRUE AND j.lease_id = i.lease_id
), moved AS (
    UPDATE jobs AS j SET
        state = 'retrying',
        updated_at = now(),
        not_before = now() + make_interval(secs => src.delay_s),
        lease_expires_at = NULL,
        error_class = src.error_class,
        last_error = src.message,
        error_fingerprint = src.fingerprint
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state AND j.lease_id = src.lease_id
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        src.error_class || ': ' || left(src.message, 200) AS reason,
        j.not_before,
        src.error_class AS f_class, src.fingerprint AS f_fingerprint, src.message AS f_message
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id, error_class, fingerprint, message)
    SELECT id, from_state, 'fail_retryable', to_state, :actor, reason, attempt, tenant_id, job_type, run_id, f_class, f_fingerprint, f_message FROM moved
)
SELECT * FROM moved;
