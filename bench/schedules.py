"""Schedules and backfills: firing delay, the idle pass, planning a year, live dispatch under a backfill.

    python bench/schedules.py [--quick] [--schedules 1000] [--fire-ticks 2] [--every SECONDS]
                              [--idle-schedules 10000] [--passes 200] [--idle-rounds 3]
                              [--year-windows 8760] [--done 4000] [--plan-rounds 3]
                              [--backfill-windows 5000] [--max-active 4] [--rate 20] [--duration 30]
                              [--live-rounds 3] [--segments 3] [--processes 2] [--threads 8]
                              [--only idle,plan,fire,live] [--profile] [--timeout 600]

In a fresh scratch database (orch_bench_sched_*, dropped on exit), four pieces, in this order:

1. idle: before any pool or scheduler starts, an in-process worker.runtime.scheduler.Scheduler
   (built as `orch scheduler` builds it) runs --passes passes back to back with 0 schedules
   and with --idle-schedules schedules none of which is due (cron "0 0 1 1 *": one made by
   add_schedule, the rest cloned from it in SQL), alternating over --idle-rounds rounds.
   idle_pass_ms is the median run_pass() with the schedules (median over rounds of each
   round's median). Also: its fire_schedules + pump_backfills steps (timed inside the same
   passes), every step, the loop's _sleep_for, the baseline with 0 schedules and the ratios.
2. plan: a one-year backfill (--year-windows 1 h windows) of a stream that already has --done
   succeeded windows at random hours of that year (seeded in SQL, claim = orch_window_claim,
   done_until moved by orch_stream_advance). create_backfill is timed with dry_run=True and
   for real (then canceled, so nothing runs it); a fresh stream each round. plan_year_s is
   the median real create.
3. fire: with an `orch scheduler` process and throughput.py's pool (2 x 8 on the bench
   queue), --schedules schedules (add_schedule, cron "* * * * *", each its own payload, so
   its own stream) fire through --fire-ticks minute boundaries (the first whole ones after
   the last add). The delay of a firing is jobs.created_at - schedule_ticks.scheduled_for
   (database clock); fire_delay_p99_ms is its p99 over every fired tick. created_at is the
   firing transaction's now() (its start), so also: when the tick rows became visible to a
   reader polling every 10 ms (the commit), and tick -> handler start. --every N (or
   --quick: 15 s) uses interval schedules instead of the per-minute cron to keep the run
   short; the output says so ("fire_trigger"). The schedules are removed afterwards.
4. live: with the same pool and scheduler, live bench.noop jobs submitted one by one at
   --rate per second; submit-to-start = jobs.started_at -
   jobs.created_at. Each round gives each state --duration seconds in --segments segments,
   alternating idle/backfill/backfill/idle/... (the first state flips every round): "idle" =
   the --backfill-windows backfill of bench.noop (max_active --max-active, same tenant) is
   operator-paused with no window running; "backfill" = resumed, windows running. A round's
   p99 of a state pools its segments. An unmeasured 5 s warm-up stream comes first.
   live_dispatch_p99_ratio = backfill p99 / idle p99, the median of the per-round ratios.
   The backfill is canceled afterwards.

Progress goes to stderr; the figures and, as the last line, one JSON object to stdout. Uses
ORCH_DATABASE_URL (its server; a scratch database is created and dropped) and ORCH_REDIS_URL
(a fresh namespace), or the embedded servers.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import dataclasses
import datetime as dt
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import dag, throughput  # noqa: E402 - needs ROOT on sys.path when run as a script

JOB_TYPE = "bench.noop"
QUEUE = "bench"
FIRE_CRON = "* * * * *"
#: Next fire on 1 January: never due during a run (unless run in the last minute of a year).
IDLE_CRON = "0 0 1 1 *"
PIECES = ("idle", "plan", "fire", "live")
HOUR = dt.timedelta(hours=1)

TARGETS = {
    "fire_delay_p99_ms": ("<=", 1000.0),
    "idle_pass_ms": ("<=", 20.0),
    "plan_year_s": ("<=", 2.0),
    "live_dispatch_p99_ratio": ("<=", 2.0),
}

percentile = dag.percentile


def say(msg: str) -> None:
    """Progress: stderr, so stdout carries only the figures and the JSON line."""
    print(msg, file=sys.stderr, flush=True)


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def past_hour() -> dt.datetime:
    """The start of the last whole hour: a backfill's range must have ended."""
    return utcnow().replace(minute=0, second=0, microsecond=0) - HOUR


@dataclasses.dataclass
class Bench:
    engine: Any
    principal: Any
    bell: Any
    broker: Any
    settings: Any
    db_url: str
    lg: dag.Ledger

    def vacuum(self, *tables: str) -> None:
        import sqlalchemy as sa

        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM (ANALYZE) {', '.join(tables)}"))

    def scalar(self, sql: str, **params: Any) -> Any:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()


LEDGER_TABLES = ("jobs", "job_history", "schedules", "schedule_ticks", "windows", "streams", "backfills")


# -- the idle pass ---------------------------------------------------------------------


CLONE_SQL = """
INSERT INTO schedules (tenant_id, name, cron, every_s, timezone, target_kind, target, stream_id, overlap, catchup,
                       catchup_window_s, max_catchup, start_at, end_at, next_fire_at, created_by)
SELECT s.tenant_id, 'idle-' || lpad(g::text, 6, '0'), s.cron, s.every_s, s.timezone, s.target_kind, s.target,
       s.stream_id, s.overlap, s.catchup, s.catchup_window_s, s.max_catchup, s.start_at, s.end_at, s.next_fire_at,
       s.created_by
FROM schedules AS s, generate_series(1, :n) AS g
WHERE s.id = :id"""


def in_process_scheduler(b: Bench) -> Any:
    """A Scheduler as `orch scheduler` builds it (worker.cli.processes.scheduler_for)."""
    from core.ledger import db
    from worker.runtime import broker as broker_mod
    from worker.runtime import scheduler

    engine = db.create_engine(b.db_url, pool_size=3, application_name="orch-scheduler", ordered_scans=True)
    return scheduler.Scheduler(engine, b.broker, broker_mod.RedisDoorbell(b.broker), b.settings)


#: run_pass()'s steps, in its order (sample_depth, check_maintenance and keep_schedules_tidy do
#: their work every 10 s, 5 min, 1 min: a pass mostly skips them).
STEPS = (
    "sample_depth",
    "check_maintenance",
    "reap",
    "move_blackouts",
    "release_backpressure",
    "release_due",
    "ring_released",
    "fire_schedules",
    "pump_backfills",
    "reconcile_doorbells",
    "observe_runs",
    "keep_schedules_tidy",
)


def timed_steps(s: Any) -> dict[str, float]:
    """Wrap the scheduler's steps (on the instance) so that a real run_pass() records the
    time of each (ms) in the dict returned; clear it before each pass."""
    took: dict[str, float] = {}
    for name in STEPS:
        fn = getattr(s, name)

        def wrapped(*args: Any, _fn: Callable[..., Any] = fn, _name: str = name, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kw)
            finally:
                took[_name] = took.get(_name, 0.0) + (time.perf_counter() - t0) * 1000

        setattr(s, name, wrapped)
    return took


def time_passes(s: Any, took: dict[str, float], n: int) -> dict[str, Any]:
    """n passes back to back, each timed whole and step by step (fire_pump = its
    fire_schedules + pump_backfills), and the loop's sleep computation after each."""
    full: list[float] = []
    fire_pump: list[float] = []
    sleep_for: list[float] = []
    steps: dict[str, list[float]] = {k: [] for k in STEPS}
    for _ in range(10):  # warm-up: prepared statements, the rate-limited steps' first run
        s.run_pass()
    for _ in range(n):
        took.clear()
        t0 = time.perf_counter()
        s.run_pass()
        t1 = time.perf_counter()
        s._sleep_for()
        sleep_for.append((time.perf_counter() - t1) * 1000)
        full.append((t1 - t0) * 1000)
        fire_pump.append(took.get("fire_schedules", 0.0) + took.get("pump_backfills", 0.0))
        for k in STEPS:
            steps[k].append(took.get(k, 0.0))
    return {
        "pass_p50": med(full),
        "pass_p95": percentile(full, 0.95),
        "fire_pump_p50": med(fire_pump),
        "fire_pump_p95": percentile(fire_pump, 0.95),
        "sleep_for_p50": med(sleep_for),
        "steps": {k: med(v) for k, v in steps.items()},
    }


def measure_idle(b: Bench, a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from core import control

    tenant = "bench-sched-idle"
    template = control.add_schedule(
        b.engine,
        b.principal,
        control.ScheduleSpec(tenant, "idle-000000", control.Target.of_job(JOB_TYPE, {"idle": True}), cron=IDLE_CRON),
        reason="bench: idle pass",
    )
    say(f"  template schedule {template.id} ({IDLE_CRON!r}, next fire {template.next_fire_at:%Y-%m-%d %H:%M} UTC)")
    tenant_id = b.scalar("SELECT tenant_id FROM schedules WHERE id = :id", id=template.id)

    def have(n: int) -> None:
        """Exactly n schedules of the idle tenant (the template is parked while n is 0)."""
        with b.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM schedules WHERE tenant_id = :t AND id <> :id"), {"t": tenant_id, "id": template.id}
            )
            conn.execute(
                sa.text("UPDATE schedules SET next_fire_at = CASE WHEN :n > 0 THEN :at END WHERE id = :id"),
                {"n": n, "at": template.next_fire_at, "id": template.id},
            )
            if n > 1:
                conn.execute(sa.text(CLONE_SQL), {"n": n - 1, "id": template.id})
        b.vacuum("schedules")
        total = b.scalar("SELECT count(*) FROM schedules WHERE next_fire_at IS NOT NULL")
        due = b.scalar("SELECT count(*) FROM schedules WHERE next_fire_at <= now()")
        if total != n or due:
            raise SystemExit(f"idle pass: wanted {n} schedules none due, have {total} ({due} due)")

    b.vacuum(*LEDGER_TABLES)
    s = in_process_scheduler(b)
    took = timed_steps(s)
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(1, a.idle_rounds + 1):
            order = (0, a.idle_schedules) if r % 2 else (a.idle_schedules, 0)
            got: dict[int, dict[str, Any]] = {}
            for n in order:
                have(n)
                got[n] = time_passes(s, took, a.passes)
                g = got[n]
                say(
                    f"  [{r}/{a.idle_rounds}] {n:>6,} schedules: run_pass p50 {g['pass_p50']:.2f} ms,"
                    f" p95 {g['pass_p95']:.2f} ms; fire_schedules + pump_backfills p50 {g['fire_pump_p50']:.2f} ms,"
                    f" p95 {g['fire_pump_p95']:.2f} ms"
                )
            rounds.append({"with": got[a.idle_schedules], "without": got[0]})
        if a.profile:
            have(a.idle_schedules)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(a.passes):
                s.run_pass()
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
            say(f"  cProfile of {a.passes} passes with {a.idle_schedules:,} schedules (cumulative):\n{out.getvalue()}")
        have(0)
    finally:
        s.engine.dispose()
    return {"rounds": rounds}


# -- planning a year -------------------------------------------------------------------


SEED_SQL = """
INSERT INTO windows (stream_id, tenant_id, span_start, span_end, claim, state, started_at, finished_at)
SELECT :stream, :tenant, s, s + interval '1 hour', orch_window_claim(:stream, s, s + interval '1 hour'),
       'succeeded', now(), now()
FROM unnest(CAST(:starts AS timestamptz[])) AS s"""


def measure_plan(b: Bench, a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from core import control
    from core.control import common
    from core.ledger import schedules as ledger_sched

    tenant = "bench-sched-plan"
    end = past_hour()
    start = end - a.year_windows * HOUR
    rng = random.Random(20260601)
    rounds: list[dict[str, Any]] = []
    for r in range(1, a.plan_rounds + 1):
        target = control.Target.of_job(JOB_TYPE, {"plan_round": r})
        hours = sorted(rng.sample(range(a.year_windows), a.done))
        runs = sum(1 for i, h in enumerate(hours) if i == 0 or hours[i - 1] != h - 1)
        with b.engine.begin() as conn:
            tenant_id = common.tenant_id(conn, tenant, create=True)
            stream = ledger_sched.ensure_stream(
                conn, tenant_id=tenant_id, source_id=None, job_type=JOB_TYPE, digest=target.digest(), origin=start
            )
            conn.execute(
                sa.text(SEED_SQL), {"stream": stream, "tenant": tenant_id, "starts": [start + h * HOUR for h in hours]}
            )
            done_until = conn.execute(sa.text("SELECT orch_stream_advance(:s)"), {"s": stream}).scalar()
        b.vacuum("windows", "streams", "backfills")
        spec = control.BackfillSpec(tenant, target, start, end, window=HOUR, max_active=2)
        dry: list[float] = []
        for _ in range(a.dry_calls):
            t0 = time.perf_counter()
            dplan = control.create_backfill(
                b.engine, b.principal, spec, reason="bench: plan a year", ticket="BENCH-PLAN", dry_run=True
            )
            dry.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plan = control.create_backfill(b.engine, b.principal, spec, reason="bench: plan a year", ticket="BENCH-PLAN")
        real = time.perf_counter() - t0
        assert plan.backfill_id is not None
        control.cancel_backfill(b.engine, b.principal, plan.backfill_id, reason="bench: planned only")
        want = a.year_windows - a.done
        ok = plan.to_run == want and plan.skipped_done == a.done and dplan.to_run == want
        if not ok:
            say(
                f"  warning: plan says to_run {plan.to_run} (dry run {dplan.to_run}), skipped_done"
                f" {plan.skipped_done}; expected {want} and {a.done}"
            )
        rounds.append(
            {
                "real_s": real,
                "dry_s": med(dry),
                "to_run": plan.to_run,
                "skipped_done": plan.skipped_done,
                "done_runs": runs,
                "plan_ok": ok,
            }
        )
        say(
            f"  [{r}/{a.plan_rounds}] {a.year_windows:,} windows against {a.done:,} done ({runs:,} runs;"
            f" done_until {done_until:%Y-%m-%d %H:%M}): dry run {med(dry):.3f} s (median of {a.dry_calls}),"
            f" create {real:.3f} s; {plan.to_run:,} to run, {plan.skipped_done:,} skipped as done"
        )
    return {"rounds": rounds}


# -- firing delay ----------------------------------------------------------------------


def measure_fire(b: Bench, a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from core import control
    from core.domain import schedules as sched

    tenant = "bench-sched-fire"
    every = dt.timedelta(seconds=a.every) if a.every else None
    cron = None if every else FIRE_CRON
    trigger = sched.Trigger.of(cron_expr=cron, every=every, tz="UTC", anchor=None)
    ids: list[int] = []
    t0 = time.perf_counter()
    for i in range(a.schedules):
        added = control.add_schedule(
            b.engine,
            b.principal,
            control.ScheduleSpec(
                tenant, f"fire-{i:05d}", control.Target.of_job(JOB_TYPE, {"schedule": i}), cron=cron, every=every
            ),
            reason="bench: fire delay",
        )
        ids.append(added.id)
    add_s = time.perf_counter() - t0
    added_at = utcnow()
    lo, hi = min(ids), max(ids)
    ticks: list[dt.datetime] = []
    t = added_at
    for _ in range(a.fire_ticks):
        t = trigger.next_after(t)
        ticks.append(t)
    say(
        f"  {a.schedules:,} schedules added in {add_s:.1f} s ({a.schedules / add_s:,.0f}/s); measuring the ticks at"
        f" {', '.join(f'{x:%H:%M:%S}' for x in ticks)} UTC (the first whole ones after the last add)"
    )
    count_sql = sa.text(
        "SELECT count(*) FROM schedule_ticks WHERE scheduled_for = :t AND schedule_id BETWEEN :lo AND :hi"
    )
    visible: list[dict[str, float]] = []
    for tick in ticks:
        wait = tick.timestamp() - time.time() - 0.05
        if wait > 0:
            say(f"  waiting {wait:.0f} s for the tick at {tick:%H:%M:%S} ...")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if b.lg.stack is not None:
                    b.lg.stack.check()
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        first = last = None
        give_up = time.monotonic() + 120
        with b.engine.connect() as conn:
            while time.monotonic() < give_up:
                n = conn.execute(count_sql, {"t": tick, "lo": lo, "hi": hi}).scalar_one()
                conn.rollback()
                now = time.time()
                if n and first is None:
                    first = now
                if n >= a.schedules:
                    last = now
                    break
                time.sleep(0.01)
        if first is None or last is None:
            raise SystemExit(f"the tick at {tick:%H:%M:%S} was not recorded for every schedule within 120 s")
        visible.append({"first_ms": (first - tick.timestamp()) * 1000, "all_ms": (last - tick.timestamp()) * 1000})
        say(
            f"  tick {tick:%H:%M:%S}: first tick rows visible after {visible[-1]['first_ms']:.0f} ms, all"
            f" {a.schedules:,} after {visible[-1]['all_ms']:.0f} ms (bench clock, polled every 10 ms)"
        )
    with b.engine.connect() as conn:
        statuses = Counter(
            {
                str(r[0]): int(r[1])
                for r in conn.execute(
                    sa.text(
                        "SELECT status, count(*) FROM schedule_ticks WHERE schedule_id BETWEEN :lo AND :hi"
                        " AND scheduled_for = ANY(:ticks) GROUP BY status"
                    ),
                    {"lo": lo, "hi": hi, "ticks": ticks},
                )
            }
        )
        job_ids = [
            int(r[0])
            for r in conn.execute(
                sa.text(
                    "SELECT job_id FROM schedule_ticks WHERE schedule_id BETWEEN :lo AND :hi"
                    " AND scheduled_for = ANY(:ticks) AND job_id IS NOT NULL"
                ),
                {"lo": lo, "hi": hi, "ticks": ticks},
            )
        ]
    b.lg.wait_jobs(job_ids)
    # The figure, from the ledger; plus tick -> tick row's fired_at and -> handler start.
    rows_sql = sa.text("""
SELECT t.scheduled_for,
       extract(epoch FROM j.created_at - t.scheduled_for) * 1000 AS delay_ms,
       extract(epoch FROM t.fired_at - t.scheduled_for) * 1000 AS fired_ms,
       extract(epoch FROM j.started_at - t.scheduled_for) * 1000 AS start_ms,
       j.state, j.created_at
FROM schedule_ticks AS t JOIN jobs AS j ON j.id = t.job_id
WHERE t.status = 'fired' AND t.schedule_id BETWEEN :lo AND :hi AND t.scheduled_for = ANY(:ticks)""")
    with b.engine.connect() as conn:
        rows = conn.execute(rows_sql, {"lo": lo, "hi": hi, "ticks": ticks}).all()
    per_tick: list[dict[str, Any]] = []
    for tick, vis in zip(ticks, visible, strict=True):
        mine = [r for r in rows if r.scheduled_for == tick]
        d = [float(r.delay_ms) for r in mine]
        st = [float(r.start_ms) for r in mine if r.start_ms is not None]
        per_tick.append(
            {
                "tick": tick.isoformat(),
                "fired": len(mine),
                # One now() per firing transaction: scheduler_batch schedules each.
                "transactions": len({r.created_at for r in mine}),
                "delay_p50": med(d),
                "delay_p99": percentile(d, 0.99),
                "delay_max": max(d, default=float("nan")),
                "start_p99": percentile(st, 0.99),
                **vis,
            }
        )
    delays = [float(r.delay_ms) for r in rows]
    starts = [float(r.start_ms) for r in rows if r.start_ms is not None]
    fired_at = [float(r.fired_ms) for r in rows if r.fired_ms is not None]
    not_ok = Counter(r.state for r in rows if r.state != "succeeded")
    t0 = time.perf_counter()
    for i in range(a.schedules):  # they must not fire into the live measurement
        control.remove_schedule(b.engine, b.principal, tenant, f"fire-{i:05d}", reason="bench: fire delay measured")
    remove_s = time.perf_counter() - t0
    return {
        "trigger": f"every {a.every}s" if every else f"cron {FIRE_CRON}",
        "add_per_s": a.schedules / add_s,
        "remove_per_s": a.schedules / remove_s,
        "ticks": per_tick,
        "statuses": dict(statuses),
        "delays": delays,
        "p50": med(delays),
        "p99": percentile(delays, 0.99),
        "max": max(delays, default=float("nan")),
        "fired_at_p99": percentile(fired_at, 0.99),
        "start_p50": med(starts),
        "start_p99": percentile(starts, 0.99),
        "visible_all_max": max(v["all_ms"] for v in visible),
        "visible_all_p50": med([v["all_ms"] for v in visible]),
        "jobs_not_succeeded": dict(not_ok),
    }


# -- live dispatch under a backfill ----------------------------------------------------


def submit_stream(b: Bench, tenant: str, rate: float, duration: float) -> tuple[list[int], float]:
    """One job at a time at `rate` per second (on a fixed grid: a slow submit is caught up)."""
    from core import control

    spec = control.JobSpec(tenant, JOB_TYPE)
    n = max(1, int(rate * duration))
    ids: list[int] = []
    t0 = time.perf_counter()
    for k in range(n):
        d = t0 + k / rate - time.perf_counter()
        if d > 0:
            time.sleep(d)
        ids.append(control.submit(b.engine, b.principal, spec, doorbell=b.bell))
    return ids, n / (time.perf_counter() - t0)


def dispatch_of(b: Bench, ids: list[int]) -> list[tuple[float, float]]:
    """(created_at as epoch seconds, submit-to-start ms) of the jobs that started."""
    import sqlalchemy as sa

    with b.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT extract(epoch FROM created_at), extract(epoch FROM started_at - created_at) * 1000 FROM jobs"
                " WHERE id = ANY(:ids) AND started_at IS NOT NULL"
            ),
            {"ids": ids},
        ).all()
    return [(float(r[0]), float(r[1])) for r in rows]


#: A live job submitted this soon after the pump started backfill windows meets their burst.
BURST_S = 0.25


def near_burst(live: list[tuple[float, float]], starts: list[float]) -> tuple[list[float], list[float]]:
    """Split live jobs' latencies: created within BURST_S after a backfill job was created
    (the pump starts its windows' jobs together, once per scheduler pass), and the others."""
    starts = sorted(starts)
    near: list[float] = []
    far: list[float] = []
    for created, lat in live:
        k = bisect.bisect_right(starts, created)
        (near if k and created - starts[k - 1] <= BURST_S else far).append(lat)
    return near, far


def backfill_state(b: Bench, backfill_id: int) -> dict[str, int]:
    import sqlalchemy as sa

    with b.engine.connect() as conn:
        return {
            str(r[0]): int(r[1])
            for r in conn.execute(
                sa.text("SELECT state, count(*) FROM windows WHERE backfill_id = :id GROUP BY state"),
                {"id": backfill_id},
            )
        }


def measure_live(b: Bench, a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from core import control

    tenant = "bench-sched-live"
    end = past_hour()
    start = end - a.backfill_windows * HOUR
    spec = control.BackfillSpec(
        tenant,
        control.Target.of_job(JOB_TYPE, {"backfill": "live"}),
        start,
        end,
        window=HOUR,
        max_active=a.max_active,
    )
    plan = control.create_backfill(b.engine, b.principal, spec, reason="bench: live dispatch", ticket="BENCH-LIVE")
    bf = plan.backfill_id
    assert bf is not None
    control.pause_backfill(b.engine, b.principal, bf, reason="bench: idle first")
    say(f"  backfill {bf}: {plan.to_run:,} windows of 1 h, max_active {a.max_active} (paused)")

    def until(what: str, cond: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            c = backfill_state(b, bf)
            if cond(c):
                return c
            if b.lg.stack is not None:
                b.lg.stack.check()
            time.sleep(0.05)
        raise SystemExit(f"backfill {bf}: {what} did not happen within 60 s")

    def set_backfill(on: bool) -> None:
        if on:
            control.resume_backfill(b.engine, b.principal, bf, reason="bench: backfill round")
            until("a window starting", lambda c: c.get("running", 0) > 0)
        else:
            control.pause_backfill(b.engine, b.principal, bf, reason="bench: idle round")
            until("its running windows ending", lambda c: c.get("running", 0) == 0)

    until("its running windows ending", lambda c: c.get("running", 0) == 0)
    say("  warm-up (not measured): 5 s of live jobs ...")
    warm, _ = submit_stream(b, tenant, a.rate, 5.0)
    b.lg.wait_jobs(warm)
    rounds: list[dict[str, Any]] = []
    backfill_jobs_sql = sa.text("""
SELECT extract(epoch FROM j.started_at - j.created_at) * 1000, extract(epoch FROM j.created_at)
FROM windows AS w JOIN jobs AS j ON j.id = w.job_id
WHERE w.backfill_id = :bf AND j.started_at IS NOT NULL AND j.created_at >= :since""")
    seg_s = a.duration / a.segments
    try:
        for r in range(1, a.live_rounds + 1):
            b.vacuum("jobs", "job_history", "windows", "backfills")
            since = b.scalar("SELECT now()")
            ids: dict[str, list[int]] = {"idle": [], "backfill": []}
            wall = {"idle": 0.0, "backfill": 0.0}
            done = {"idle": 0, "backfill": 0}
            for seg in range(a.segments):
                # ABBA...: each state's segments spread over the round, so a burst of noise on
                # the machine hits both alike; the first state flips every round.
                order = ("idle", "backfill") if (r + seg) % 2 else ("backfill", "idle")
                for kind in order:
                    set_backfill(kind == "backfill")
                    before = backfill_state(b, bf).get("succeeded", 0)
                    t0 = time.perf_counter()
                    got_ids, _ = submit_stream(b, tenant, a.rate, seg_s)
                    wall[kind] += time.perf_counter() - t0
                    done[kind] += backfill_state(b, bf).get("succeeded", 0) - before
                    ids[kind] += got_ids
            b.lg.wait_jobs(ids["idle"] + ids["backfill"])
            with b.engine.connect() as conn:
                bf_rows = conn.execute(backfill_jobs_sql, {"bf": bf, "since": since}).all()
            bf_lat = [float(x[0]) for x in bf_rows]
            bf_created = [float(x[1]) for x in bf_rows]
            got: dict[str, dict[str, Any]] = {}
            for kind in ("idle", "backfill"):
                timed = dispatch_of(b, ids[kind])
                lat = [x[1] for x in timed]
                near, far = near_burst(timed, bf_created)
                g = got[kind] = {
                    "p50": med(lat),
                    "p99": percentile(lat, 0.99),
                    "max": max(lat, default=float("nan")),
                    "jobs": len(ids[kind]),
                    "started": len(lat),
                    "rate": len(ids[kind]) / wall[kind],
                    "backfill_windows_done": done[kind],
                    "backfill_windows_per_s": done[kind] / wall[kind],
                    "backfill_jobs_p50": med(bf_lat),
                    "near_burst": len(near),
                    "near_burst_p99": percentile(near, 0.99),
                    "far_p99": percentile(far, 0.99),
                }
                say(
                    f"  [{r}/{a.live_rounds}] {kind:<8} {g['jobs']} live jobs at {g['rate']:.1f}/s in"
                    f" {a.segments} segments of {seg_s:g} s: submit->start p50 {g['p50']:.1f} ms, p99"
                    f" {g['p99']:.1f} ms, max {g['max']:.1f} ms; backfill windows done meanwhile"
                    f" {g['backfill_windows_done']} ({g['backfill_windows_per_s']:.2f}/s)"
                )
                if kind == "backfill":
                    say(
                        f"    of them {g['near_burst']} submitted <= {BURST_S * 1000:.0f} ms after the pump started"
                        f" windows: p99 {g['near_burst_p99']:.1f} ms; the others p99 {g['far_p99']:.1f} ms"
                    )
            ratio = got["backfill"]["p99"] / got["idle"]["p99"]
            rounds.append({"idle": got["idle"], "backfill": got["backfill"], "ratio": ratio})
            say(f"  round {r}: live p99 ratio (backfill / idle) {ratio:.3f}")
    finally:
        control.cancel_backfill(
            b.engine, b.principal, bf, reason="bench: measured", terminate_running=True, doorbell=b.bell
        )
    final = backfill_state(b, bf)
    return {"rounds": rounds, "backfill_id": bf, "backfill_windows": plan.to_run, "backfill_final": final}


# -- main ---------------------------------------------------------------------------------


def measure(db_url: str, redis_url: str, a: argparse.Namespace) -> dict[str, Any]:
    from core import control
    from core.domain.auth import local_principal
    from core.ledger import db
    from worker.runtime import broker as broker_mod
    from worker.runtime import pool

    namespace = f"bench-sched-{uuid.uuid4().hex[:8]}"
    settings = throughput.use_ledger(db_url, redis_url, namespace)
    engine = db.create_engine(db_url, application_name="orch-bench")
    handlers = pool.load_handlers(["bench.handlers"])
    control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
    broker = broker_mod.build_broker(redis_url, namespace=namespace)
    principal = local_principal("bench")
    bell = broker_mod.RedisDoorbell(broker)
    lg = dag.Ledger(engine, principal, bell, tenant="bench-sched", timeout_s=a.timeout)
    b = Bench(engine, principal, bell, broker, settings, db_url, lg)
    m: dict[str, Any] = {"load_start": os.getloadavg()}
    say("load average at start (1/5/15 min): " + ", ".join(f"{x:.2f}" for x in m["load_start"]))
    try:
        if "idle" in a.only:
            say(
                f"idle pass: in-process Scheduler, {a.passes} passes x {a.idle_rounds} rounds, 0 vs"
                f" {a.idle_schedules:,} schedules none due ..."
            )
            m["idle"] = measure_idle(b, a)
        if "plan" in a.only:
            say(f"plan: {a.year_windows:,}-window backfill against {a.done:,} done windows, {a.plan_rounds} rounds ...")
            m["plan"] = measure_plan(b, a)
        if "fire" in a.only or "live" in a.only:
            b.vacuum(*LEDGER_TABLES)
            with throughput.worker_stack(
                settings, processes=a.processes, threads=a.threads, queues=[QUEUE], handler_modules=["bench.handlers"]
            ) as stack:
                lg.stack = stack
                say(f"pool {a.processes}x{a.threads} and `orch scheduler` up")
                if "fire" in a.only:
                    trig = f"every {a.every}s" if a.every else f"cron {FIRE_CRON!r}"
                    say(f"fire: {a.schedules:,} schedules, {trig}, {a.fire_ticks} ticks ...")
                    m["fire"] = measure_fire(b, a)
                if "live" in a.only:
                    say(
                        f"live: {a.rate:g} jobs/s for {a.duration:g} s, idle vs a {a.backfill_windows:,}-window"
                        f" backfill (max_active {a.max_active}), {a.live_rounds} rounds ..."
                    )
                    m["live"] = measure_live(b, a)
            lg.stack = None
    finally:
        keys = broker.client.keys(f"{namespace}:*")
        if keys:
            broker.client.delete(*keys)
        engine.dispose()
    return m


def figures_of(m: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    figures: dict[str, float | None] = dict.fromkeys(TARGETS)
    per_round: dict[str, list[float]] = {k: [] for k in TARGETS}
    if "fire" in m:
        figures["fire_delay_p99_ms"] = m["fire"]["p99"]
        per_round["fire_delay_p99_ms"] = [t["delay_p99"] for t in m["fire"]["ticks"]]
    if "idle" in m:
        per_round["idle_pass_ms"] = [r["with"]["pass_p50"] for r in m["idle"]["rounds"]]
        figures["idle_pass_ms"] = med(per_round["idle_pass_ms"])
    if "plan" in m:
        per_round["plan_year_s"] = [r["real_s"] for r in m["plan"]["rounds"]]
        figures["plan_year_s"] = med(per_round["plan_year_s"])
    if "live" in m:
        per_round["live_dispatch_p99_ratio"] = [r["ratio"] for r in m["live"]["rounds"]]
        figures["live_dispatch_p99_ratio"] = med(per_round["live_dispatch_p99_ratio"])
    return figures, per_round


def met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target = TARGETS[key]
    return value <= target if op == "<=" else value >= target


def r3(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def report(a: argparse.Namespace, m: dict[str, Any]) -> dict[str, Any]:
    figures, per_round = figures_of(m)
    fmt = {"fire_delay_p99_ms": "{:.0f}", "idle_pass_ms": "{:.2f}", "plan_year_s": "{:.3f}"}
    print()
    print(f"{'figure':<24} {'value':>9} {'target':>9}  {'':4}  per round / tick")
    for key, value in figures.items():
        op, target = TARGETS[key]
        f = fmt.get(key, "{:.3f}")
        if value is None:
            print(f"{key:<24} {'-':>9} {op + ' ' + f.format(target):>9}  {'skip':4}")
            continue
        rounds = ", ".join(f.format(v) for v in per_round[key])
        ok = "ok" if met(key, value) else "MISS"
        print(f"{key:<24} {f.format(value):>9} {op + ' ' + f.format(target):>9}  {ok:4}  {rounds}")
    print()
    out: dict[str, Any] = {k: r3(v) for k, v in figures.items()}
    if "fire" in m:
        f = m["fire"]
        quick = "" if f["trigger"].startswith("cron") else " (interval schedules, not the issue's per-minute cron)"
        print(
            f"fire: {a.schedules:,} schedules, {f['trigger']}{quick}, {len(f['ticks'])} ticks, statuses"
            f" {f['statuses']}; delay = jobs.created_at - scheduled_for: p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms,"
            f" max {f['max']:.0f} ms (created_at is the firing transaction's start); tick rows visible to a"
            f" reader after {f['visible_all_p50']:.0f} ms (median of ticks, max {f['visible_all_max']:.0f} ms);"
            f" tick -> handler start p50 {f['start_p50']:.0f} / p99 {f['start_p99']:.0f} ms; add_schedule"
            f" {f['add_per_s']:.0f}/s, remove_schedule {f['remove_per_s']:.0f}/s"
        )
        for t in f["ticks"]:
            print(
                f"  tick {t['tick']}: {t['fired']} fired in {t['transactions']} transaction(s), delay p50"
                f" {t['delay_p50']:.0f} / p99 {t['delay_p99']:.0f} / max {t['delay_max']:.0f} ms,"
                f" visible {t['all_ms']:.0f} ms, start p99 {t['start_p99']:.0f} ms"
            )
        if f["jobs_not_succeeded"]:
            print(f"  warning: fired jobs not succeeded: {f['jobs_not_succeeded']}")
        out.update(
            fire_trigger=f["trigger"],
            fire_schedules=a.schedules,
            fire_ticks=len(f["ticks"]),
            fire_statuses=f["statuses"],
            fire_delay_p50_ms=r3(f["p50"]),
            fire_delay_max_ms=r3(f["max"]),
            fire_visible_ms_max=r3(f["visible_all_max"]),
            fire_to_start_p99_ms=r3(f["start_p99"]),
            add_schedule_per_s=round(f["add_per_s"], 1),
        )
    if "idle" in m:
        rounds = m["idle"]["rounds"]
        keys = ("pass_p50", "pass_p95", "fire_pump_p50", "fire_pump_p95", "sleep_for_p50")
        w = {k: med([r["with"][k] for r in rounds]) for k in keys}
        z = {k: med([r["without"][k] for r in rounds]) for k in keys}
        ratios = [r["with"]["pass_p50"] / r["without"]["pass_p50"] for r in rounds]
        fp_ratios = [r["with"]["fire_pump_p50"] / r["without"]["fire_pump_p50"] for r in rounds]
        print(
            f"idle pass ({a.passes} passes per state and round, medians of rounds): {a.idle_schedules:,} schedules"
            f" none due: run_pass p50 {w['pass_p50']:.2f} / p95 {w['pass_p95']:.2f} ms; 0 schedules"
            f" {z['pass_p50']:.2f} / {z['pass_p95']:.2f} ms; ratio {med(ratios):.3f}. Its fire_schedules +"
            f" pump_backfills {w['fire_pump_p50']:.2f} / {w['fire_pump_p95']:.2f} ms vs {z['fire_pump_p50']:.2f} /"
            f" {z['fire_pump_p95']:.2f} ms, ratio {med(fp_ratios):.3f}; the loop's _sleep_for after it"
            f" {w['sleep_for_p50']:.2f} vs {z['sleep_for_p50']:.2f} ms"
        )
        steps_w = {k: med([r["with"]["steps"][k] for r in rounds]) for k in STEPS}
        steps_z = {k: med([r["without"]["steps"][k] for r in rounds]) for k in STEPS}
        print(
            f"  steps within the pass (p50 ms, {a.idle_schedules:,} / 0 schedules): "
            + ", ".join(f"{k} {steps_w[k]:.2f}/{steps_z[k]:.2f}" for k in STEPS)
        )
        out.update(
            idle_schedules=a.idle_schedules,
            idle_passes=a.passes,
            idle_rounds=a.idle_rounds,
            idle_pass_p95_ms=r3(w["pass_p95"]),
            idle_pass_0_ms=r3(z["pass_p50"]),
            idle_pass_ratio=r3(med(ratios)),
            idle_fire_pump_ms=r3(w["fire_pump_p50"]),
            idle_fire_pump_0_ms=r3(z["fire_pump_p50"]),
            idle_fire_pump_ratio=r3(med(fp_ratios)),
        )
    if "plan" in m:
        rounds = m["plan"]["rounds"]
        print(
            f"plan: {a.year_windows:,} windows of 1 h against {a.done:,} done (random hours, about"
            f" {med([r['done_runs'] for r in rounds]):.0f} runs); create_backfill dry run"
            f" {med([r['dry_s'] for r in rounds]):.3f} s, real {med([r['real_s'] for r in rounds]):.3f} s (medians of"
            f" {len(rounds)} rounds, a fresh stream each); {rounds[0]['to_run']:,} to run, plan correct in"
            f" {sum(r['plan_ok'] for r in rounds)}/{len(rounds)} rounds"
        )
        out.update(
            plan_windows=a.year_windows,
            plan_done=a.done,
            plan_dry_run_s=r3(med([r["dry_s"] for r in rounds])),
            plan_rounds=len(rounds),
            plan_ok=all(r["plan_ok"] for r in rounds),
        )
    if "live" in m:
        lv = m["live"]
        rounds = lv["rounds"]

        def lm(kind: str, key: str) -> float:
            return med([r[kind][key] for r in rounds])

        per_s = lm("backfill", "backfill_windows_per_s")
        print(
            f"live: {a.rate:g} jobs/s for {a.duration:g} s per state, {len(rounds)} rounds (medians): idle p50"
            f" {lm('idle', 'p50'):.1f} / p99 {lm('idle', 'p99'):.1f} ms, during the backfill p50"
            f" {lm('backfill', 'p50'):.1f} / p99 {lm('backfill', 'p99'):.1f} ms; the backfill"
            f" (max_active {a.max_active}) did {per_s:.2f} windows/s meanwhile (its jobs' submit->start p50"
            f" {lm('backfill', 'backfill_jobs_p50'):.0f} ms; live jobs submitted <= {BURST_S * 1000:.0f} ms after it"
            f" started windows: {lm('backfill', 'near_burst'):.0f} per round, p99"
            f" {lm('backfill', 'near_burst_p99'):.1f} ms, the others p99 {lm('backfill', 'far_p99'):.1f} ms):"
            f" {a.backfill_windows:,} windows would take"
            f" {a.backfill_windows / per_s / 60 if per_s else float('inf'):.0f} min; windows at the end"
            f" {lv['backfill_final']}"
        )
        out.update(
            live_rate_per_s=a.rate,
            live_duration_s=a.duration,
            live_rounds=len(rounds),
            live_segments=a.segments,
            live_idle_p50_ms=r3(lm("idle", "p50")),
            live_idle_p99_ms=r3(lm("idle", "p99")),
            live_backfill_p50_ms=r3(lm("backfill", "p50")),
            live_backfill_p99_ms=r3(lm("backfill", "p99")),
            live_p99_ratios=[r3(r["ratio"]) for r in rounds],
            live_near_burst_p99_ms=r3(lm("backfill", "near_burst_p99")),
            live_far_from_burst_p99_ms=r3(lm("backfill", "far_p99")),
            backfill_windows=lv["backfill_windows"],
            backfill_max_active=a.max_active,
            backfill_windows_per_s=r3(per_s),
        )
    out.update(
        processes=a.processes,
        threads=a.threads,
        loadavg_1m_start=round(m["load_start"][0], 2),
        loadavg_1m_end=round(os.getloadavg()[0], 2),
        targets_met=all(met(k, v) for k, v in figures.items() if v is not None),
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: --every 15, fewer passes, rounds and seconds")
    ap.add_argument("--schedules", type=int, default=1000, help="fire: schedules due every tick")
    ap.add_argument("--fire-ticks", type=int, default=2, help="fire: whole ticks measured (minute boundaries)")
    ap.add_argument("--every", type=int, default=None, help="fire: interval schedules of N s instead of the cron")
    ap.add_argument("--idle-schedules", type=int, default=10_000)
    ap.add_argument("--passes", type=int, default=200, help="idle: timed passes per state and round")
    ap.add_argument("--idle-rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="idle: cProfile the passes with the schedules (stderr)")
    ap.add_argument("--year-windows", type=int, default=8760)
    ap.add_argument("--done", type=int, default=4000, help="plan: succeeded windows seeded before planning")
    ap.add_argument("--plan-rounds", type=int, default=3)
    ap.add_argument("--dry-calls", type=int, default=3, help="plan: dry runs per round (median)")
    ap.add_argument("--backfill-windows", type=int, default=5000)
    ap.add_argument("--max-active", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0, help="live: jobs submitted per second")
    ap.add_argument("--duration", type=float, default=30.0, help="live: seconds of submitting per state")
    ap.add_argument("--live-rounds", type=int, default=3)
    ap.add_argument("--segments", type=int, default=3, help="live: alternating segments per state and round")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--only", default=",".join(PIECES), help=f"comma-separated pieces of {','.join(PIECES)}")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds jobs may take before the bench gives up")
    a = ap.parse_args()
    if a.quick:
        defaults = {"every": 15, "passes": 100, "idle_rounds": 2, "plan_rounds": 2, "duration": 15.0, "live_rounds": 1}
        for k, v in defaults.items():
            if getattr(a, k) == ap.get_default(k):
                setattr(a, k, v)
    a.only = [p.strip() for p in a.only.split(",") if p.strip()]
    if not a.only or set(a.only) - set(PIECES):
        ap.error(f"--only takes pieces of {', '.join(PIECES)}")
    if a.done >= a.year_windows or min(a.schedules, a.fire_ticks, a.passes, a.idle_rounds, a.plan_rounds) < 1:
        ap.error("--done must be below --year-windows; counts and rounds must be >= 1")
    if a.segments < 1 or a.duration / a.segments < 1:
        ap.error("--segments must be >= 1 and --duration / --segments at least 1 s")
    if a.every is not None and a.every < 1:
        ap.error("--every must be >= 1")
    throughput.exit_on_sigterm()
    db_url, redis_url, embedded = throughput.resolve_urls()
    try:
        with throughput.scratch_database(db_url, "orch_bench_sched") as scratch:
            m = measure(scratch, redis_url, a)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    print(json.dumps(report(a, m)))


if __name__ == "__main__":
    main()
