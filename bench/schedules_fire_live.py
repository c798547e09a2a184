"""bench/schedules.py's pieces with a pool and an `orch scheduler` process: the firing delay
of many schedules and live dispatch under a backfill (see bench/schedules.py and
bench/README.md)."""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.schedules_common import FIRE_CRON, HOUR, JOB_TYPE, Bench, med, past_hour, percentile, say, utcnow

# -- firing delay ----------------------------------------------------------------------


#: How often the fire piece's reader polls for a tick's rows and jobs (s).
POLL_S = 0.01

WATCH_SQL = """
SELECT t.schedule_id, j.id IS NOT NULL AS job_seen
FROM schedule_ticks AS t LEFT JOIN jobs AS j ON j.id = t.job_id
WHERE t.scheduled_for = :t AND t.schedule_id BETWEEN :lo AND :hi"""


def watch_tick(b: Bench, tick: dt.datetime, lo: int, hi: int, n: int, give_up_s: float = 120.0) -> dict[str, Any]:
    """Poll every POLL_S (from just before the tick) until the tick rows of all n schedules
    are visible. For each schedule: when the first poll that saw its tick row, and its job,
    returned (bench clock, ms after the tick). A row first seen by a poll committed after the
    previous poll was sent, so each time is late by at most that poll's late bound (received
    - previous sent); late_bound_max is the largest over the jobs."""
    import sqlalchemy as sa

    sql = sa.text(WATCH_SQL)
    at = tick.timestamp()
    row_ms: dict[int, float] = {}
    job_ms: dict[int, float] = {}
    bounds: list[float] = []
    polls = 0
    prev_sent = at
    give_up = time.monotonic() + give_up_s
    with b.engine.connect() as conn:
        while len(row_ms) < n:
            if time.monotonic() > give_up:
                raise SystemExit(f"the tick at {tick:%H:%M:%S} was not recorded for every schedule in {give_up_s:g} s")
            sent = time.time()
            got = conn.execute(sql, {"t": tick, "lo": lo, "hi": hi}).all()
            conn.rollback()
            recv = time.time()
            polls += 1
            ms = (recv - at) * 1000
            new_jobs = 0
            for sid, job_seen in got:
                row_ms.setdefault(int(sid), ms)
                if job_seen and int(sid) not in job_ms:
                    job_ms[int(sid)] = ms
                    new_jobs += 1
            if new_jobs:
                bounds.append((recv - max(prev_sent, at)) * 1000)
            prev_sent = sent
            if len(row_ms) < n:
                time.sleep(POLL_S)
    return {
        "first_ms": min(row_ms.values()),
        "all_ms": max(row_ms.values()),
        "job_ms": job_ms,
        "polls": polls,
        "late_bound_max": max(bounds, default=float("nan")),
    }


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
    visible: list[dict[str, Any]] = []
    for tick in ticks:
        wait = tick.timestamp() - time.time() - 0.05
        if wait > 0:
            say(f"  waiting {wait:.0f} s for the tick at {tick:%H:%M:%S} ...")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if b.lg.stack is not None:
                    b.lg.stack.check()
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        visible.append(watch_tick(b, tick, lo, hi, a.schedules))
        v = visible[-1]
        say(
            f"  tick {tick:%H:%M:%S}: first tick rows visible after {v['first_ms']:.0f} ms, all"
            f" {a.schedules:,} after {v['all_ms']:.0f} ms; {len(v['job_ms']):,} jobs seen (bench clock, polled"
            f" every {POLL_S * 1000:.0f} ms, {v['polls']} polls, each first sight at most"
            f" {v['late_bound_max']:.0f} ms after the commit)"
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
    # From the ledger: tick -> the job's created_at (the firing transaction's start), -> the
    # tick row's fired_at and -> handler start; the fired ticks' schedules, for the poller's times.
    rows_sql = sa.text("""
SELECT t.schedule_id, t.scheduled_for,
       extract(epoch FROM j.created_at - t.scheduled_for) * 1000 AS created_ms,
       extract(epoch FROM t.fired_at - t.scheduled_for) * 1000 AS fired_ms,
       extract(epoch FROM j.started_at - t.scheduled_for) * 1000 AS start_ms,
       j.state, j.created_at
FROM schedule_ticks AS t JOIN jobs AS j ON j.id = t.job_id
WHERE t.status = 'fired' AND t.schedule_id BETWEEN :lo AND :hi AND t.scheduled_for = ANY(:ticks)""")
    with b.engine.connect() as conn:
        rows = conn.execute(rows_sql, {"lo": lo, "hi": hi, "ticks": ticks}).all()
    per_tick: list[dict[str, Any]] = []
    delays: list[float] = []
    unseen = 0
    for tick, vis in zip(ticks, visible, strict=True):
        mine = [r for r in rows if r.scheduled_for == tick]
        # The figure: tick -> the first poll that saw the job (the firing committed).
        d = [vis["job_ms"][r.schedule_id] for r in mine if r.schedule_id in vis["job_ms"]]
        unseen += len(mine) - len(d)
        delays += d
        c = [float(r.created_ms) for r in mine]
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
                "created_p50": med(c),
                "created_p99": percentile(c, 0.99),
                "created_max": max(c, default=float("nan")),
                "start_p99": percentile(st, 0.99),
                **{k: v for k, v in vis.items() if k != "job_ms"},
            }
        )
    if unseen:
        say(f"  warning: {unseen} fired ticks' jobs were never seen by the poller (left out of the delay)")
    created = [float(r.created_ms) for r in rows]
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
        "delay_p50": med(delays),
        "delay_p99": percentile(delays, 0.99),
        "delay_max": max(delays, default=float("nan")),
        "delay_unseen": unseen,
        "late_bound_max": max(v["late_bound_max"] for v in visible),
        "created_p50": med(created),
        "created_p99": percentile(created, 0.99),
        "created_max": max(created, default=float("nan")),
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
