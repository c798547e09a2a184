-- The claim: the CTEs that the claim statements (claim_jobs, claim_and_start_jobs, rendered
-- from their TransitionSpecs in core/ledger/statements.py; docs/sql/ holds the result) are
-- built around. Admission is orch_admit (core/ledger/sql/functions).

-- name: claim_candidates
-- The best ready jobs of a queue that the caller can run (rows other workers hold are
-- skipped), then admission: each may start now, or must wait as throttled with a reason
-- and the moment it may try again. Admission locks the flow-control rows and decides on a
-- fresh snapshot, so caps hold across workers. What the claimed rows return besides the job
-- (its tenant's name; whether a success of it can teach its source's circuit or bucket
-- anything, for which the worker then reports successes) is read here, before admission
-- locks anything: the locks are held until the claim commits, so the less runs after them,
-- the less other claimers of the same source wait (docs/adr/0022). Admission changes
-- nothing these read (a probe's open circuit turning half-open learns either way).
cand AS (
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
)

-- name: claim_admitted
-- The candidates admission lets start. from_state comes from the row, not a constant: a
-- constant would let the planner reach the jobs to update through the claim index (every
-- queued job) instead of by primary key.
SELECT c.id, c.state AS from_state, c.tenant, c.learns
        FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NULL

-- name: claim_denied
-- The candidates admission turns away, with why and until when.
SELECT c.id, c.state AS from_state, adm.wait_reason, adm.not_before
        FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NOT NULL
