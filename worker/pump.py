"""The worker process's single path to the ledger: one thread that batches every claim,
completion, heartbeat, progress report and log line of the process into a few statements
per cycle ("group commit"). Under load a cycle carries many jobs; at idle it carries one
and adds no wait, so batching costs no latency.

Worker threads block only on claims (they must know they own a job) and on explicit
heartbeats; outcomes, progress and logs are handed over and written in the background.
A job stays in `active` (and keeps being heartbeated) until its outcome is committed, so a
process killed before that loses nothing: the lease runs out and the scheduler recovers it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.ledger import jobs as ledger
from worker.sdk import ActiveJob

log = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class Succeeded:
    pass


@dataclass(frozen=True, slots=True)
class FailedRetryable:
    delay_s: float
    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class FailedFinal:
    error_class: str
    message: str
    why: str


@dataclass(frozen=True, slots=True)
class CanceledOutcome:
    pass


Outcome = Succeeded | FailedRetryable | FailedFinal | CanceledOutcome


@dataclass
class _Claim:
    queue: str
    future: Future[ActiveJob | None]


class Pump:
    def __init__(
        self,
        engine: sa.Engine,
        *,
        owner: str,
        job_types: Callable[[], Sequence[str]],
        lease_policy: Callable[[str], tuple[float, float]],
    ) -> None:
        """`job_types` lists the types this process can run (claims take only those);
        `lease_policy(job_type)` gives (lease_s, heartbeat_s)."""
        self.engine = engine
        self.owner = owner
        self._job_types = job_types
        self._lease_policy = lease_policy
        self._cond = threading.Condition()
        self._claims: list[_Claim] = []
        self._finishes: list[tuple[ActiveJob, Outcome]] = []
        self._progress: dict[int, tuple[ActiveJob, float, str | None]] = {}
        self._logs: list[tuple[ActiveJob, dt.datetime, str, str]] = []
        self._renew_now: list[tuple[ActiveJob, Future[None]]] = []
        self._active: dict[int, ActiveJob] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failures = 0  # consecutive failed cycles, for back-off
        self.stats: dict[str, int] = defaultdict(int)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="orch-pump", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop. Leases still held are released to the reaper."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        leftover = list(self._active.values())
        if leftover:
            try:
                with self.engine.begin() as conn:
                    ledger.expire_leases(conn, [j.id for j in leftover], [j.lease_id for j in leftover])
                log.info("released %d lease(s) still held at shutdown", len(leftover))
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not release %d lease(s) at shutdown; they expire on their own: %s", len(leftover), exc)

    def active_count(self) -> int:
        with self._cond:
            return len(self._active)

    # -- called from worker threads ----------------------------------------------------

    def claim(self, queue: str, timeout: float = 30.0) -> ActiveJob | None:
        """Claim and start the next ready job of `queue` (queued -> leased -> running).
        None when nothing is ready. Raises Unavailable when the ledger cannot be reached."""
        fut: Future[ActiveJob | None] = Future()
        with self._cond:
            if self._stopping:
                return None
            self._claims.append(_Claim(queue, fut))
            self._cond.notify()
        return fut.result(timeout)

    def finish(self, job: ActiveJob, outcome: Outcome) -> None:
        with self._cond:
            self._finishes.append((job, outcome))
            self._cond.notify()

    def renew_now(self, job: ActiveJob) -> None:
        if job.lease_lost:
            raise errors.LeaseLost(f"job {job.id}: lease lost")
        fut: Future[None] = Future()
        with self._cond:
            self._renew_now.append((job, fut))
            self._cond.notify()
        fut.result(60)

    def progress(self, job: ActiveJob, fraction: float, message: str | None) -> None:
        with self._cond:
            self._progress[job.id] = (job, fraction, message)
            self._cond.notify()

    def log(self, job: ActiveJob, level: str, message: str) -> None:
        with self._cond:
            self._logs.append((job, dt.datetime.now(dt.UTC), level, message[:10_000]))
            self._cond.notify()

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

    # -- the pump thread ---------------------------------------------------------------

    def _due_renewals(self, now: float) -> list[ActiveJob]:
        return [j for j in self._active.values() if j.next_renew <= now]

    def _next_wake(self, now: float) -> float:
        if not self._active:
            return 1.0
        return max(0.0, min(j.next_renew for j in self._active.values()) - now)

    def _pending(self, now: float) -> bool:
        return bool(
            self._claims or self._finishes or self._progress or self._logs or self._renew_now
        ) or bool(self._due_renewals(now))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._pending(time.monotonic()):
                    self._cond.wait(self._next_wake(time.monotonic()))
                if self._stopping:
                    for c in self._claims:
                        c.future.set_result(None)
                    self._claims = []
                    if not (self._finishes or self._progress or self._logs or self._renew_now):
                        return
                claims, self._claims = self._claims[:MAX_BATCH], self._claims[MAX_BATCH:]
                finishes, self._finishes = self._finishes[:MAX_BATCH], self._finishes[MAX_BATCH:]
                progress, self._progress = self._progress, {}
                logs, self._logs = self._logs[:MAX_BATCH], self._logs[MAX_BATCH:]
                renew_now, self._renew_now = self._renew_now, []
                renewals = self._due_renewals(time.monotonic())
            try:
                self._write(finishes, list(progress.values()), logs, renewals, renew_now)
                self._claim(claims)
                self.failures = 0
            except sa.exc.OperationalError as exc:
                # The ledger is unreachable: keep the work, back off, try again. Claims fail
                # fast so their doorbells are acknowledged (the scheduler re-rings).
                self.failures += 1
                delay = min(2.0, 0.05 * 2 ** min(self.failures, 6))
                log.warning("ledger unavailable (%s); retrying in %.2fs", str(exc.orig).strip()[:200], delay)
                for c in claims:
                    if not c.future.done():
                        c.future.set_exception(errors.Unavailable(str(exc.orig)))
                with self._cond:
                    self._finishes[:0] = finishes
                    for job, frac, msg in progress.values():
                        self._progress.setdefault(job.id, (job, frac, msg))
                    self._logs[:0] = logs
                    self._renew_now[:0] = [r for r in renew_now if not r[1].done()]
                time.sleep(delay)
            except Exception as exc:  # a bug, not an outage: do not spin on it
                log.exception("pump cycle failed; dropping its writes (their leases will expire)")
                for c in claims:
                    if not c.future.done():
                        c.future.set_exception(exc)
                for _, fut in renew_now:
                    if not fut.done():
                        fut.set_exception(exc)
                with self._cond:
                    for job, _ in finishes:
                        self._active.pop(job.id, None)
                time.sleep(0.5)

    def _write(
        self,
        finishes: list[tuple[ActiveJob, Outcome]],
        progress: list[tuple[ActiveJob, float, str | None]],
        logs: list[tuple[ActiveJob, dt.datetime, str, str]],
        renewals: list[ActiveJob],
        renew_now: list[tuple[ActiveJob, Future[None]]],
    ) -> None:
        if not (finishes or progress or logs or renewals or renew_now):
            return
        to_renew = {j.id: j for j in renewals}
        for job, _ in renew_now:
            to_renew[job.id] = job
        finishing = {job.id for job, _ in finishes}
        for jid in finishing:
            to_renew.pop(jid, None)
        with self.engine.begin() as conn:
            if logs:
                ledger.insert_logs(
                    conn,
                    [j.id for j, *_ in logs],
                    [j.attempt for j, *_ in logs],
                    [at for _, at, _, _ in logs],
                    [lvl for _, _, lvl, _ in logs],
                    [msg for *_, msg in logs],
                )
            if progress:
                ledger.set_progress(
                    conn, [j.id for j, _, _ in progress], [j.lease_id for j, _, _ in progress],
                    [f for _, f, _ in progress], [m for _, _, m in progress],
                )
            held: dict[int, bool] = {}
            if to_renew:
                jobs = sorted(to_renew.values(), key=lambda j: j.id)
                held = ledger.renew_leases(conn, [j.id for j in jobs], [j.lease_id for j in jobs], [j.lease_s for j in jobs])
            done = self._write_finishes(conn, finishes)
        now = time.monotonic()
        with self._cond:
            for jid, job in to_renew.items():
                if jid in held:
                    job.cancel_requested = job.cancel_requested or held[jid]
                    job.next_renew = now + job.heartbeat_s
                else:
                    job.lease_lost = True
                    self._active.pop(jid, None)
                    log.warning("job %d: lease lost (expired or taken over); the handler should stop", jid)
            for job, _ in finishes:
                self._active.pop(job.id, None)
                if job.id not in done:
                    log.warning("job %d: lease lost before its outcome was written; the outcome is discarded", job.id)
        for job, fut in renew_now:
            if job.id in held:
                fut.set_result(None)
            else:
                fut.set_exception(errors.LeaseLost(f"job {job.id}: lease lost"))
        self.stats["finished"] += len(done)

    def _write_finishes(self, conn: sa.Connection, finishes: list[tuple[ActiveJob, Outcome]]) -> set[int]:
        groups: dict[type, list[tuple[ActiveJob, Any]]] = defaultdict(list)
        for job, outcome in sorted(finishes, key=lambda f: f[0].id):
            groups[type(outcome)].append((job, outcome))
        done: set[int] = set()
        actor = self.owner
        if ok := groups.get(Succeeded):
            rows = ledger.succeed_jobs(conn, [j.id for j, _ in ok], [j.lease_id for j, _ in ok], actor=actor)
            done.update(r["id"] for r in rows)
        if retry := groups.get(FailedRetryable):
            rows = ledger.fail_retryable_jobs(
                conn,
                [j.id for j, _ in retry],
                [j.lease_id for j, _ in retry],
                [o.delay_s for _, o in retry],
                [o.error_class for _, o in retry],
                [o.message for _, o in retry],
                actor=actor,
            )
            done.update(r["id"] for r in rows)
        if final := groups.get(FailedFinal):
            rows = ledger.fail_final_jobs(
                conn,
                [j.id for j, _ in final],
                [j.lease_id for j, _ in final],
                [o.error_class for _, o in final],
                [o.message for _, o in final],
                [o.why for _, o in final],
                actor=actor,
            )
            done.update(r["id"] for r in rows)
        if canceled := groups.get(CanceledOutcome):
            rows = ledger.cancel_running_jobs(conn, [j.id for j, _ in canceled], [j.lease_id for j, _ in canceled], actor=actor)
            done.update(r["id"] for r in rows)
        return done

    def _claim(self, claims: list[_Claim]) -> None:
        if not claims:
            return
        by_queue: dict[str, list[_Claim]] = defaultdict(list)
        for c in claims:
            by_queue[c.queue].append(c)
        types = list(self._job_types())
        results: dict[str, list[ActiveJob]] = {}
        with self.engine.begin() as conn:
            for queue, waiting in sorted(by_queue.items()):
                rows = ledger.claim_jobs(conn, queue=queue, limit=len(waiting), owner=self.owner, job_types=types)
                if not rows:
                    results[queue] = []
                    continue
                acked = ledger.ack_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor=self.owner)
                attempts = {r["id"]: (r["attempt"], r["cancel_requested"]) for r in acked}
                results[queue] = [self._active_job(r, *attempts[r["id"]]) for r in rows if r["id"] in attempts]
        now = time.monotonic()
        with self._cond:
            for queue, got in results.items():
                for job in got:
                    job.next_renew = now + job.heartbeat_s
                    self._active[job.id] = job
        for queue, waiting in by_queue.items():
            got = results.get(queue, [])
            for i, c in enumerate(waiting):
                c.future.set_result(got[i] if i < len(got) else None)
        self.stats["claimed"] += sum(len(v) for v in results.values())

    def _active_job(self, row: Mapping[str, Any], attempt: int, cancel_requested: bool) -> ActiveJob:
        lease_s, heartbeat_s = self._lease_policy(row["job_type"])
        return ActiveJob(
            id=row["id"],
            lease_id=row["lease_id"],
            tenant=row["tenant"],
            job_type=row["job_type"],
            queue=row["queue"],
            payload=row["payload"],
            attempt=attempt,
            max_attempts=row["max_attempts"],
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            correlation_id=row["correlation_id"],
            cancel_requested=cancel_requested,
        )
