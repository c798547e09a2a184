"""`orch scheduler`: the loop that keeps the ledger moving without waiting on the broker.

Each pass (leader only): reap expired leases, release due retrying/throttled jobs, and
re-ring queues whose doorbells were lost; and now and then fire schedules, prune what
retention allows and roll finished jobs up for the console (core/ledger/rollups.py). Every
step is one bounded, indexed statement in its own transaction; a step that hit its bound runs
again at once.

Leadership is a session-level Postgres advisory lock held on a dedicated connection: a
second scheduler waits until the leader's session ends (exit, crash, network loss).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from core.control import Doorbell, backfills, firing, incidents, retention
from core.control.common import WAKE_UPS, wake_ups
from core.domain import cron, errors, slo
from core.domain.auth import ALL_SCOPES, Principal
from core.domain.incidents import Condition
from core.ledger import flow, rollups
from core.ledger import jobs as ledger
from core.ledger import runs as ledger_runs
from core.ledger import schedules as ledger_schedules
from core.ledger import windows as ledger_windows
from core.settings import Settings
from worker.runtime import exporter, notifier, relay
from worker.runtime.broker import OrchRedisBroker

log = logging.getLogger(__name__)

#: Whether the statistics of jobs describe a table far smaller than it is now: more than
#: twice the pages they were taken at, and 64 pages (512 kB) more.
STATS_BEHIND_SQL = (
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int > 2 * c.relpages + 64"
    " FROM pg_class AS c WHERE c.oid = 'jobs'::regclass"
)

LEADER_LOCK_KEY = 7424852
READY_COUNT_CAP = 10_000
#: A queued job rung this recently may still have its doorbell on the way to Redis.
RING_GRACE_S = 2.0
#: Seconds between passes while a backfill runs windows (a freed slot waits at most this).
BACKFILL_PASS_S = 0.2
#: Seconds between rollups of finished jobs (Scheduler.roll_up).
ROLLUP_EVERY_S = 5.0
#: How often the fast-burn incident condition is read (it reads finished jobs; the other
#: conditions are read every pass).
FAST_BURN_EVERY_S = 30.0


@dataclass
class PassResult:
    reaped_leased: int = 0
    reaped_running: int = 0
    released: int = 0
    rerung: int = 0
    #: Released jobs of runs whose finisher stopped between commit and doorbell.
    rerung_released: int = 0
    #: Schedule ticks that fired (buffered ones included), backfill windows started.
    fired: int = 0
    backfill_started: int = 0
    full: bool = False

    def total(self) -> int:
        return (
            self.reaped_leased
            + self.reaped_running
            + self.released
            + self.rerung
            + self.rerung_released
            + self.fired
            + self.backfill_started
        )


class Scheduler:
    def __init__(self, engine: sa.Engine, broker: OrchRedisBroker, doorbell: Doorbell, settings: Settings) -> None:
        self.engine = engine
        self.broker = broker
        self.doorbell = doorbell
        self.settings = settings
        self.actor = f"scheduler:{socket.gethostname()}:{os.getpid()}"
        self.is_leader = False
        self._last_sample = -1e9
        self._last_maintenance = -1e9
        self._last_grown_check = -1e9
        self._last_tick_prune = -1e9
        self._last_watermark_sample = -1e9
        self._last_retention = -1e9
        self._last_rollup = -1e9
        self._last_burn = -1e9
        self._burning: list[Condition] = []
        self._backfills_active = False
        #: Schedules fire and backfills start as the scheduler: every scope, every tenant.
        self.principal = Principal(subject=self.actor, scopes=ALL_SCOPES, tenants=None)
        self._warned_autovacuum = False
        # Runs that end from now on go into the run-duration histogram (leader only).
        self._runs_seen: tuple[dt.datetime, int] = (dt.datetime.now(dt.UTC), 0)

    # -- one pass ------------------------------------------------------------------------

    def _ring(self, rows: list[tuple[int, str]]) -> None:
        if not rows:
            return
        rows = wake_ups(rows)
        try:
            self.doorbell.ring(rows)
        except Exception as exc:  # the jobs stay queued; the next pass's deficit check re-rings
            log.warning("could not ring %d doorbell(s): %s", len(rows), exc)

    def reap(self) -> tuple[int, int]:
        limit = self.settings.scheduler_batch
        with self.engine.begin() as conn:
            leased = ledger.reap_leased_jobs(conn, limit=limit, actor=self.actor)
            running = ledger.reap_running_jobs(conn, limit=limit, actor=self.actor)
        self._ring([(r["id"], r["queue"]) for r in leased])
        if running:
            log.info("reaped %d job(s) whose worker stopped heartbeating", len(running))
            exporter.metrics().leases_expired(len(running))
        return len(leased), len(running)

    def release_due(self) -> int:
        with self.engine.begin() as conn:
            rows = ledger.release_due_jobs(conn, limit=self.settings.scheduler_batch, actor=self.actor)
        self._ring([(r["id"], r["queue"]) for r in rows])
        return len(rows)

    def reconcile_doorbells(self) -> int:
        """Ring as many wake-ups as a queue is missing: while ready jobs have waited past the
        grace, keep min(ready, WAKE_UPS) doorbells outstanding (in Redis, or held by threads
        that are running the queue's jobs one after another). Claims take the best ready
        job, so the count is what matters, not which ids the doorbells name."""
        total = 0
        with self.engine.connect() as conn:
            queues = ledger.queues(conn)
        for queue in queues:
            with self.engine.begin() as conn:
                ready = ledger.count_ready(conn, queue=queue, cap=READY_COUNT_CAP)
                if ready == 0:
                    continue
                wanted = min(ready, WAKE_UPS)
                outstanding = self.broker.outstanding(queue)
                if wanted <= outstanding:
                    continue
                stale = ledger.count_stale_ready(conn, queue=queue, grace_s=RING_GRACE_S, cap=READY_COUNT_CAP)
                deficit = min(stale, wanted - outstanding, self.settings.scheduler_batch)
                if deficit <= 0:
                    continue
                ids = ledger.mark_rung(conn, queue=queue, limit=deficit)
            self._ring([(i, queue) for i in ids])
            log.info("re-rang %d doorbell(s) on %s (%d ready, %d outstanding)", len(ids), queue, ready, outstanding)
            total += len(ids)
        return total

    def ring_released(self, *, reaped: bool = False) -> int:
        """Jobs of runs released by an outcome whose writer stopped before ringing them
        (they stay unrung past the grace): the one repair DAG release needs. After this pass
        reaped jobs (which may have released children themselves), at once."""
        grace = 0.0 if reaped else RING_GRACE_S
        with self.engine.begin() as conn:
            rows = ledger_runs.ring_stale_unrung(conn, grace_s=grace, limit=self.settings.scheduler_batch)
        if rows:
            log.info("rang %d released job(s) of runs that nobody rang", len(rows))
        self._ring(rows)
        return len(rows)

    def observe_runs(self) -> None:
        """Runs that ended since the last pass: their durations, by state."""
        after, after_id = self._runs_seen
        with self.engine.connect() as conn:
            rows = ledger_runs.run_finished_since(conn, after, after_id, self.settings.scheduler_batch)
        m = exporter.metrics()
        for r in rows:
            m.run_ended(r["state"], float(r["duration_s"]))
        if rows:
            self._runs_seen = (rows[-1]["finished_at"], int(rows[-1]["id"]))

    def move_blackouts(self) -> int:
        """Recurring blackouts whose window ended get their next window."""
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            rows = flow.due_cron_blackouts(conn, limit=self.settings.scheduler_batch)
            for row in rows:
                try:
                    start, end = cron.window_at(cron.parse(row["cron"]), dt.timedelta(seconds=row["duration_s"]), now)
                except errors.InvalidInput as exc:  # stored expressions were checked; be safe anyway
                    log.warning("blackout %d: %s", row["id"], exc)
                    continue
                flow.move_blackout_window(conn, row["id"], start, end)
        return len(rows)

    def fire_schedules(self) -> tuple[int, bool]:
        """Buffered ticks whose previous firing ended, then every due tick, in batches until
        none is due (core.control.firing). Returns the ticks fired and whether a batch was full."""
        batch, max_jobs = self.settings.scheduler_batch, self.settings.run_max_jobs
        drained = firing.drain_buffers(self.engine, self.principal, batch=batch, max_jobs=max_jobs)
        firing.ring_and_cancel(self.engine, self.principal, self.doorbell, drained)
        due = firing.fire_due(self.engine, self.principal, batch=batch, max_jobs=max_jobs)
        firing.ring_and_cancel(self.engine, self.principal, self.doorbell, due)
        if due.recorded:
            log.info("schedules: %d tick(s) recorded, %d fired", due.recorded, due.fired)
        return drained.fired + due.fired, due.full

    def pump_backfills(self) -> int:
        """Backfills start windows into free slots, pause under live load, end."""
        out = backfills.pump_backfills(
            self.engine, self.principal, batch=self.settings.scheduler_batch, max_jobs=self.settings.run_max_jobs
        )
        self._ring(out.to_ring)
        self._backfills_active = out.active > 0
        return out.started

    def keep_schedules_tidy(self) -> None:
        """Every 5 minutes, prune tick rows past the retention (each schedule keeps its newest
        100); every minute, sample watermark lag for the console."""
        now = time.monotonic()
        if now - self._last_watermark_sample >= 60.0:
            self._last_watermark_sample = now
            with self.engine.begin() as conn:
                ledger_windows.sample_watermarks(conn)
        if now - self._last_tick_prune >= 300.0:
            self._last_tick_prune = now
            with self.engine.begin() as conn:
                pruned = ledger_schedules.prune_ticks(
                    conn, days=self.settings.retention_days, limit=self.settings.scheduler_batch
                )
            if pruned:
                log.info("pruned %d schedule tick(s) older than %d days", pruned, self.settings.retention_days)

    def prune_retention(self) -> None:
        """Once a minute, remove finished work past its retention (core.control.retention),
        for at most two seconds a pass so the other steps keep their pace."""
        now = time.monotonic()
        if now - self._last_retention < 60.0:
            return
        self._last_retention = now
        s = self.settings
        result = retention.prune(
            self.engine,
            default_days=s.retention_days,
            outbox_days=s.outbox_retention_days,
            batch=s.scheduler_batch,
            budget_s=2.0,
        )
        if sum(result.removed.values()):
            log.info("retention: removed %s", ", ".join(f"{n} {k}" for k, n in sorted(result.removed.items()) if n))
        if not result.complete:
            self._last_retention = -1e9  # more to do: again next pass

    def roll_up(self) -> None:
        """Every 5 seconds, roll the jobs finished since the last time up into the console's
        counters (core/ledger/rollups.py), for at most a second a pass; the console's reads
        add what finished since, so they never wait for this. Two index probes when nothing
        finished; two schedulers serialise on the rollup mark."""
        now = time.monotonic()
        if now - self._last_rollup < ROLLUP_EVERY_S:
            return
        self._last_rollup = now
        result = rollups.roll_up(self.engine, batch=self.settings.scheduler_batch * 10, budget_s=1.0)
        if not result.complete:
            self._last_rollup = -1e9  # more to do: again next pass

    def evaluate_incidents(self) -> None:
        """Every pass: open, bump and resolve incidents from what is wrong now
        (core/control/incidents.py); two index probes and two small reads when nothing is."""
        now = time.monotonic()
        if now - self._last_burn >= FAST_BURN_EVERY_S:
            self._last_burn = now
            self._burning = incidents.burn_conditions(self.engine, slo.Slo(target=self.settings.slo_target))
        result = incidents.evaluate(self.engine, self.settings.incident_policy(), self._burning)
        if result.opened or result.resolved:
            log.info("incidents: opened %s, resolved %s", result.opened or "-", result.resolved or "-")

    def release_backpressure(self) -> int:
        """Jobs deferred by backpressure may go as far as their tenant's backlog has room."""
        with self.engine.begin() as conn:
            return flow.release_backpressure(conn, limit=self.settings.scheduler_batch)

    def sample_depth(self) -> None:
        """Queue depth per tenant, queue and state for the console's chart, every 10 s."""
        now = time.monotonic()
        if now - self._last_sample < 10.0:
            return
        self._last_sample = now
        with self.engine.begin() as conn:
            ledger.sample_queue_depth(conn)
            flow.prune_quota_starts(conn)
            flow.prune_reservations(conn)

    def check_maintenance(self) -> None:
        """With autovacuum off, the jobs table's statistics go stale and its dead rows pile
        up. Say so once, and keep the statistics fresh with an ANALYZE every 5 minutes (dead
        rows still need VACUUM, which is the database owner's call). Whatever autovacuum
        does, statistics that describe jobs as far smaller than it is (an ANALYZE of the
        empty table, then a burst of submits) are refreshed at once: plans made from them
        take a full index scan for a lookup by key (orch_job_history_events)."""
        now = time.monotonic()
        if now - self._last_grown_check >= 5.0:
            self._last_grown_check = now
            with self.engine.connect() as conn:
                if conn.execute(sa.text(STATS_BEHIND_SQL)).scalar():
                    log.info("refreshing the statistics of jobs: the table has outgrown them")
                    conn.execute(sa.text("ANALYZE jobs"))
                    conn.commit()
        if now - self._last_maintenance < 300.0:
            return
        self._last_maintenance = now
        with self.engine.connect() as conn:
            autovacuum = conn.execute(sa.text("SHOW autovacuum")).scalar()
            if autovacuum == "on":
                return
            if not self._warned_autovacuum:
                log.warning(
                    "autovacuum is off in this PostgreSQL: the jobs table will bloat; turn it on or run "
                    "VACUUM (ANALYZE) jobs regularly (the scheduler only refreshes statistics)"
                )
                self._warned_autovacuum = True
            conn.execute(sa.text("ANALYZE jobs"))
            conn.commit()

    def run_pass(self) -> PassResult:
        r = PassResult()
        self.sample_depth()
        self.check_maintenance()
        r.reaped_leased, r.reaped_running = self.reap()
        self.move_blackouts()
        self.release_backpressure()
        r.released = self.release_due()
        r.rerung_released = self.ring_released(reaped=r.reaped_running > 0)
        r.fired, fire_full = self.fire_schedules()
        r.backfill_started = self.pump_backfills()
        r.rerung = self.reconcile_doorbells()
        self.observe_runs()
        self.keep_schedules_tidy()
        self.prune_retention()
        self.roll_up()
        self.evaluate_incidents()
        batch = self.settings.scheduler_batch
        r.full = fire_full or max(r.reaped_leased, r.reaped_running, r.released, r.rerung, r.rerung_released) >= batch
        return r

    def _sleep_for(self) -> float:
        interval = self.settings.scheduler_interval_s
        if self._backfills_active:
            interval = min(interval, BACKFILL_PASS_S)
        with self.engine.connect() as conn:
            due = ledger.seconds_to_next_due(conn)
            fire = ledger_schedules.seconds_to_next_fire(conn)
        soonest = min((d for d in (due, fire) if d is not None), default=None)
        if soonest is None:
            return interval
        return max(0.01, min(interval, soonest))

    # -- leadership and the loop ---------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Wait for leadership, then run passes until `stop` is set."""
        waiting_logged = False
        while not stop.is_set():
            try:
                with self.engine.connect() as lock_conn:
                    got = lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY}).scalar()
                    lock_conn.commit()
                    if not got:
                        if not waiting_logged:
                            log.info("another scheduler is the leader; standing by")
                            waiting_logged = True
                        stop.wait(2.0)
                        continue
                    self.is_leader = True
                    waiting_logged = False
                    log.info("%s is the scheduler leader", self.actor)
                    try:
                        self._lead(lock_conn, stop)
                    finally:
                        self.is_leader = False
                        try:
                            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_KEY})
                            lock_conn.commit()
                        except sa.exc.SQLAlchemyError:
                            pass
            except sa.exc.OperationalError as exc:
                log.warning("scheduler lost the ledger (%s); retrying in 2s", str(exc.orig).strip()[:200])
                stop.wait(2.0)

    def _lead(self, lock_conn: sa.Connection, stop: threading.Event) -> None:
        # The outbox relay numbers events while this scheduler leads (worker/runtime/relay.py).
        # ORCH_EVENT_RELAY=false leaves events unnumbered until a relay runs (for measuring).
        thread, relay_stop = relay.Relay(self.engine).start() if self.settings.event_relay else (None, None)
        # So does the webhook notifier, when ORCH_WEBHOOK_URL is set (worker/runtime/notifier.py):
        # a thread of its own, so a failing endpoint never holds up the relay or the passes.
        hook = notifier.from_settings(self.engine, self.settings)
        hook_thread, hook_stop = hook.start() if hook is not None else (None, None)
        try:
            self._passes(lock_conn, stop)
        finally:
            if relay_stop is not None:
                relay_stop.set()
            if hook_stop is not None:
                hook_stop.set()
            if thread is not None:
                thread.join(timeout=5)
            if hook_thread is not None:
                hook_thread.join(timeout=self.settings.webhook_timeout_s + 1)

    def _passes(self, lock_conn: sa.Connection, stop: threading.Event) -> None:
        while not stop.is_set():
            # Our session holds the lock; if it died, another scheduler may lead already.
            # Checked before every pass (one round trip), so two leaders overlap at most
            # one pass; every state change is a compare-and-set, so an overlap is harmless.
            lock_conn.execute(sa.text("SELECT 1"))
            lock_conn.commit()
            try:
                result = self.run_pass()
            except sa.exc.OperationalError:
                raise
            except Exception:
                log.exception("scheduler pass failed")
                stop.wait(1.0)
                continue
            if result.full:
                continue
            stop.wait(self._sleep_for())
