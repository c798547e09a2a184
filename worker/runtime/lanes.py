"""The pump's parts: the records its threads hand each other, the lane (a thread with its own
connection that retries through ledger outages) its claimer and writer run in, and the
statement each kind of outcome is written with."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.ledger import jobs as ledger
from worker.runtime.outcomes import CanceledOutcome, FailedFinal, FailedRetryable, Outcome, Succeeded
from worker.sdk import ActiveJob

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogLine:
    job: ActiveJob
    #: Its number within the job's attempt (1, 2, ...): the key that makes a rewrite harmless.
    seq: int
    at: dt.datetime
    level: str
    message: str


@dataclass(slots=True)
class Finish:
    job: ActiveJob
    outcome: Outcome
    #: True once a write of it failed with its fate unknown: a retry checks whether it did commit.
    tried: bool = False
    #: True once a claim statement that carried it did not write it (its row was held, or its
    #: lease lost): the next claim carries it once more, then the writer takes it.
    skipped: bool = False


@dataclass(slots=True)
class Batch:
    """One writer cycle's work; each step removes its part once written."""

    finishes: list[Finish]
    progress: list[tuple[ActiveJob, float, str | None]]
    logs: list[LogLine]
    renew_now: list[tuple[ActiveJob, Future[None]]]


@dataclass
class Claim:
    queue: str
    future: Future[ActiveJob | None]
    #: The success of the thread's previous job, written in the claim's own statement.
    finish: Finish | None = None
    #: Set once the statement carrying `finish` has returned.
    written: bool = False


class Lane:
    """A thread with its own connection, retrying through ledger outages."""

    def __init__(self, engine: sa.Engine, name: str, cycle: Callable[[sa.Connection], bool]) -> None:
        self.engine = engine
        self.name = name
        self.cycle = cycle
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.failures = 0

    def run(self) -> None:
        conn: sa.Connection | None = None
        while True:
            try:
                if conn is None:
                    conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                if not self.cycle(conn):
                    break
                self.failures = 0
            except sa.exc.OperationalError as exc:
                self.failures += 1
                delay = min(2.0, 0.05 * 2 ** min(self.failures, 6))
                log.warning(
                    "%s: ledger unavailable (%s); retrying in %.2fs",
                    self.name,
                    str(exc.orig).strip().splitlines()[0][:200] if exc.orig else exc,
                    delay,
                )
                if conn is not None:
                    conn.invalidate()
                    conn.close()
                    conn = None
                time.sleep(delay)
            except Exception:  # a bug, not an outage: log it, do not spin on it
                log.exception("%s cycle failed", self.name)
                time.sleep(0.5)
        if conn is not None:
            conn.close()


def write_group(conn: sa.Connection, kind: type, group: list[Finish], *, actor: str) -> set[int]:
    """Write outcomes of one kind (one statement); the ids whose job took the outcome."""
    ids = [f.job.id for f in group]
    leases = [f.job.lease_id for f in group]
    outcomes: list[Any] = [f.outcome for f in group]
    if kind is Succeeded:
        results = [o.result for o in outcomes]
        rows = ledger.succeed_jobs(conn, ids, leases, actor=actor, results=results if any(results) else None)
    elif kind is FailedRetryable:
        rows = ledger.fail_retryable_jobs(
            conn,
            ids,
            leases,
            [o.delay_s for o in outcomes],
            [o.error_class for o in outcomes],
            [o.message for o in outcomes],
            actor=actor,
            fingerprints=[o.fingerprint for o in outcomes],
        )
    elif kind is FailedFinal:
        rows = ledger.fail_final_jobs(
            conn,
            ids,
            leases,
            [o.error_class for o in outcomes],
            [o.message for o in outcomes],
            [o.why for o in outcomes],
            actor=actor,
            fingerprints=[o.fingerprint for o in outcomes],
        )
    elif kind is CanceledOutcome:
        rows = ledger.cancel_running_jobs(conn, ids, leases, actor=actor)
    else:
        rows = ledger.throttle_jobs(
            conn,
            ids,
            leases,
            [o.delay_s for o in outcomes],
            [o.message for o in outcomes],
            actor=actor,
        )
    return {int(r["id"]) for r in rows}
