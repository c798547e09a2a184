"""The console's rollups of finished jobs (migration 0008, docs/design.md, "Reads on a big
ledger"): one function per statement of core/ledger/sql/statements/rollups.sql, and
`roll_up`, the scheduler's step.

job_finish_rollups (per tenant, job type and 5-minute bucket of finished_at: succeeded,
dead-lettered, canceled) and job_state_totals (succeeded and canceled per tenant) hold
exactly the jobs that finished before rollup_marks.until. Only the rollup step moves the
mark, under its row lock; retention's delete_jobs takes the same lock and subtracts what it
deletes from before the mark. Reads add the jobs finished since the mark (jobs_finished_idx),
so they are exact whenever the step last ran; the step is bounded per transaction and costs
two index probes when nothing finished."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from core.ledger.statements import stmt

#: A finish is rolled up this long after its transaction started at the earliest.
GRACE_S = 10.0
#: A transaction open longer than this no longer holds the rollup back (an idle session in a
#: transaction would otherwise stop it); worker transactions last milliseconds.
MAX_XACT_S = 600.0
#: Jobs per rollup transaction.
BATCH = 50_000
#: Buckets are kept this long: the longest burn-rate window (3 days) and a margin.
KEEP_DAYS = 8


@dataclass
class RollupResult:
    jobs: int = 0
    transactions: int = 0
    #: False when the step stopped at its budget with more finished jobs to roll up.
    complete: bool = True
    seconds: float = 0.0


def ensure_rollup_mark(conn: sa.Connection) -> None:
    conn.execute(stmt("ensure_rollup_mark"))


def lock_rollup_mark(conn: sa.Connection) -> object:
    return conn.execute(stmt("lock_rollup_mark")).scalar_one()


def rollup_horizon(conn: sa.Connection, *, grace_s: float) -> object:
    """How far roll_up_finished may go; read it in an earlier statement of the same
    transaction (see the statement)."""
    return conn.execute(stmt("rollup_horizon"), {"grace_s": grace_s, "max_xact_s": MAX_XACT_S}).scalar_one()


def roll_up_finished(conn: sa.Connection, until: object, *, limit: int, horizon: object) -> sa.RowMapping:
    params = {"until": until, "limit": limit, "horizon": horizon}
    return conn.execute(stmt("roll_up_finished"), params).mappings().one()


def prune_rollup_buckets(conn: sa.Connection, days: int) -> int:
    return int(conn.execute(stmt("prune_rollup_buckets"), {"days": days}).rowcount or 0)


def summarize_created_brin(conn: sa.Connection) -> int:
    return int(conn.execute(stmt("summarize_created_brin")).scalar_one() or 0)


def roll_up(
    engine: sa.Engine,
    *,
    batch: int = BATCH,
    grace_s: float = GRACE_S,
    budget_s: float | None = None,
) -> RollupResult:
    """Roll finished jobs up to the horizon, one bounded transaction after another, until
    done or `budget_s` has passed; then drop buckets past KEEP_DAYS and summarise the new
    block ranges of jobs_created_brin. Safe to run from two schedulers at once: each
    transaction locks the mark first and reads the jobs after it has the lock."""
    started = time.monotonic()
    out = RollupResult()
    with engine.begin() as conn:
        ensure_rollup_mark(conn)
    while True:
        with engine.begin() as conn:
            # The scheduler's engine prepares generic plans; the bounds of this statement
            # decide between an index range and a scan of every job.
            conn.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
            until = lock_rollup_mark(conn)
            horizon = rollup_horizon(conn, grace_s=grace_s)
            row = roll_up_finished(conn, until, limit=batch, horizon=horizon)
        out.jobs += int(row["jobs"])
        out.transactions += 1
        if not row["full"]:
            break
        if budget_s is not None and time.monotonic() - started > budget_s:
            out.complete = False
            break
    tidy(engine)
    out.seconds = time.monotonic() - started
    return out


def tidy(engine: sa.Engine) -> None:
    """Drop buckets past KEEP_DAYS, then summarise the new block ranges of jobs_created_brin,
    each in a transaction of its own. The summary waits for a SHARE UPDATE EXCLUSIVE lock
    on jobs, and must hold no other lock while it waits: in one transaction with the prune,
    an ALTER or TRUNCATE of jobs that then wanted job_finish_rollups deadlocked with it."""
    with engine.begin() as conn:
        prune_rollup_buckets(conn, KEEP_DAYS)
    with engine.begin() as conn:
        summarize_created_brin(conn)
