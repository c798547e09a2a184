"""bench/schedules.py's pieces without a pool: the idle pass of an in-process Scheduler and
planning a one-year backfill (see bench/schedules.py and bench/README.md)."""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import time
from collections.abc import Callable
from typing import Any

from bench.schedules_common import HOUR, IDLE_CRON, JOB_TYPE, LEDGER_TABLES, Bench, med, past_hour, percentile, say

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
