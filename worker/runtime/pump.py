"""The worker process's path to the ledger: two threads that batch every claim, completion,
heartbeat, progress report and log line of the process into a few statements per cycle
("group commit"). Under load a cycle carries many jobs; at idle it carries one and adds no
wait, so batching costs no latency.

- The claimer turns the claims of all worker threads into one claim_and_start statement
  per queue. Worker threads block on it: they must know they own a job.
- The writer writes outcomes, progress, log lines and lease renewals; worker threads hand
  these over and go on. A job stays in `active` (and keeps being heartbeated) until its
  outcome is committed, so a process killed before that loses nothing: the lease runs
  out and the scheduler recovers the job.

Each statement is its own transaction (autocommit): none of them needs another to be
atomic with it, and BEGIN/COMMIT would double the round trips on every job's path. So a
database blip can cut a batch between two statements, or leave one statement's fate
unknown: the writer keeps only what did not commit for its next try, log lines carry their
number (written twice, stored once), and an outcome retried after an unknown fate is
recognised when it did commit (the job is in its target state under this worker's lease).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import sqlalchemy as sa

from core.control import Doorbell, NoDoorbell
from core.control.common import ring
from core.domain import errors
from core.ledger import flow
from core.ledger import jobs as ledger
from core.ledger import runs as ledger_runs
from worker.runtime import dagport, windowport
from worker.runtime.lanes import Batch, Claim, Finish, Lane, LogLine, write_group
from worker.runtime.outcomes import (
    CIRCUIT_FAILURES,
    TARGET_STATES,
    CanceledOutcome,
    FailedFinal,
    FailedRetryable,
    Outcome,
    Succeeded,
    Throttled,
)
from worker.sdk import ActiveJob, ParentInfo, SourceInfo, SpawnSpec

#: The outcome kinds are re-exported: callers import them from here.
__all__ = ["CanceledOutcome", "FailedFinal", "FailedRetryable", "Outcome", "Pump", "Succeeded", "Throttled"]

log = logging.getLogger(__name__)

MAX_BATCH = 500


#: How long skipped successes wait for a claim to carry them before the writer takes them.
CARRY_WAIT_S = 0.005


class Pump:
    def __init__(
        self,
        engine: sa.Engine,
        *,
        owner: str,
        job_types: Callable[[], Sequence[str]],
        lease_policy: Callable[[str], tuple[float, float]],
        write_linger_s: float = 0.0,
        doorbell: Doorbell | None = None,
        threads: int = 0,
        claim_linger_s: float = 0.0,
    ) -> None:
        """`job_types` lists the types this process can run (claims take only those);
        `lease_policy(job_type)` gives (lease_s, heartbeat_s); `write_linger_s` is how long
        the writer waits for more outcomes when it has only a few; `doorbell` rings for the
        jobs of runs that outcomes release (without one, the scheduler rings them)."""
        self.engine = engine
        self.doorbell: Doorbell = doorbell or NoDoorbell()
        self.write_linger_s = write_linger_s
        # The claimer's linger (see _gather): with `threads` worker threads, while ready work
        # remains and handlers are running, a claim waits up to `claim_linger_s` for the
        # others to come back, so one statement serves more of them.
        self.threads = threads
        self.claim_linger_s = claim_linger_s
        self._backlog = False
        self.owner = owner
        self._job_types = job_types
        self._lease_policy = lease_policy
        self._claim_cond = threading.Condition()
        self._claims: list[Claim] = []
        # Carried successes the last claim statement skipped, for the next one (claimer only).
        self._carried: list[Finish] = []
        self._write_cond = threading.Condition()
        self._finishes: list[Finish] = []
        self._progress: dict[int, tuple[ActiveJob, float, str | None]] = {}
        self._logs: list[LogLine] = []
        self._renew_now: list[tuple[ActiveJob, Future[None]]] = []
        self._active_lock = threading.Lock()
        self._active: dict[int, ActiveJob] = {}
        self._stopping = False
        self._claimer = Lane(engine, "orch-claimer", self._claim_cycle)
        self._writer = Lane(engine, "orch-writer", self._write_cycle)
        self.stats: dict[str, int] = defaultdict(int)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._claimer.thread.start()
        self._writer.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop. Leases still held are released to the reaper."""
        self._stopping = True
        for cond in (self._claim_cond, self._write_cond):
            with cond:
                cond.notify_all()
        for lane in (self._claimer, self._writer):
            if lane.thread.is_alive():
                lane.thread.join(timeout)
        with self._active_lock:
            leftover = list(self._active.values())
        if leftover:
            try:
                with self.engine.begin() as conn:
                    ledger.expire_leases(conn, [j.id for j in leftover], [j.lease_id for j in leftover])
                log.info("released %d lease(s) still held at shutdown", len(leftover))
            except sa.exc.SQLAlchemyError as exc:
                log.warning(
                    "could not release %d lease(s) at shutdown; they expire on their own: %s", len(leftover), exc
                )

    def active_count(self) -> int:
        with self._active_lock:
            return len(self._active)

    # -- called from worker threads ----------------------------------------------------

    def claim(self, queue: str, done: ActiveJob | None = None, timeout: float = 30.0) -> ActiveJob | None:
        """Claim and start the next ready job of `queue` (queued -> leased -> running).
        None when nothing is ready or the process is stopping. `done` is this thread's
        previous job, finished with a success that takes no result and releases nothing
        (`can_finish_with_claim`): it is written in the claim's own statement, one round trip
        for both (docs/adr/0017); it is written even when this raises. Raises Unavailable
        when the ledger cannot be reached, TimeoutError when no answer came within `timeout`."""
        fut: Future[ActiveJob | None] = Future()
        finish = None if done is None else Finish(done, Succeeded())
        with self._claim_cond:
            if self._stopping:
                if finish is not None:
                    self._hand_to_writer([finish])
                return None
            if done is not None:
                done.finishing = True
            self._claims.append(Claim(queue, fut, finish))
            self._claim_cond.notify()
        try:
            return fut.result(timeout)
        except TimeoutError:
            # Abandoned: a job claimed for it after all is given back (Pump._claim); if the
            # claimer is handing one over right now, take it.
            if fut.cancel():
                raise
            return fut.result(1.0)

    @staticmethod
    def can_finish_with_claim(job: ActiveJob, outcome: Outcome) -> bool:
        """Whether this outcome may ride on the thread's next claim: a success without a
        result, of a job whose end teaches its source nothing. Children it releases are
        released by the same statement and rung right after it (Pump._claim)."""
        return type(outcome) is Succeeded and outcome.result is None and not job.learns and not job.lease_lost

    def finish(self, job: ActiveJob, outcome: Outcome) -> None:
        with self._write_cond:
            self._finishes.append(Finish(job, outcome))
            self._write_cond.notify()

    def renew_now(self, job: ActiveJob) -> None:
        if job.lease_lost:
            raise errors.LeaseLost(f"job {job.id}: lease lost")
        fut: Future[None] = Future()
        with self._write_cond:
            self._renew_now.append((job, fut))
            self._write_cond.notify()
        fut.result(60)

    def progress(self, job: ActiveJob, fraction: float, message: str | None) -> None:
        with self._write_cond:
            self._progress[job.id] = (job, fraction, message)
            self._write_cond.notify()

    def log(self, job: ActiveJob, level: str, message: str) -> None:
        with self._write_cond:
            job.log_lines += 1
            self._logs.append(LogLine(job, job.log_lines, dt.datetime.now(dt.UTC), level, message[:10_000]))
            self._write_cond.notify()

    def source(self, job: ActiveJob) -> SourceInfo | None:
        """The job's source as the ledger has it now: read on every call (one primary-key
        lookup, against the request it guards), so a changed host or private-address rule
        applies to the next fetch."""
        if job.source_id is None:
            return None
        with self.engine.connect() as conn:
            row = flow.source_policy(conn, job.source_id)
        return None if row is None else SourceInfo(int(row["id"]), row["name"], row["host"], bool(row["allow_private"]))

    # -- jobs of runs (worker/runtime/dagport.py) ---------------------------------------

    def parents(self, job: ActiveJob) -> dict[str, ParentInfo]:
        return dagport.parents(self.engine, job)

    def read_artifact(self, job: ActiveJob, artifact_id: int) -> bytes:
        return dagport.read_artifact(self.engine, job, artifact_id)

    def spawn(self, job: ActiveJob, specs: Sequence[SpawnSpec]) -> dict[str, int]:
        return dagport.spawn(self.engine, self.owner, self.doorbell, job, specs)

    def data_interval(self, job: ActiveJob) -> tuple[dt.datetime, dt.datetime] | None:
        return windowport.data_interval(self.engine, job)

    def watermark(self, job: ActiveJob, at: dt.datetime) -> bool:
        return windowport.watermark(self.engine, self.owner, job, at)

    def store_artifact(self, job: ActiveJob, name: str, data: bytes, media_type: str) -> str:
        sha = hashlib.sha256(data).hexdigest()
        with self.engine.begin() as conn:
            got = ledger.insert_artifact(
                conn, job_id=job.id, lease_id=job.lease_id, name=name, media_type=media_type, sha256=sha, data=data
            )
        if got is None:
            job.lease_lost = True
            raise errors.LeaseLost(f"job {job.id}: lease lost, artifact {name!r} not stored")
        return sha

    # -- the claimer -------------------------------------------------------------------

    def _gather(self) -> None:
        """Under load, wait a moment for more claims (called holding _claim_cond). Only
        while the last claim statement found ready work for every claim it served (so more
        is likely ready) and some of this process's jobs are still in their handlers (so
        their threads are coming back): then the wait turns several statements into one.
        An idle pool never waits: its last claim found nothing, or nothing is running."""
        if not self._backlog or self.claim_linger_s <= 0 or len(self._claims) >= self.threads:
            return
        deadline = time.monotonic() + self.claim_linger_s
        while len(self._claims) < self.threads and not self._stopping:
            with self._active_lock:
                finishing = sum(1 for c in self._claims if c.finish is not None)
                in_handlers = len(self._active) - finishing
            if in_handlers <= 0:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._claim_cond.wait(left)

    def _claim_cycle(self, conn: sa.Connection) -> bool:
        with self._claim_cond:
            while not self._claims and not self._stopping:
                if not self._carried:
                    self._claim_cond.wait()
                elif not self._claim_cond.wait(CARRY_WAIT_S):  # no claim came to carry them
                    self._hand_to_writer(self._carried)
                    self._carried = []
            self._gather()
            if self._stopping:
                self._hand_to_writer([c.finish for c in self._claims if c.finish is not None] + self._carried)
                self._carried = []
                for c in self._claims:
                    if c.future.set_running_or_notify_cancel():
                        c.future.set_result(None)
                self._claims = []
                return False
            claims, self._claims = self._claims[:MAX_BATCH], self._claims[MAX_BATCH:]
        try:
            self._claim(conn, claims)
        except sa.exc.OperationalError as exc:
            # Fail fast: the doorbells are acknowledged and the scheduler re-rings. The
            # successes the claims carried may or may not have committed: the writer
            # writes them again and recognises those that did.
            self._hand_to_writer([c.finish for c in claims if c.finish is not None and not c.written], tried=True)
            self._hand_to_writer(self._carried, tried=True)
            self._carried = []
            for c in claims:
                if not c.future.done():
                    c.future.set_exception(errors.Unavailable(str(exc.orig or exc)))
            raise
        except Exception as exc:
            self._hand_to_writer([c.finish for c in claims if c.finish is not None and not c.written])
            self._hand_to_writer(self._carried)
            self._carried = []
            for c in claims:
                if not c.future.done():
                    c.future.set_exception(exc)
            raise
        return True

    def _hand_to_writer(self, finishes: list[Finish], *, tried: bool = False) -> None:
        if not finishes:
            return
        for f in finishes:
            f.tried = f.tried or tried
        with self._write_cond:
            self._finishes.extend(finishes)
            self._write_cond.notify()

    def _claim(self, conn: sa.Connection, claims: list[Claim]) -> None:
        by_queue: dict[str, list[Claim]] = defaultdict(list)
        for c in claims:
            by_queue[c.queue].append(c)
        types = list(self._job_types())
        released: set[int] = set()
        carried = self._carried  # they stay there until written: an error hands them to the writer
        for queue, waiting in sorted(by_queue.items()):
            finishes = sorted([c.finish for c in waiting if c.finish is not None] + carried, key=lambda f: f.job.id)
            carried = []
            limit = sum(1 for c in waiting if not c.future.cancelled())
            if finishes:
                done, rows = ledger.succeed_and_claim_jobs(
                    conn,
                    [f.job.id for f in finishes],
                    [f.job.lease_id for f in finishes],
                    queue=queue,
                    limit=limit,
                    owner=self.owner,
                    job_types=types,
                )
                for c in waiting:
                    c.written = True
                self._finished_with_claims(finishes, done)
                released.update(
                    f.job.run_id
                    for f in finishes
                    if f.job.id in done and f.job.run_id is not None and f.job.has_children
                )
            else:
                rows = ledger.claim_and_start_jobs(conn, queue=queue, limit=limit, owner=self.owner, job_types=types)
            got = [self._active_job(r) for r in rows]
            now = time.monotonic()
            with self._active_lock:
                for job in got:
                    job.next_renew = now + job.heartbeat_s
                    self._active[job.id] = job
            unclaimed: list[ActiveJob] = []
            for c in waiting:
                if c.future.cancelled() or not c.future.set_running_or_notify_cancel():
                    continue
                c.future.set_result(got.pop(0) if got else None)
            unclaimed += got  # claims abandoned while the statement ran
            if unclaimed:
                with self._active_lock:
                    for job in unclaimed:
                        self._active.pop(job.id, None)
                ledger.expire_leases(conn, [j.id for j in unclaimed], [j.lease_id for j in unclaimed])
                log.warning("gave back %d job(s) claimed for threads that stopped waiting", len(unclaimed))
            self._backlog = len(rows) >= limit > 0
            self.stats["claimed"] += len(rows) - len(unclaimed)
            self.stats["claim_statements"] += 1
        # After every waiting thread has its job: the children these successes released.
        self._ring_released(conn, released)

    def _finished_with_claims(self, finishes: list[Finish], done: set[int]) -> None:
        """A success the statement did not write lost its lease, or its row was held by
        another transaction (skipped, not waited for; docs/adr/0025): the next claim carries
        it again (the holder has committed by then, as a rule), and after that the writer's
        succeed_jobs, which waits, writes it or finds the lease lost and discards it."""
        with self._active_lock:
            for f in finishes:
                if f.job.id in done:
                    self._active.pop(f.job.id, None)
        sent = {f.job.id for f in finishes}
        left = [f for f in finishes if f.job.id not in done]
        self._hand_to_writer([f for f in left if f.skipped])
        again = [f for f in left if not f.skipped]
        for f in again:
            f.skipped = True
        self._carried = [f for f in self._carried if f.job.id not in sent] + again
        self.stats["finished"] += len(done)
        self.stats["finished_with_claims"] += len(done)

    def _active_job(self, row: sa.RowMapping) -> ActiveJob:
        lease_s, heartbeat_s = self._lease_policy(row["job_type"])
        return ActiveJob(
            id=row["id"],
            lease_id=row["lease_id"],
            tenant=row["tenant"],
            job_type=row["job_type"],
            queue=row["queue"],
            payload=row["payload"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            correlation_id=row["correlation_id"],
            queue_wait_s=float(row["queue_wait_s"] or 0.0),
            source_id=row["source_id"],
            started_at=row["started_at"],
            learns=bool(row["learns"]),
            cancel_requested=row["cancel_requested"],
            run_id=row["run_id"],
            key=row["run_key"],
            release_s=None if row["release_s"] is None else float(row["release_s"]),
            has_children=bool(row["has_children"]),
            window_id=row["window_id"],
        )

    # -- the writer --------------------------------------------------------------------

    def _due_renewals(self, now: float) -> list[ActiveJob]:
        with self._active_lock:
            return [j for j in self._active.values() if j.next_renew <= now and not j.finishing]

    def _next_wake(self, now: float) -> float:
        with self._active_lock:
            if not self._active:
                return 1.0
            return max(0.0, min(j.next_renew for j in self._active.values()) - now)

    def _write_pending(self) -> bool:
        return bool(self._finishes or self._progress or self._logs or self._renew_now)

    def _write_cycle(self, conn: sa.Connection) -> bool:
        with self._write_cond:
            while not self._write_pending() and not self._stopping and not self._due_renewals(time.monotonic()):
                self._write_cond.wait(self._next_wake(time.monotonic()))
            if self._stopping and not self._write_pending():
                return False
            linger = self.write_linger_s > 0 and not self._renew_now and not self._stopping and len(self._finishes) < 8
        if linger:
            # Outcomes are asynchronous (nobody waits on them), so a moment's wait for more
            # of them costs no latency a handler sees and makes batches larger.
            time.sleep(self.write_linger_s)
        with self._write_cond:
            batch = Batch(
                finishes=self._finishes[:MAX_BATCH],
                progress=list(self._progress.values()),
                logs=self._logs[:MAX_BATCH],
                renew_now=self._renew_now,
            )
            self._finishes, self._logs = self._finishes[MAX_BATCH:], self._logs[MAX_BATCH:]
            self._progress, self._renew_now = {}, []
        renewals = [] if self._stopping else self._due_renewals(time.monotonic())
        try:
            self._write(conn, batch, renewals)
        except sa.exc.OperationalError:
            # Keep what did not commit for the next try (the lane backs off); each step
            # below drops its part of the batch once its statement has returned.
            for f in batch.finishes:
                f.tried = True
            with self._write_cond:
                self._finishes[:0] = batch.finishes
                for job, frac, msg in batch.progress:
                    self._progress.setdefault(job.id, (job, frac, msg))
                self._logs[:0] = batch.logs
                self._renew_now[:0] = [r for r in batch.renew_now if not r[1].done()]
            raise
        except Exception as exc:
            # Not an outage: drop these writes; the jobs' leases are given up so the
            # scheduler retries them instead of the heartbeat keeping them forever.
            with self._active_lock:
                for f in batch.finishes:
                    self._active.pop(f.job.id, None)
            for _, fut in batch.renew_now:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        return True

    def _write(self, conn: sa.Connection, batch: Batch, renewals: list[ActiveJob]) -> None:
        """Write the batch step by step; each step empties its part of `batch` once its
        statement has committed, so what is left after an error is what did not."""
        if batch.logs:
            lines = batch.logs
            ledger.insert_logs(
                conn,
                [x.job.id for x in lines],
                [x.job.attempt for x in lines],
                [x.seq for x in lines],
                [x.at for x in lines],
                [x.level for x in lines],
                [x.message for x in lines],
            )
            batch.logs = []
        if batch.progress:
            progress = batch.progress
            ledger.set_progress(
                conn,
                [j.id for j, _, _ in progress],
                [j.lease_id for j, _, _ in progress],
                [f for _, f, _ in progress],
                [m for _, _, m in progress],
            )
            batch.progress = []
        finishing = {f.job.id for f in batch.finishes}
        to_renew = {j.id: j for j in renewals if j.id not in finishing}
        for job, _ in batch.renew_now:
            if job.id not in finishing:
                to_renew[job.id] = job
        if to_renew:
            self._renew(conn, to_renew)
        for job, fut in batch.renew_now:
            if not fut.done():
                if job.id in finishing or not job.lease_lost:
                    fut.set_result(None)
                else:
                    fut.set_exception(errors.LeaseLost(f"job {job.id}: lease lost"))
        batch.renew_now = []
        if batch.finishes:
            self._write_finishes(conn, batch)

    def _renew(self, conn: sa.Connection, to_renew: dict[int, ActiveJob]) -> None:
        jobs = sorted(to_renew.values(), key=lambda j: j.id)
        held = ledger.renew_leases(conn, [j.id for j in jobs], [j.lease_id for j in jobs], [j.lease_s for j in jobs])
        now = time.monotonic()
        with self._active_lock:
            for jid, job in to_renew.items():
                if jid in held:
                    job.cancel_requested = job.cancel_requested or held[jid]
                    job.next_renew = now + job.heartbeat_s
                elif not job.finishing:  # else its success committed since the renewal was read
                    job.lease_lost = True
                    self._active.pop(jid, None)
                    log.warning("job %d: lease lost (expired or taken over); the handler should stop", jid)

    def _write_finishes(self, conn: sa.Connection, batch: Batch) -> None:
        """One statement per kind of outcome, then the lessons for circuits and buckets."""
        groups: dict[type, list[Finish]] = defaultdict(list)
        for f in sorted(batch.finishes, key=lambda f: f.job.id):
            groups[type(f.outcome)].append(f)
        written: list[Finish] = []
        for kind, group in groups.items():
            done = write_group(conn, kind, group, actor=self.owner)
            if any(f.tried for f in group):
                missing = [f for f in group if f.job.id not in done]
                if missing:
                    done |= ledger.outcomes_written(
                        conn, [f.job.id for f in missing], [f.job.lease_id for f in missing], TARGET_STATES[kind]
                    )
            ids = {f.job.id for f in group}
            batch.finishes = [f for f in batch.finishes if f.job.id not in ids]
            with self._active_lock:
                for f in group:
                    self._active.pop(f.job.id, None)
            for f in group:
                if f.job.id in done:
                    written.append(f)
                else:
                    log.warning("job %d: lease lost before its outcome was written; the outcome is discarded", f.job.id)
            self.stats["finished"] += len(done)
        self._record_outcomes(
            conn, [(f.job, f.outcome) for f in sorted(written, key=lambda f: f.job.id) if f.job.source_id is not None]
        )
        ended = (Succeeded, FailedFinal, CanceledOutcome)
        self._ring_released(
            conn,
            {
                f.job.run_id
                for f in written
                if f.job.run_id is not None and f.job.has_children and isinstance(f.outcome, ended)
            },
        )

    def _ring_released(self, conn: sa.Connection, runs: set[int]) -> None:
        """Jobs of runs these outcomes released (in the same statement, by the database)
        get their doorbells now; after a failure here the scheduler rings them."""
        if not runs:
            return
        try:
            rung = ledger_runs.ring_unrung(conn, sorted(runs))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not ring the released jobs of %d run(s); the scheduler will: %s", len(runs), exc)
            return
        ring(self.doorbell, rung)
        self.stats["released_rung"] += len(rung)

    def _record_outcomes(self, conn: sa.Connection, finished: list[tuple[ActiveJob, Outcome]]) -> None:
        """What sources' jobs taught us goes to their circuits and buckets, in finishing order."""
        learned: list[tuple[ActiveJob, str, float | None]] = []
        for job, outcome in finished:
            if isinstance(outcome, Succeeded):
                if job.learns:  # else the circuit is settled and the bucket at its cap
                    learned.append((job, "ok", None))
            elif isinstance(outcome, Throttled):
                learned.append((job, "throttled", outcome.retry_after))
            elif isinstance(outcome, FailedRetryable | FailedFinal) and outcome.error_class in CIRCUIT_FAILURES:
                learned.append((job, "fail", None))
        if not learned:
            return
        try:
            ledger.record_outcomes(
                conn,
                [j.source_id for j, _, _ in learned if j.source_id is not None],
                [k for _, k, _ in learned],
                [ra for _, _, ra in learned],
                [j.started_at for j, _, _ in learned],
                actor=self.owner,
            )
        except sa.exc.SQLAlchemyError as exc:
            # The outcomes themselves are committed; only the lesson is lost (the circuit
            # and bucket learn from the next ones), so the batch is not written again.
            # A dead connection fails the next statement, and the lane reconnects then.
            log.warning("could not feed %d outcome(s) to circuits and buckets: %s", len(learned), exc)
            return
        self.stats["outcomes_learned"] += len(learned)
