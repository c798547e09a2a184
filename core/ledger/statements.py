"""Every statement of the ledger, by name. The name is also an SQL comment at the head of the
statement sent, so a line in a slow-query log or pg_stat_statements leads back here by grep.

- Named statements live in core/ledger/sql/statements/*.sql; `stmt(name)` gives one.
- State-changing statements are TransitionSpecs rendered by core.ledger.transitions.build,
  so each one is checked against the state machine and writes its job_history rows in the
  same statement; `transition(name)` gives one. Their rendered text is committed under
  docs/sql/ (`python -m core.ledger.statements` writes it; a test fails when it is stale).

Files are read and statements rendered on first use, not at import.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import sqlalchemy as sa

from core.domain import fingerprints
from core.domain.states import Event, State
from core.ledger import sqlfiles
from core.ledger.transitions import TransitionSpec, build

S, E = State, Event

LEASE_S = "make_interval(secs => coalesce((SELECT t.lease_s FROM job_types AS t WHERE t.name = j.job_type), 30))"

# Besides what every transition returns (id, tenant_id, job_type, run_id, attempt, ...:
# core/ledger/transitions.py).
JOB_COLUMNS = (
    "j.lease_id",
    "j.queue",
    "j.payload",
    "j.max_attempts",
    "j.cancel_requested",
    "j.correlation_id",
    "j.source_id",
    "j.started_at",
    "j.window_id",
    # Whether a success of this job can teach its source's circuit or bucket anything (the
    # worker reports successes only then; failures and 429s always), and its tenant's name:
    # read with the candidates, before admission locks anything (claim.sql).
    "src.learns",
    "src.tenant",
    "CASE WHEN j.run_id IS NOT NULL THEN (SELECT rj.key FROM run_jobs AS rj WHERE rj.job_id = j.id) END AS run_key",
    # Whether its end can release anything (only its own spawns add children later).
    "CASE WHEN j.run_id IS NOT NULL THEN EXISTS (SELECT 1 FROM dag_edges AS e WHERE e.parent_id = j.id)"
    " ELSE false END AS has_children",
    # A job of a run with parents: seconds since its last parent ended (the DAG hop).
    "CASE WHEN j.run_id IS NOT NULL THEN (SELECT extract(epoch FROM now() - max(p.finished_at))"
    " FROM dag_edges AS e JOIN jobs AS p ON p.id = e.parent_id WHERE e.child_id = j.id) END AS release_s",
    # Ready (rung) until claimed: the queue wait. now() is the claiming transaction's start.
    "extract(epoch FROM now() - coalesce(j.rung_at, j.created_at)) AS queue_wait_s",
)

UNTIL = "to_char(src.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')"

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

# A success: finished, the lease given up.
SUCCEEDED = (("finished_at", "now()"), ("lease_expires_at", "NULL"), ("progress", "1"))


def _specs() -> list[TransitionSpec]:
    admit = sqlfiles.statement("claim_candidates")
    admitted = sqlfiles.statement("claim_admitted")
    # Jobs admission turned away wait as throttled; no attempt is counted. The history row
    # carries the wait reason.
    deny = TransitionSpec(
        name="deny",
        event=E.DENY,
        from_states=(S.QUEUED,),
        to_states=(S.THROTTLED,),
        select=sqlfiles.statement("claim_denied"),
        sets=(("wait_reason", "src.wait_reason"), ("not_before", "src.not_before")),
        history=(("wait_reason", "src.wait_reason"),),
        reason=f"src.wait_reason || ' until ' || {UNTIL} || ' UTC'",
    )
    claim_and_start = TransitionSpec(
        name="claim_and_start_jobs",
        event=E.CLAIM,
        from_states=(S.QUEUED,),
        to_states=(S.LEASED,),
        then=((E.ACK, S.RUNNING),),
        head=admit,
        select=admitted,
        companions=(deny,),
        sets=NEW_LEASE + STARTED,
        returning=JOB_COLUMNS,
    )
    # The successes a worker thread's claim carries (result-less, releasing nothing): the
    # "succeed" companion of succeed_and_claim_jobs. A job whose row another transaction
    # holds is skipped, not waited for: another worker's claim that read the queue before
    # this job was claimed keeps the lock it took on the job's new version (READ COMMITTED
    # locks the newest version, then finds it no longer queued) until that claim commits.
    # The caller carries what was not written on its next claim, then hands it to its writer
    # (docs/adr/0025).
    succeed = TransitionSpec(
        name="succeed",
        event=E.SUCCEED,
        from_states=(S.RUNNING,),
        to_states=(S.SUCCEEDED,),
        inputs=(("id", "bigint"), ("lease_id", "uuid")),
        match_lease=True,
        skip_locked=True,
        sets=SUCCEEDED,
    )
    return [
        # Take up to :limit ready jobs of :queue, best priority first, that admission lets
        # start (claim now, start later); the others wait as throttled.
        TransitionSpec(
            name="claim_jobs",
            event=E.CLAIM,
            from_states=(S.QUEUED,),
            to_states=(S.LEASED,),
            head=admit,
            select=admitted,
            companions=(deny,),
            sets=NEW_LEASE,
            returning=JOB_COLUMNS,
        ),
        # What a worker does: claim and start in one statement (two history rows), for a
        # handler that starts at once. The attempt is counted and committed before it runs,
        # so a job that crashes its worker still uses up its attempts.
        claim_and_start,
        # A worker thread that finished a job records its success and claims its next job
        # in one round trip (docs/adr/0017). The claim's rows, each with `succeeded`: the
        # ids of the successes written (the same array on every row; one row of NULLs when
        # nothing was claimed). The claim does not see what the successes release.
        dataclasses.replace(
            claim_and_start,
            name="succeed_and_claim_jobs",
            companions=(deny, succeed),
            final=(
                "SELECT s.succeeded, m.*\n"
                "FROM (SELECT array_agg(id) AS succeeded FROM succeed_moved) AS s LEFT JOIN moved AS m ON true"
            ),
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
            inputs=(("id", "bigint"), ("lease_id", "uuid"), ("result", "text")),
            match_lease=True,
            sets=SUCCEEDED,
            returning=("j.queue",),
            # What the handler returned, for its children (JobContext.parent), committed
            # with the success that releases them.
            tail=(
                "results AS (\n"
                "    INSERT INTO job_results (job_id, tenant_id, result, size_bytes)\n"
                "    SELECT m.id, m.tenant_id, CAST(src.result AS jsonb), octet_length(src.result)\n"
                "    FROM moved AS m JOIN src ON src.id = m.id\n"
                "    WHERE src.result IS NOT NULL\n"
                "    ON CONFLICT (job_id) DO NOTHING\n"
                ")"
            ),
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
            history=(("wait_reason", "'rate_limited'"),),
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


@functools.cache
def specs() -> dict[str, TransitionSpec]:
    """Every transition statement's spec, by name (checked against the state machine)."""
    return {spec.name: spec for spec in _specs()}


#: psycopg caches its parse of a query's placeholders only for queries up to this length
#: (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH); a longer hot statement is parsed again on
#: every execution (14% of a worker's claimer time, measured: docs/adr/0017).
CLIENT_CACHED_LENGTH = 4096


def compact(text: str) -> str:
    """The statement as sent: each line without its indentation (docs/sql/ keeps it)."""
    return "\n".join(line.strip() for line in text.splitlines())


@functools.cache
def transition(name: str) -> sa.TextClause:
    """The rendered statement of the TransitionSpec called `name`, as sent (compact)."""
    return sa.text(compact(build(specs()[name])))


def named(name: str, body: str) -> sa.TextClause:
    """A statement whose first line is its name, as an SQL comment."""
    return sa.text(f"/* {name} */\n{body}")


@functools.cache
def stmt(name: str) -> sa.TextClause:
    """The named statement `name` of core/ledger/sql/statements. Raises KeyError."""
    if name == "sample_queue_depth":
        # The samples are exactly what queue_depth reads: one definition of the query.
        body = "INSERT INTO queue_depth_samples (at, tenant_id, queue, state, count) SELECT now(), * FROM ("
        return named(name, body + sqlfiles.statement("queue_depth") + ") AS depth")
    if name == "insert_jobs_audited":
        # insert_jobs with the submit's audit CTEs before its final SELECT: one definition of
        # the insert.
        insert = sqlfiles.statement("insert_jobs")
        cut = insert.rindex("\nSELECT id FROM ins")
        return named(name, insert[:cut] + "\n" + sqlfiles.statement("submit_audit") + insert[cut:])
    return named(name, sqlfiles.statement(name))


#: Where the rendered transition statements are committed, and which.
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "docs" / "sql"


def golden() -> dict[str, str]:
    """{file name: rendered text} of every transition statement, for docs/sql/."""
    return {f"{name}.sql": build(spec) + ";\n" for name, spec in specs().items()}


def main(argv: list[str] | None = None) -> int:
    """Write docs/sql/ (python -m core.ledger.statements [DIR])."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else GOLDEN_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, text in golden().items():
        (out / name).write_text(text)
    print(f"wrote {len(golden())} statements to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
