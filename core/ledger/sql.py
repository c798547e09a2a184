"""Every hot statement of the ledger, by name. The name is also an SQL comment at the head of
the statement, so a line in a slow-query log or pg_stat_statements leads back here by grep.

State-changing statements are TransitionSpecs rendered by core.ledger.transitions.build, so
each one is checked against the state machine and writes its job_history rows in the same
statement. Rendering happens on first use, not at import.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa

from core.domain import fingerprints
from core.domain.states import Event, State
from core.ledger.transitions import TransitionSpec, build

S, E = State, Event

LEASE_S = "make_interval(secs => coalesce((SELECT t.lease_s FROM job_types AS t WHERE t.name = j.job_type), 30))"

JOB_COLUMNS = (
    "j.lease_id",
    "j.job_type",
    "j.queue",
    "j.payload",
    "j.max_attempts",
    "j.cancel_requested",
    "j.correlation_id",
    "j.run_id",
    "j.source_id",
    "j.started_at",
    # Whether a success of this job can teach its source's circuit or bucket anything; the
    # worker reports successes only then (failures and 429s always).
    "(SELECT orch_circuit_learns(s) OR coalesce(orch_bucket_learns(b), false)"
    " FROM sources AS s LEFT JOIN buckets AS b ON b.id = s.bucket_id WHERE s.id = j.source_id) AS learns",
    "(SELECT t.name FROM tenants AS t WHERE t.id = j.tenant_id) AS tenant",
    # Ready (rung) until claimed: the queue wait. now() is the claiming transaction's start.
    "extract(epoch FROM now() - coalesce(j.rung_at, j.created_at)) AS queue_wait_s",
)

# The best ready jobs of a queue that the caller can run (rows other workers hold are
# skipped), then admission (core/ledger/migrations 0003, orch_admit): each may start now, or
# must wait as throttled with a reason and the moment it may try again. Admission locks the
# flow-control rows and decides on a fresh snapshot, so caps hold across workers.
ADMIT = """cand AS (
        SELECT id, priority, state FROM jobs
        WHERE queue = :queue AND state = 'queued'
          AND job_type = ANY(CAST(:job_types AS text[]))
        ORDER BY priority DESC, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
), adm AS MATERIALIZED (
        SELECT * FROM orch_admit(ARRAY(SELECT id FROM cand ORDER BY priority DESC, id))
)"""
# from_state comes from the row, not a constant: a constant would let the planner reach the
# jobs to update through the claim index (every queued job) instead of by primary key.
ADMITTED = (
    "SELECT c.id, c.state AS from_state FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NULL"
)

UNTIL = "to_char(src.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')"

# Jobs admission turned away wait as throttled; no attempt is counted. The history reason
# starts with the wait reason (queries.rate_limit_series counts denials by that first word).
DENY = TransitionSpec(
    name="deny",
    event=E.DENY,
    from_states=(S.QUEUED,),
    to_states=(S.THROTTLED,),
    select=(
        "SELECT c.id, c.state AS from_state, adm.wait_reason, adm.not_before\n"
        "        FROM adm JOIN cand AS c ON c.id = adm.job_id WHERE adm.wait_reason IS NOT NULL"
    ),
    sets=(("wait_reason", "src.wait_reason"), ("not_before", "src.not_before")),
    reason=f"src.wait_reason || ' until ' || {UNTIL} || ' UTC'",
)

# Every lease expiry is one error cluster, whichever worker stopped.
LEASE_EXPIRED_FINGERPRINT = fingerprints.fingerprint("lease_expired", "lease expired: worker stopped heartbeating")
LEASE_EXPIRED_MESSAGE = (
    "'lease expired: worker ' || coalesce(j.lease_owner, '?') || ' stopped heartbeating (last heartbeat ' || "
    "coalesce(to_char(j.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), 'never') || ' UTC)'"
)

# A fresh lease for the claiming worker; the job no longer waits.
NEW_LEASE = (
    ("lease_id", "gen_random_uuid()"),
    ("lease_owner", ":owner"),
    ("lease_expires_at", f"now() + {LEASE_S}"),
    ("wait_reason", "NULL"),
    ("not_before", "NULL"),
)
# The handler starts: one more attempt.
STARTED = (
    ("heartbeat_at", "now()"),
    ("started_at", "now()"),
    ("attempt", "j.attempt + 1"),
    ("progress", "NULL"),
    ("progress_message", "NULL"),
)

SPECS: dict[str, TransitionSpec] = {
    spec.name: spec
    for spec in [
        # Take up to :limit ready jobs of :queue, best priority first, that admission lets
        # start (claim now, start later); the others wait as throttled.
        TransitionSpec(
            name="claim_jobs",
            event=E.CLAIM,
            from_states=(S.QUEUED,),
            to_states=(S.LEASED,),
            head=ADMIT,
            select=ADMITTED,
            companions=(DENY,),
            sets=NEW_LEASE,
            returning=JOB_COLUMNS,
        ),
        # What a worker does: claim and start in one statement (two history rows), for a
        # handler that starts at once. The attempt is counted and committed before it runs,
        # so a job that crashes its worker still uses up its attempts.
        TransitionSpec(
            name="claim_and_start_jobs",
            event=E.CLAIM,
            from_states=(S.QUEUED,),
            to_states=(S.LEASED,),
            then=((E.ACK, S.RUNNING),),
            head=ADMIT,
            select=ADMITTED,
            companions=(DENY,),
            sets=NEW_LEASE + STARTED,
            returning=JOB_COLUMNS,
        ),
        # A claimed job's handler starts: one more attempt is counted.
        TransitionSpec(
            name="ack_jobs",
            event=E.ACK,
            from_states=(S.LEASED,),
            to_states=(S.RUNNING,),
            inputs=(("id", "bigint"), ("lease_id", "uuid")),
            match_lease=True,
            sets=(*STARTED, ("lease_expires_at", f"now() + {LEASE_S}")),
            returning=("j.cancel_requested",),
        ),
        TransitionSpec(
            name="succeed_jobs",
            event=E.SUCCEED,
            from_states=(S.RUNNING,),
            to_states=(S.SUCCEEDED,),
            inputs=(("id", "bigint"), ("lease_id", "uuid")),
            match_lease=True,
            sets=(("finished_at", "now()"), ("lease_expires_at", "NULL"), ("progress", "1")),
            returning=("j.queue",),
        ),
        TransitionSpec(
            name="fail_retryable_jobs",
            event=E.FAIL_RETRYABLE,
            from_states=(S.RUNNING,),
            to_states=(S.RETRYING,),
            inputs=(
                ("id", "bigint"),
                ("lease_id", "uuid"),
                ("delay_s", "float8"),
                ("error_class", "text"),
                ("message", "text"),
                ("fingerprint", "text"),
            ),
            match_lease=True,
            sets=(
                ("not_before", "now() + make_interval(secs => src.delay_s)"),
                ("lease_expires_at", "NULL"),
                ("error_class", "src.error_class"),
                ("last_error", "src.message"),
                ("error_fingerprint", "src.fingerprint"),
            ),
            failure=("src.error_class", "src.fingerprint", "src.message"),
            reason="src.error_class || ': ' || left(src.message, 200)",
            returning=("j.not_before",),
        ),
        TransitionSpec(
            name="fail_final_jobs",
            event=E.FAIL_FINAL,
            from_states=(S.RUNNING,),
            to_states=(S.DEAD_LETTERED,),
            inputs=(
                ("id", "bigint"),
                ("lease_id", "uuid"),
                ("error_class", "text"),
                ("message", "text"),
                ("why", "text"),
                ("fingerprint", "text"),
            ),
            match_lease=True,
            sets=(
                ("finished_at", "now()"),
                ("lease_expires_at", "NULL"),
                ("error_class", "src.error_class"),
                ("last_error", "src.message"),
                ("error_fingerprint", "src.fingerprint"),
            ),
            failure=("src.error_class", "src.fingerprint", "src.message"),
            reason="src.why || ': ' || src.error_class || ': ' || left(src.message, 200)",
        ),
        # The upstream answered 429: the job waits for a token again and the attempt is
        # given back (throttling never uses one up); the bucket learns from it separately.
        TransitionSpec(
            name="throttle_jobs",
            event=E.THROTTLE,
            from_states=(S.RUNNING,),
            to_states=(S.THROTTLED,),
            inputs=(
                ("id", "bigint"),
                ("lease_id", "uuid"),
                ("delay_s", "float8"),
                ("message", "text"),
                ("fingerprint", "text"),
            ),
            match_lease=True,
            sets=(
                ("attempt", "greatest(j.attempt - 1, 0)"),
                ("wait_reason", "'rate_limited'"),
                ("not_before", "now() + make_interval(secs => src.delay_s)"),
                ("lease_expires_at", "NULL"),
            ),
            failure=("'http_429'", "src.fingerprint", "src.message"),
            reason="'upstream throttled: ' || left(src.message, 200)",
        ),
        # The handler stopped after control asked it to (cancel_requested).
        TransitionSpec(
            name="cancel_running_jobs",
            event=E.CANCEL,
            from_states=(S.RUNNING,),
            to_states=(S.CANCELED,),
            inputs=(("id", "bigint"), ("lease_id", "uuid")),
            match_lease=True,
            sets=(("finished_at", "now()"), ("lease_expires_at", "NULL")),
            reason="'canceled by request; the handler stopped'",
        ),
        # Control: cancel jobs that no worker runs.
        TransitionSpec(
            name="cancel_waiting_jobs",
            event=E.CANCEL,
            from_states=(S.PENDING, S.QUEUED, S.THROTTLED, S.RETRYING),
            to_states=(S.CANCELED,),
            inputs=(("id", "bigint"),),
            lock=True,
            sets=(("finished_at", "now()"), ("not_before", "NULL"), ("wait_reason", "NULL")),
            reason="CAST(:reason AS text)",
        ),
        # Scheduler: a claimed job whose handler never started goes back to the queue; no
        # attempt was counted.
        TransitionSpec(
            name="reap_leased_jobs",
            event=E.LEASE_EXPIRED,
            from_states=(S.LEASED,),
            to_states=(S.QUEUED,),
            select=(
                "SELECT id, state AS from_state FROM jobs\n"
                "        WHERE state IN ('leased', 'running') AND lease_expires_at < now()\n"
                "          AND state = 'leased'\n"
                "        ORDER BY lease_expires_at\n"
                "        LIMIT :limit\n"
                "        FOR UPDATE SKIP LOCKED"
            ),
            sets=(
                ("lease_id", "NULL"),
                ("lease_expires_at", "NULL"),
                ("rung_at", "now()"),
            ),
            reason="'lease of ' || coalesce(j.lease_owner, '?') || ' expired before the handler started'",
            returning=("j.queue",),
        ),
        # Scheduler: a running job whose worker stopped heartbeating (killed, hung, cut off).
        # Another attempt follows at once unless that was the last one.
        TransitionSpec(
            name="reap_running_jobs",
            event=E.LEASE_EXPIRED,
            from_states=(S.RUNNING,),
            to_states=(S.RETRYING, S.DEAD_LETTERED),
            to_expr="CASE WHEN j.attempt >= j.max_attempts THEN 'dead_lettered' ELSE 'retrying' END",
            select=(
                "SELECT id, state AS from_state FROM jobs\n"
                "        WHERE state IN ('leased', 'running') AND lease_expires_at < now()\n"
                "          AND state = 'running'\n"
                "        ORDER BY lease_expires_at\n"
                "        LIMIT :limit\n"
                "        FOR UPDATE SKIP LOCKED"
            ),
            sets=(
                ("not_before", "CASE WHEN j.attempt >= j.max_attempts THEN NULL ELSE now() END"),
                ("finished_at", "CASE WHEN j.attempt >= j.max_attempts THEN now() END"),
                ("lease_expires_at", "NULL"),
                ("error_class", "'lease_expired'"),
                ("last_error", LEASE_EXPIRED_MESSAGE),
                ("error_fingerprint", f"'{LEASE_EXPIRED_FINGERPRINT}'"),
            ),
            failure=("'lease_expired'", f"'{LEASE_EXPIRED_FINGERPRINT}'", LEASE_EXPIRED_MESSAGE),
            reason=(
                "CASE WHEN j.attempt >= j.max_attempts THEN 'lease expired on the last attempt ('"
                " || j.attempt || '/' || j.max_attempts || ')' ELSE 'lease expired' END"
            ),
        ),
        # Scheduler: retrying and throttled jobs whose not_before has passed.
        TransitionSpec(
            name="release_due_jobs",
            event=E.DUE,
            from_states=(S.RETRYING, S.THROTTLED),
            to_states=(S.QUEUED,),
            select=(
                "SELECT id, state AS from_state FROM jobs\n"
                "        WHERE state IN ('retrying', 'throttled') AND not_before <= now()\n"
                "        ORDER BY not_before\n"
                "        LIMIT :limit\n"
                "        FOR UPDATE SKIP LOCKED"
            ),
            sets=(("not_before", "NULL"), ("wait_reason", "NULL"), ("rung_at", "now()")),
            returning=("j.queue",),
        ),
    ]
}


@functools.cache
def transition(name: str) -> sa.TextClause:
    """The rendered statement of the TransitionSpec called `name`."""
    return sa.text(build(SPECS[name]))


def named(name: str, body: str) -> sa.TextClause:
    """A statement whose first line is its name, as an SQL comment."""
    return sa.text(f"/* {name} */\n{body}")


# -- name: allocate_job_ids --
# Ids up front, so the caller maps input rows to jobs without trusting RETURNING order.
ALLOCATE_JOB_IDS = named(
    "allocate_job_ids",
    "SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n)",
)

# -- name: insert_jobs --
# Multi-row insert from arrays (one round trip for thousands of jobs) with the creation
# history rows and one outbox event per tenant in the same statement. A repeated
# idempotency key inserts nothing; the caller looks the existing job up and compares
# digests. A NULL id takes the next value of the sequence (the one-job fast path).
# Rows come as one JSON array of arrays (and payloads as a parallel JSON array): encoding
# that is a single C call, where binding thirteen text arrays costs a regex per element.
INSERT_JOBS = named(
    "insert_jobs",
    """WITH ins AS (
    INSERT INTO jobs (id, tenant_id, job_type, queue, priority, payload, payload_digest,
                      idempotency_key, state, max_attempts, correlation_id, replay_of,
                      run_id, rung_at, source_id, wait_reason, not_before)
    SELECT coalesce((r.v->>0)::bigint, nextval(pg_get_serial_sequence('jobs', 'id'))),
           (r.v->>1)::bigint, r.v->>2, r.v->>3, (r.v->>4)::smallint, p.v, r.v->>5, r.v->>6,
           r.v->>7, (r.v->>8)::int, r.v->>9, (r.v->>10)::bigint, (r.v->>11)::bigint,
           CASE WHEN r.v->>7 = 'queued' THEN now() END, (r.v->>12)::bigint, r.v->>13,
           -- Deferred by backpressure: no time of their own; the scheduler makes them due as
           -- their tenant's backlog drains (flow.release_backpressure).
           CASE WHEN r.v->>13 IS NOT NULL THEN now() + interval '10 years' END
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS r(v, n)
    JOIN jsonb_array_elements(CAST(:payloads AS jsonb)) WITH ORDINALITY AS p(v, n) USING (n)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, state, tenant_id, job_type
), counted AS (
    INSERT INTO submit_counters (tenant_id, job_type, submitted)
    SELECT tenant_id, job_type, count(*) FROM ins GROUP BY tenant_id, job_type
    ON CONFLICT (tenant_id, job_type) DO UPDATE SET submitted = submit_counters.submitted + EXCLUDED.submitted
), history AS (
    INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt)
    SELECT id, NULL, 'submit', state, now(), :actor, :reason, 0 FROM ins
), announce AS (
    INSERT INTO events (tenant_id, kind, payload)
    SELECT tenant_id, 'jobs.submitted',
           jsonb_build_object('count', count(*), 'first_id', min(id), 'last_id', max(id), 'actor', :actor)
    FROM ins GROUP BY tenant_id
)
SELECT id FROM ins""",
)

# -- name: find_idempotent_jobs --
FIND_IDEMPOTENT_JOBS = named(
    "find_idempotent_jobs",
    """SELECT j.id, j.tenant_id, j.idempotency_key, j.payload_digest, j.job_type
FROM unnest(CAST(:tenant_id AS bigint[]), CAST(:idem AS text[])) AS i(tenant_id, idem)
JOIN jobs AS j ON j.tenant_id = i.tenant_id AND j.idempotency_key = i.idem""",
)

# -- name: ensure_tenants --
ENSURE_TENANTS = named(
    "ensure_tenants",
    """WITH ins AS (
    INSERT INTO tenants (name) SELECT unnest(CAST(:names AS text[]))
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name
)
SELECT id, name FROM ins
UNION ALL
SELECT id, name FROM tenants WHERE name = ANY(CAST(:names AS text[]))""",
)

# -- name: record_outcomes --
# Circuits and adaptive buckets learn from finished jobs (orch_record_outcomes, migration 0003).
RECORD_OUTCOMES = named(
    "record_outcomes",
    """SELECT orch_record_outcomes(CAST(:source AS bigint[]), CAST(:kind AS text[]),
    CAST(:retry_after AS float8[]), CAST(:started AS timestamptz[]), :actor)""",
)

# -- name: renew_leases --
# Heartbeat for every running job of a worker process in one statement. A job missing from
# the result has lost its lease; cancel_requested tells the handler to stop.
RENEW_LEASES = named(
    "renew_leases",
    """UPDATE jobs AS j
SET lease_expires_at = now() + make_interval(secs => i.lease_s), heartbeat_at = now()
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:lease_s AS float8[]))
     AS i(id, lease_id, lease_s)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state IN ('leased', 'running')
RETURNING j.id, j.cancel_requested""",
)

# -- name: expire_leases --
# A stopping worker gives up leases it can no longer serve, so the reaper takes them now
# instead of after the lease would have run out.
EXPIRE_LEASES = named(
    "expire_leases",
    """UPDATE jobs AS j SET lease_expires_at = now() - interval '1 millisecond'
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[])) AS i(id, lease_id)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state IN ('leased', 'running')""",
)

# -- name: set_progress --
SET_PROGRESS = named(
    "set_progress",
    """UPDATE jobs AS j SET progress = i.fraction, progress_message = i.message
FROM unnest(CAST(:id AS bigint[]), CAST(:lease_id AS uuid[]), CAST(:fraction AS real[]),
            CAST(:message AS text[])) AS i(id, lease_id, fraction, message)
WHERE j.id = i.id AND j.lease_id = i.lease_id AND j.state = 'running'""",
)

# -- name: insert_logs --
INSERT_LOGS = named(
    "insert_logs",
    """INSERT INTO job_logs (job_id, attempt, at, level, message)
SELECT * FROM unnest(CAST(:id AS bigint[]), CAST(:attempt AS int[]), CAST(:at AS timestamptz[]),
                     CAST(:level AS text[]), CAST(:message AS text[]))""",
)

# -- name: insert_artifact --
# Only the lease holder of a running job may attach an artifact.
INSERT_ARTIFACT = named(
    "insert_artifact",
    """INSERT INTO artifacts (job_id, tenant_id, attempt, name, media_type, sha256, size_bytes, data)
SELECT j.id, j.tenant_id, j.attempt, :name, :media_type, :sha256, :size_bytes, :data
FROM jobs AS j WHERE j.id = :id AND j.lease_id = :lease_id AND j.state = 'running'
RETURNING id""",
)

# -- name: request_cancel --
REQUEST_CANCEL = named(
    "request_cancel",
    """UPDATE jobs SET cancel_requested = true, updated_at = now()
WHERE id = :id AND state IN ('leased', 'running') AND NOT cancel_requested
RETURNING id""",
)

# -- name: count_ready --
# Bounded count of a queue's ready jobs (the claim index), for the doorbell check.
COUNT_READY = named(
    "count_ready",
    """SELECT count(*) FROM (
    SELECT 1 FROM jobs WHERE queue = :queue AND state = 'queued' LIMIT :cap
) AS ready""",
)

# -- name: count_stale_ready --
COUNT_STALE_READY = named(
    "count_stale_ready",
    """SELECT count(*) FROM (
    SELECT 1 FROM jobs
    WHERE queue = :queue AND state = 'queued'
      AND (rung_at IS NULL OR rung_at < now() - make_interval(secs => :grace_s))
    LIMIT :cap
) AS stale""",
)

# -- name: mark_rung --
# The next :limit ready jobs of a queue get a fresh doorbell (claims take the best ready
# job, so which ids a doorbell names does not matter, only how many doorbells exist).
MARK_RUNG = named(
    "mark_rung",
    """UPDATE jobs SET rung_at = now()
WHERE id IN (
    SELECT id FROM jobs WHERE queue = :queue AND state = 'queued'
    ORDER BY priority DESC, id LIMIT :limit FOR UPDATE SKIP LOCKED
)
RETURNING id""",
)

# -- name: next_due --
NEXT_DUE = named(
    "next_due",
    """SELECT min(not_before) - now() FROM jobs WHERE state IN ('retrying', 'throttled')""",
)

# -- name: upsert_job_types --
UPSERT_JOB_TYPES = named(
    "upsert_job_types",
    """INSERT INTO job_types (name, queue, max_attempts, backoff_base_s, backoff_cap_s, lease_s, heartbeat_s)
SELECT * FROM unnest(CAST(:name AS text[]), CAST(:queue AS text[]), CAST(:max_attempts AS int[]),
                     CAST(:base AS float8[]), CAST(:cap AS float8[]), CAST(:lease AS float8[]),
                     CAST(:heartbeat AS float8[]))
ON CONFLICT (name) DO UPDATE SET
    queue = EXCLUDED.queue, max_attempts = EXCLUDED.max_attempts,
    backoff_base_s = EXCLUDED.backoff_base_s, backoff_cap_s = EXCLUDED.backoff_cap_s,
    lease_s = EXCLUDED.lease_s, heartbeat_s = EXCLUDED.heartbeat_s, updated_at = now()
WHERE (job_types.queue, job_types.max_attempts, job_types.backoff_base_s, job_types.backoff_cap_s,
       job_types.lease_s, job_types.heartbeat_s)
   IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.max_attempts, EXCLUDED.backoff_base_s,
                     EXCLUDED.backoff_cap_s, EXCLUDED.lease_s, EXCLUDED.heartbeat_s)""",
)

# -- name: insert_event --
INSERT_EVENT = named(
    "insert_event",
    "INSERT INTO events (tenant_id, kind, payload) VALUES (:tenant_id, :kind, CAST(:payload AS jsonb))",
)


# -- name: queue_depth --
# Live jobs per tenant, queue and state, one partial index per group of states (pending is
# not counted: nothing creates pending jobs until DAG scheduling exists).
QUEUE_DEPTH = named(
    "queue_depth",
    """SELECT tenant_id, queue, state, count(*) AS count FROM jobs WHERE state = 'queued' GROUP BY 1, 2, 3
UNION ALL
SELECT tenant_id, queue, state, count(*) FROM jobs WHERE state IN ('leased', 'running') GROUP BY 1, 2, 3
UNION ALL
SELECT tenant_id, queue, state, count(*) FROM jobs WHERE state IN ('retrying', 'throttled') GROUP BY 1, 2, 3""",
)

# -- name: sample_queue_depth --
SAMPLE_QUEUE_DEPTH = named(
    "sample_queue_depth",
    "INSERT INTO queue_depth_samples (at, tenant_id, queue, state, count) SELECT now(), * FROM ("
    + QUEUE_DEPTH.text.split("\n", 1)[1]
    + ") AS depth",
)

# -- name: prune_queue_depth --
PRUNE_QUEUE_DEPTH = named(
    "prune_queue_depth",
    """DELETE FROM queue_depth_samples WHERE at < now() - make_interval(days => :days)""",
)

# -- name: oldest_ready --
OLDEST_READY = named(
    "oldest_ready",
    """SELECT queue, extract(epoch FROM now() - min(coalesce(rung_at, created_at))) AS age_s
FROM jobs WHERE state = 'queued' GROUP BY queue""",
)

# -- name: dead_letter_depth --
DEAD_LETTER_DEPTH = named(
    "dead_letter_depth",
    """SELECT t.name AS tenant, (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id AND j.state = 'dead_lettered')
FROM tenants t""",
)

# -- name: submit_counts --
SUBMIT_COUNTS = named(
    "submit_counts",
    """SELECT t.name AS tenant, c.job_type, c.submitted FROM submit_counters c JOIN tenants t ON t.id = c.tenant_id""",
)
