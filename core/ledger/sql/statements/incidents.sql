-- Incidents (docs/design.md, "Incidents"): one statement per name, called by the function of
-- that name in core/ledger/incidents.py. The condition reads go through small partial
-- indexes, so a pass over a ledger where nothing is wrong reads next to nothing.

-- name: dead_letter_counts
-- Per tenant, the dead letters of the window (at least :min of them), the newest ids first.
SELECT t.id AS tenant_id, t.name AS tenant, count(*) AS n, (array_agg(j.id ORDER BY j.id DESC))[1:10] AS job_ids
FROM jobs AS j JOIN tenants AS t ON t.id = j.tenant_id
WHERE j.state = 'dead_lettered' AND j.finished_at > now() - make_interval(secs => :window_s)
GROUP BY t.id, t.name
HAVING count(*) >= :min;

-- name: open_circuits
-- Sources whose circuit has not been closed for longer than :open_s.
SELECT s.tenant_id, t.name AS tenant, s.id AS source_id, s.name AS source, s.host, s.circuit_state,
       s.circuit_since, extract(epoch FROM now() - s.circuit_since) AS open_s
FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE s.circuit_state <> 'closed' AND s.circuit_since < now() - make_interval(secs => :open_s);

-- name: unresolved_counts
-- The orch_incidents_open gauge (the partial unique index holds just these rows).
SELECT kind, severity, count(*) AS n FROM incidents WHERE state <> 'resolved' GROUP BY kind, severity;

-- name: throttled_sources
-- Sources with jobs waiting on their rate limit or open circuit now (one probe per source
-- through jobs_throttled_source_idx); how long that has gone on is the pending condition's
-- age.
SELECT s.tenant_id, t.name AS tenant, s.id AS source_id, s.name AS source, s.host, w.n, w.job_ids
FROM sources AS s JOIN tenants AS t ON t.id = s.tenant_id
CROSS JOIN LATERAL (
    SELECT count(*) AS n, array_agg(x.id ORDER BY x.id) AS job_ids FROM (
        SELECT j.id FROM jobs AS j
        WHERE j.state = 'throttled' AND j.source_id = s.id AND j.wait_reason IN ('rate_limited', 'circuit_open')
        LIMIT 10
    ) AS x
) AS w
WHERE w.n > 0;

-- name: long_running
-- Job types with jobs running for longer than :running_s (live jobs: jobs_lease_expiry_idx),
-- heartbeating or not: a handler that never returns renews its lease for ever.
SELECT j.tenant_id, t.name AS tenant, j.job_type, count(*) AS n,
       (array_agg(j.id ORDER BY j.started_at))[1:10] AS job_ids,
       extract(epoch FROM now() - min(j.started_at)) AS longest_s
FROM jobs AS j JOIN tenants AS t ON t.id = j.tenant_id
WHERE j.state IN ('leased', 'running') AND j.lease_expires_at IS NOT NULL
  AND j.started_at < now() - make_interval(secs => :running_s)
GROUP BY j.tenant_id, t.name, j.job_type;

-- name: long_ready
-- Job types with jobs ready and unclaimed (queued) for longer than :ready_s on a queue whose
-- workers are alive: a job of the queue is running, or is among the last 1,000 jobs finished
-- within :ready_s. Bounded however long the backlog: a skip scan of jobs_claim_idx finds each
-- (queue, priority) band (claims take a band's lowest ids first), and only the first 10 jobs
-- of each band are looked at:
-- the ones waiting longest (a retried job re-enters its band with its old id, so its wait
-- counts from rung_at).
WITH RECURSIVE bands AS (
    (SELECT j.queue, j.priority FROM jobs AS j WHERE j.state = 'queued' ORDER BY j.queue, j.priority DESC LIMIT 1)
    UNION ALL
    SELECT n.queue, n.priority
    FROM bands AS b
    CROSS JOIN LATERAL (
        (SELECT j.queue, j.priority FROM jobs AS j
         WHERE j.state = 'queued' AND j.queue = b.queue AND j.priority < b.priority
         ORDER BY j.queue, j.priority DESC LIMIT 1)
        UNION ALL
        (SELECT j.queue, j.priority FROM jobs AS j
         WHERE j.state = 'queued' AND j.queue > b.queue
         ORDER BY j.queue, j.priority DESC LIMIT 1)
        LIMIT 1
    ) AS n
), heads AS (
    SELECT h.* FROM bands AS b
    CROSS JOIN LATERAL (
        SELECT j.id, j.tenant_id, j.job_type, j.queue, coalesce(j.rung_at, j.created_at) AS since
        FROM jobs AS j
        WHERE j.state = 'queued' AND j.queue = b.queue AND j.priority = b.priority
        ORDER BY j.queue, j.priority DESC, j.id LIMIT 10
    ) AS h
), waiting AS (
    SELECT * FROM heads WHERE since < now() - make_interval(secs => :ready_s)
), alive AS (
    SELECT q.queue FROM (SELECT DISTINCT queue FROM waiting) AS q
    WHERE EXISTS (SELECT 1 FROM jobs AS j WHERE j.state IN ('leased', 'running') AND j.queue = q.queue)
       OR EXISTS (SELECT 1 FROM (SELECT j.queue FROM jobs AS j
                                 WHERE j.finished_at > now() - make_interval(secs => :ready_s)
                                 ORDER BY j.finished_at DESC LIMIT 1000) AS f
                  WHERE f.queue = q.queue)
)
SELECT w.tenant_id, t.name AS tenant, w.job_type, w.queue, count(*) AS n,
       array_agg(w.id ORDER BY w.since) AS job_ids,
       extract(epoch FROM now() - min(w.since)) AS longest_s
FROM waiting AS w JOIN alive AS a USING (queue) JOIN tenants AS t ON t.id = w.tenant_id
GROUP BY w.tenant_id, t.name, w.job_type, w.queue;

-- name: lock_incidents
-- Two schedulers take turns over the incidents (a transaction-scoped advisory lock).
SELECT pg_advisory_xact_lock(hashtext('orch:incidents'));

-- name: unresolved_incidents
SELECT id, dedup_key, tenant_id, kind, severity, state, clear_since,
       extract(epoch FROM now() - clear_since) AS clear_s
FROM incidents WHERE state <> 'resolved';

-- name: pending_incidents
SELECT dedup_key, tenant_id, kind, scope, severity, evidence,
       extract(epoch FROM now() - first_seen_at) AS held_s
FROM incident_pending;

-- name: upsert_pending
-- Conditions seen: a new one starts its `for` period now, a known one keeps its start.
INSERT INTO incident_pending (dedup_key, tenant_id, kind, scope, severity, evidence)
SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:tenant_ids AS bigint[]), CAST(:kinds AS text[]),
                     CAST(:scopes AS text[]), CAST(:severities AS text[]), CAST(:evidence AS jsonb[]))
ON CONFLICT (dedup_key) DO UPDATE SET
    last_seen_at = now(), severity = EXCLUDED.severity, evidence = EXCLUDED.evidence;

-- name: forget_pending
-- Conditions gone (or grown into an incident).
DELETE FROM incident_pending WHERE dedup_key = ANY(CAST(:keys AS text[]));

-- name: open_incidents
-- Conditions that held for their `for` period; none of their keys has an unresolved incident
-- (the partial unique index makes that so under two schedulers as well).
INSERT INTO incidents (tenant_id, kind, scope, dedup_key, severity, evidence)
SELECT * FROM unnest(CAST(:tenant_ids AS bigint[]), CAST(:kinds AS text[]), CAST(:scopes AS text[]),
                     CAST(:keys AS text[]), CAST(:severities AS text[]), CAST(:evidence AS jsonb[]))
ON CONFLICT (dedup_key) WHERE state <> 'resolved' DO NOTHING
RETURNING id, tenant_id, kind, dedup_key, severity;

-- name: bump_incidents
-- Unresolved incidents whose condition holds: seen now, with the newest evidence and
-- severity; one occurrence more when the condition had cleared in between.
UPDATE incidents AS i SET
    last_seen_at = now(),
    severity = b.severity,
    evidence = b.evidence,
    occurrences = i.occurrences + CASE WHEN i.clear_since IS NULL THEN 0 ELSE 1 END,
    clear_since = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:severities AS text[]), CAST(:evidence AS jsonb[])) AS b(id, severity, evidence)
WHERE i.id = b.id AND i.state <> 'resolved';

-- name: clear_incidents
-- Unresolved incidents whose condition is gone: the quiet period starts (or goes on); those
-- clear for :quiet_s are resolved.
UPDATE incidents SET
    clear_since = coalesce(clear_since, now()),
    state = CASE WHEN clear_since <= now() - make_interval(secs => CAST(:quiet_s AS double precision)) THEN 'resolved' ELSE state END,
    resolved_at = CASE WHEN clear_since <= now() - make_interval(secs => CAST(:quiet_s AS double precision)) THEN now() END,
    resolved_by = CASE WHEN clear_since <= now() - make_interval(secs => CAST(:quiet_s AS double precision)) THEN :actor END,
    resolve_reason = CASE WHEN clear_since <= now() - make_interval(secs => CAST(:quiet_s AS double precision))
                          THEN 'condition clear for ' || CAST(:quiet_s AS double precision) || ' s' END
WHERE id = ANY(CAST(:ids AS bigint[])) AND state <> 'resolved'
RETURNING id, tenant_id, kind, dedup_key, severity, state;

-- name: lock_incident
SELECT i.*, t.name AS tenant FROM incidents AS i LEFT JOIN tenants AS t ON t.id = i.tenant_id
WHERE i.id = :id FOR UPDATE OF i;

-- name: acknowledge_incident
UPDATE incidents SET state = 'acknowledged', acknowledged_by = :actor, acknowledged_at = now(), ack_reason = :reason
WHERE id = :id AND state = 'open';

-- name: resolve_incident
UPDATE incidents SET state = 'resolved', resolved_at = now(), resolved_by = :actor, resolve_reason = :reason
WHERE id = :id AND state <> 'resolved';

-- name: incident_event
INSERT INTO events (tenant_id, kind, payload)
SELECT * FROM unnest(CAST(:tenant_ids AS bigint[]), CAST(:kinds AS text[]), CAST(:payloads AS jsonb[]));
