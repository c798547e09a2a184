"""Schedules and backfills: firing delay, the idle pass, planning a year, live dispatch under a backfill.

The pieces are in bench/schedules_idle_plan.py (idle, plan) and bench/schedules_fire_live.py
(fire, live), their shared helpers in bench/schedules_common.py; this module parses the
arguments, runs them in a scratch database and reports.

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
   the last add). A reader polls each tick's rows every 10 ms from just before it and keeps,
   for each schedule, the bench's wall time of the first poll that saw its job: the delay of
   a firing is that - scheduled_for (its transaction's commit, late by at most a poll), and
   fire_delay_p99_ms is its p99 over every fired tick. Also: jobs.created_at - scheduled_for
   (fire_created_*: created_at is the firing transaction's now(), its start, so it leaves out
   the transaction's own work), when all tick rows were visible, and tick -> handler start.
   --every N (or --quick: 15 s) uses interval schedules instead of the per-minute cron to
   keep the run short; the output says so ("fire_trigger"). The schedules are removed
   afterwards.
4. live: with the same pool and scheduler, live bench.noop jobs submitted one by one at
   --rate per second; submit-to-start = jobs.started_at - jobs.created_at. Each round gives
   each state --duration seconds in --segments segments, alternating idle/backfill/backfill/
   idle/... (the first state flips every round): "idle" = the --backfill-windows backfill of
   bench.noop (max_active --max-active, same tenant) is operator-paused with no window
   running; "backfill" = resumed, windows running. A round's p99 of a state pools its
   segments. An unmeasured 5 s warm-up stream comes first. live_dispatch_p99_ratio =
   backfill p99 / idle p99, the median of the per-round ratios.
   The backfill is canceled afterwards.

Progress goes to stderr; the figures and, as the last line, one JSON object to stdout. Uses
ORCH_DATABASE_URL (its server; a scratch database is created and dropped) and ORCH_REDIS_URL
(a fresh namespace), or the embedded servers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import dag, throughput  # noqa: E402 - needs ROOT on sys.path when run as a script
from bench.schedules_common import FIRE_CRON, LEDGER_TABLES, QUEUE, Bench, med, say  # noqa: E402
from bench.schedules_fire_live import BURST_S, POLL_S, measure_fire, measure_live  # noqa: E402
from bench.schedules_idle_plan import STEPS, measure_idle, measure_plan  # noqa: E402

PIECES = ("idle", "plan", "fire", "live")

TARGETS = {
    "fire_delay_p99_ms": ("<=", 1000.0),
    "idle_pass_ms": ("<=", 20.0),
    "plan_year_s": ("<=", 2.0),
    "live_dispatch_p99_ratio": ("<=", 2.0),
}


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
        figures["fire_delay_p99_ms"] = m["fire"]["delay_p99"]
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
    """Rounded; None (JSON null) for a missing figure or a NaN (an empty group)."""
    return None if x is None or math.isnan(float(x)) else round(float(x), 3)


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
            f" {f['statuses']}; delay = tick -> job visible to a reader (first sight by a poller every"
            f" {POLL_S * 1000:.0f} ms, bench clock, at most {f['late_bound_max']:.0f} ms late): p50"
            f" {f['delay_p50']:.0f} ms, p99 {f['delay_p99']:.0f} ms, max {f['delay_max']:.0f} ms; jobs.created_at -"
            f" scheduled_for (the firing transaction's start): p50 {f['created_p50']:.0f} ms, p99"
            f" {f['created_p99']:.0f} ms, max {f['created_max']:.0f} ms; all tick rows visible after"
            f" {f['visible_all_p50']:.0f} ms (median of ticks, max {f['visible_all_max']:.0f} ms); tick -> handler"
            f" start p50 {f['start_p50']:.0f} / p99 {f['start_p99']:.0f} ms; add_schedule {f['add_per_s']:.0f}/s,"
            f" remove_schedule {f['remove_per_s']:.0f}/s"
        )
        for t in f["ticks"]:
            print(
                f"  tick {t['tick']}: {t['fired']} fired in {t['transactions']} transaction(s), delay (visible) p50"
                f" {t['delay_p50']:.0f} / p99 {t['delay_p99']:.0f} / max {t['delay_max']:.0f} ms, created_at p50"
                f" {t['created_p50']:.0f} / p99 {t['created_p99']:.0f} / max {t['created_max']:.0f} ms, all rows"
                f" visible {t['all_ms']:.0f} ms ({t['polls']} polls), start p99 {t['start_p99']:.0f} ms"
            )
        if f["delay_unseen"]:
            print(f"  warning: {f['delay_unseen']} fired ticks' jobs never seen by the poller, left out of the delay")
        if f["jobs_not_succeeded"]:
            print(f"  warning: fired jobs not succeeded: {f['jobs_not_succeeded']}")
        out.update(
            fire_trigger=f["trigger"],
            fire_schedules=a.schedules,
            fire_ticks=len(f["ticks"]),
            fire_statuses=f["statuses"],
            fire_delay_is=f"tick -> job visible (poll every {POLL_S * 1000:.0f} ms, bench clock, per tick)",
            fire_delay_p50_ms=r3(f["delay_p50"]),
            fire_delay_max_ms=r3(f["delay_max"]),
            fire_delay_late_bound_ms=r3(f["late_bound_max"]),
            fire_created_p50_ms=r3(f["created_p50"]),
            fire_created_p99_ms=r3(f["created_p99"]),
            fire_created_max_ms=r3(f["created_max"]),
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
            """The median over the rounds that have the figure (a NaN marks an empty group)."""
            return med([v for r in rounds if not math.isnan(v := float(r[kind][key]))])

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
