-- The reads of an audit bundle's export and the checks of its import (core/ledger/bundles.py,
-- issue 13). Every read runs in the export's one REPEATABLE READ snapshot; times come out as
-- the bundle's one format (UTC, microseconds, Z), formatted by the server. :range_from may
-- be NULL (from the beginning); :range_to is always given.

-- name: bundle_tenant
SELECT id FROM tenants WHERE name = :tenant

-- name: bundle_jobs
SELECT j.id, j.source_id, j.run_id, j.job_type, j.queue, j.priority, j.payload, j.payload_digest,
       j.idempotency_key, j.state, j.wait_reason,
       to_char(j.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS not_before,
       j.attempt, j.max_attempts, j.lease_owner,
       to_char(j.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS lease_expires_at,
       to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS heartbeat_at,
       j.progress, j.progress_message, j.cancel_requested, j.correlation_id, j.replay_of,
       j.error_class, j.last_error,
       to_char(j.rung_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS rung_at,
       to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
       to_char(j.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at,
       to_char(j.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_at,
       to_char(j.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS finished_at,
       j.error_fingerprint, j.window_id, r.result
FROM jobs AS j
LEFT JOIN job_results AS r ON r.job_id = j.id
WHERE j.tenant_id = :tenant_id
  AND j.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
  AND j.created_at < CAST(:range_to AS timestamptz)
ORDER BY j.id

-- name: bundle_history
-- Each row as its canonical line, built here (keys in order, strings escaped by to_json as
-- RFC 8785 escapes them, times in the bundle's format), except a row with a reason or a
-- message: those may hold a secret, and come as a JSON object (raw) for Python to redact.
SELECT CASE WHEN h.reason IS NULL AND h.message IS NULL THEN
           '{"actor":' || coalesce(to_json(h.actor)::text, 'null')
           || ',"at":"' || to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           || '","attempt":' || coalesce(h.attempt::text, 'null')
           || ',"error_class":' || coalesce(to_json(h.error_class)::text, 'null')
           || ',"event":' || coalesce(to_json(h.event)::text, 'null')
           || ',"fingerprint":' || coalesce(to_json(h.fingerprint)::text, 'null')
           || ',"from_state":' || coalesce(to_json(h.from_state)::text, 'null')
           || ',"id":' || h.id::text
           || ',"job_id":' || h.job_id::text
           || ',"message":' || 'null,"reason":' || 'null'  -- split so that no colon meets a word (a bind parameter)
           || ',"to_state":' || coalesce(to_json(h.to_state)::text, 'null')
           || ',"wait_reason":' || coalesce(to_json(h.wait_reason)::text, 'null')
           || '}'
       END AS line,
       CASE WHEN h.reason IS NOT NULL OR h.message IS NOT NULL THEN
           json_build_object(
               'id', h.id, 'job_id', h.job_id, 'from_state', h.from_state, 'event', h.event,
               'to_state', h.to_state, 'at', to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'actor', h.actor, 'reason', h.reason, 'attempt', h.attempt, 'error_class', h.error_class,
               'fingerprint', h.fingerprint, 'message', h.message, 'wait_reason', h.wait_reason)::text
       END AS raw
FROM jobs AS j
JOIN job_history AS h ON h.job_id = j.id
WHERE j.tenant_id = :tenant_id
  AND j.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
  AND j.created_at < CAST(:range_to AS timestamptz)
ORDER BY h.job_id, h.id

-- name: bundle_runs
-- The runs created in the range and the runs of the range's jobs, each with its DAG's edges
-- and its jobs (run_jobs), both in a fixed order.
SELECT r.id, r.kind, r.correlation_id, r.params, r.created_by,
       to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
       r.name, r.state, r.attempt, r.idempotency_key, r.spec_digest, r.jobs_total, r.jobs_live,
       r.max_jobs, r.cancel_requested,
       to_char(r.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_at,
       to_char(r.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS finished_at,
       to_char(r.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at,
       r.window_id,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(e.parent_id, e.child_id) ORDER BY e.parent_id, e.child_id), '[]')
        FROM dag_edges AS e WHERE e.run_id = r.id) AS edges,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'job_id', rj.job_id, 'key', rj.key, 'trigger_rule', rj.trigger_rule,
                   'allow_failure', rj.allow_failure, 'spawned_by', rj.spawned_by, 'current', rj.current,
                   'deps_total', rj.deps_total, 'deps_ok', rj.deps_ok, 'deps_failed', rj.deps_failed,
                   'deps_skipped', rj.deps_skipped) ORDER BY rj.job_id), '[]')
        FROM run_jobs AS rj WHERE rj.run_id = r.id) AS jobs
FROM runs AS r
WHERE r.tenant_id = :tenant_id
  AND ((r.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
        AND r.created_at < CAST(:range_to AS timestamptz))
       OR r.id IN (SELECT j.run_id FROM jobs AS j
                   WHERE j.tenant_id = :tenant_id AND j.run_id IS NOT NULL
                     AND j.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
                     AND j.created_at < CAST(:range_to AS timestamptz)))
ORDER BY r.created_at, r.id

-- name: bundle_rate_changes
SELECT t.id, to_char(t.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
       t.bucket_id, t.old_rate, t.new_rate, t.reason, t.actor
FROM throttles AS t
WHERE t.tenant_id = :tenant_id
  AND t.at >= coalesce(CAST(:range_from AS timestamptz), '-infinity') AND t.at < CAST(:range_to AS timestamptz)
ORDER BY t.at, t.id

-- name: bundle_flow_actions
SELECT a.id, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
       a.action, a.subject AS actor, a.target, a.reason, a.ticket, a.details
FROM audit_log AS a
WHERE a.chain = :tenant AND a.action = ANY(CAST(:actions AS text[]))
  AND a.at >= coalesce(CAST(:range_from AS timestamptz), '-infinity') AND a.at < CAST(:range_to AS timestamptz)
ORDER BY a.at, a.id

-- name: bundle_circuit_transitions
SELECT c.id, to_char(c.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
       c.source_id, c.from_state, c.to_state, c.actor
FROM circuit_transitions AS c
WHERE c.tenant_id = :tenant_id
  AND c.at >= coalesce(CAST(:range_from AS timestamptz), '-infinity') AND c.at < CAST(:range_to AS timestamptz)
ORDER BY c.at, c.id

-- name: bundle_audit
SELECT a.id, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
       a.chain, a.chain_seq, a.subject, a.scopes, a.action, a.target, a.tenant, a.reason, a.ticket,
       a.details, a.prev_hash, a.hash
FROM audit_log AS a
WHERE a.chain = :tenant
  AND a.at >= coalesce(CAST(:range_from AS timestamptz), '-infinity') AND a.at < CAST(:range_to AS timestamptz)
ORDER BY a.chain_seq

-- name: bundle_audit_anchor
-- Where the range's part of the tenant's chain starts: the hash and place of the chain's last
-- row before the range, else the chain's own anchor (no chain yet: nothing before it).
SELECT coalesce(
           (SELECT a.hash FROM audit_log AS a
            WHERE a.chain = :tenant AND a.at < coalesce(CAST(:range_from AS timestamptz), '-infinity')
            ORDER BY a.chain_seq DESC LIMIT 1),
           (SELECT c.anchor_hash FROM audit_chains AS c WHERE c.chain = :tenant),
           (SELECT l.last_hash FROM audit_legacy AS l)) AS anchor_hash,
       coalesce(
           (SELECT a.chain_seq FROM audit_log AS a
            WHERE a.chain = :tenant AND a.at < coalesce(CAST(:range_from AS timestamptz), '-infinity')
            ORDER BY a.chain_seq DESC LIMIT 1), 0) + 1 AS first_seq

-- name: bundle_artifacts
SELECT a.id, a.job_id, a.attempt, a.name, a.media_type, a.sha256, a.size_bytes,
       to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at
FROM jobs AS j
JOIN artifacts AS a ON a.job_id = j.id
WHERE j.tenant_id = :tenant_id
  AND j.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
  AND j.created_at < CAST(:range_to AS timestamptz)
ORDER BY a.created_at, a.id

-- name: bundle_artifact_bytes
-- One copy of each distinct content of the range's artifacts, by digest.
SELECT DISTINCT ON (a.sha256) a.sha256, a.data
FROM jobs AS j
JOIN artifacts AS a ON a.job_id = j.id
WHERE j.tenant_id = :tenant_id
  AND j.created_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
  AND j.created_at < CAST(:range_to AS timestamptz)
ORDER BY a.sha256, a.id

-- name: bundle_incidents
SELECT i.id, i.kind, i.scope, i.dedup_key, i.severity, i.state,
       to_char(i.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS opened_at,
       to_char(i.last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last_seen_at,
       to_char(i.clear_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS clear_since,
       to_char(i.resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS resolved_at,
       i.occurrences, i.evidence, i.acknowledged_by,
       to_char(i.acknowledged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS acknowledged_at,
       i.ack_reason, i.resolved_by, i.resolve_reason
FROM incidents AS i
WHERE i.tenant_id = :tenant_id
  AND i.opened_at >= coalesce(CAST(:range_from AS timestamptz), '-infinity')
  AND i.opened_at < CAST(:range_to AS timestamptz)
ORDER BY i.opened_at, i.id

-- name: bundle_events
-- Every event but the job state changes ('job.*' rows: each change is a row of history.jsonl,
-- which the outbox only announces).
SELECT e.id, to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, e.kind, e.payload
FROM events AS e
WHERE e.tenant_id = :tenant_id AND e.kind NOT LIKE 'job.%'
  AND e.at >= coalesce(CAST(:range_from AS timestamptz), '-infinity') AND e.at < CAST(:range_to AS timestamptz)
ORDER BY e.at, e.id

-- name: bundle_sources
SELECT s.id, s.name, s.host, to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
       s.bucket_id, s.max_active, s.allow_private, s.cb_window, s.cb_min_outcomes, s.cb_failure_ratio,
       s.cb_cooldown_s, s.cb_probes
FROM sources AS s
WHERE s.tenant_id = :tenant_id
ORDER BY s.created_at, s.id

-- name: bundle_ledger_in_use
-- What makes a ledger not empty for an import: any tenant, job, run, audit row or event.
SELECT EXISTS (SELECT 1 FROM tenants) OR EXISTS (SELECT 1 FROM jobs) OR EXISTS (SELECT 1 FROM runs)
    OR EXISTS (SELECT 1 FROM audit_log) OR EXISTS (SELECT 1 FROM events)
