/* succeed_and_claim_jobs */
WITH cand AS (
        SELECT id, priority, state,
               (SELECT t.name FROM tenants AS t WHERE t.id = jobs.tenant_id) AS tenant,
               (SELECT orch_circuit_learns(s) OR coalesce(orch_bucket_learns(b), false)
                FROM sources AS s LEFT JOIN buckets AS b ON b.id = s.bucket_id WHERE s.id = jobs.source_id) AS learns
        FROM jobs
        WHERE queue = :queue AND state = 'queued'
          AND job_type = ANY(CAST(:job_types AS text[]))
        ORDER BY priority DESC, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
), adm AS MATERIALIZED (
        SELECT * FROM orch_admit(ARRAY(SELECT id FROM cand ORDER BY priority DESC, id))
),
src AS (
        SELECT c.id, c.state AS from_state, c.tenant, c.learns
        FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NULL
), moved AS (
    UPDATE jobs AS j SET
        state = 'running',
        updated_at = now(),
        lease_id = gen_random_uuid(),
        lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => coalesce((SELECT t.lease_s FROM job_types AS t WHERE t.name = j.job_type), 30)),
        wait_reason = NULL,
        not_before = NULL,
        heartbeat_at = now(),
        started_at = now(),
        attempt = j.attempt + 1,
        progress = NULL,
        progress_message = NULL
    FROM src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        NULL AS reason,
        j.lease_id,
        j.queue,
        j.payload,
        j.max_attempts,
        j.cancel_requested,
        j.correlation_id,
        j.source_id,
        j.started_at,
        j.window_id,
        src.learns,
        src.tenant,
        CASE WHEN j.run_id IS NOT NULL THEN (SELECT rj.key FROM run_jobs AS rj WHERE rj.job_id = j.id) END AS run_key,
        CASE WHEN j.run_id IS NOT NULL THEN EXISTS (SELECT 1 FROM dag_edges AS e WHERE e.parent_id = j.id) ELSE false END AS has_children,
        CASE WHEN j.run_id IS NOT NULL THEN (SELECT extract(epoch FROM now() - max(p.finished_at)) FROM dag_edges AS e JOIN jobs AS p ON p.id = e.parent_id WHERE e.child_id = j.id) END AS release_s,
        extract(epoch FROM now() - coalesce(j.rung_at, j.created_at)) AS queue_wait_s
),
deny_src AS (
        SELECT c.id, c.state AS from_state, adm.wait_reason, adm.not_before
        FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NOT NULL
), deny_moved AS (
    UPDATE jobs AS j SET
        state = 'throttled',
        updated_at = now(),
        wait_reason = src.wait_reason,
        not_before = src.not_before
    FROM deny_src AS src
    WHERE j.id = src.id AND j.state = src.from_state
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        src.wait_reason || ' until ' || to_char(src.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || ' UTC' AS reason,
        src.wait_reason AS h_wait_reason
),
succeed_src AS (
        SELECT j.id, j.state AS from_state, i.lease_id
        FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[])) AS i(id, lease_id)
        JOIN jobs AS j ON j.id = i.id
        WHERE (j.state IN ('running')) IS TRUE AND j.lease_id = i.lease_id
        FOR NO KEY UPDATE OF j SKIP LOCKED
), succeed_moved AS (
    UPDATE jobs AS j SET
        state = 'succeeded',
        updated_at = now(),
        finished_at = now(),
        lease_expires_at = NULL,
        progress = 1
    FROM succeed_src AS src
    WHERE j.id = src.id AND j.state = src.from_state AND j.lease_id = src.lease_id
    RETURNING j.id, j.tenant_id, j.job_type, j.run_id, j.attempt, j.state AS to_state, src.from_state,
        NULL AS reason
),
history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason, attempt, tenant_id, job_type, run_id, wait_reason)
    SELECT id, 'queued', 'claim', 'leased', :actor, reason, attempt, tenant_id, job_type, run_id, NULL FROM moved
    UNION ALL
    SELECT id, 'leased', 'ack', 'running', :actor, reason, attempt, tenant_id, job_type, run_id, NULL FROM moved
    UNION ALL
    SELECT id, from_state, 'deny', to_state, :actor, reason, attempt, tenant_id, job_type, run_id, h_wait_reason FROM deny_moved
    UNION ALL
    SELECT id, from_state, 'succeed', to_state, :actor, reason, attempt, tenant_id, job_type, run_id, NULL FROM succeed_moved
)
SELECT s.succeeded, m.*
FROM (SELECT array_agg(id) AS succeeded FROM succeed_moved) AS s LEFT JOIN moved AS m ON true;
