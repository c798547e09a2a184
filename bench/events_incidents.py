"""The incidents piece of bench/events.py: a scheduler pass's incident evaluation on a big
ledger where nothing is wrong. The ledger is bench/console.py's (console_seed.py: jobs over
20 days with their history, runs, schedules, sources with circuits, ...), rolled up as the
scheduler would have; what in it would open an incident (its live jobs at the young end
include throttled and long-queued ones, its circuits were opened minutes ago) is cleared
first: waiting jobs canceled, circuits closed, dead letters of the window moved before it.
Then `control.evaluate_incidents(engine, policy)` with the default policy, on an engine as
`orch scheduler` builds it, after a warm-up; and the fast-burn read (every 30 s) beside it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

WARM_UP = 3


def measure(server: str, a: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from bench import console, throughput
    from bench import console_seed as seeding
    from core.ledger import db

    with throughput.scratch_database(server, "orch_bench_events_incidents") as url:
        started = time.monotonic()
        engine = db.create_engine(url, application_name="orch-bench-seed")
        try:
            say(f"incidents: seeding {a.ledger_jobs:,} jobs as bench/console.py does ...")
            tenants, sources = seeding.configure(engine)
            seeding.seed(engine, a.ledger_jobs, tenants, sources, say)
        finally:
            engine.dispose()
        seed_s = time.monotonic() - started
        say(f"  seeded in {seed_s:.0f} s; the rollup step ...")
        console.roll_up(url)
        return time_passes(url, a, say) | {"seed_s": round(seed_s, 1)}


def time_passes(url: str, a: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import sqlalchemy as sa

    from bench.events_sse import percentile
    from core import control
    from core.control import incidents
    from core.domain import slo
    from core.ledger import db
    from core.settings import get_settings

    settings = get_settings()
    policy = settings.incident_policy()
    engine = db.create_engine(url, pool_size=3, application_name="orch-scheduler", ordered_scans=True)
    try:
        with engine.connect() as conn:
            found = incidents.conditions(conn, policy)
            jobs = int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
        seeded: dict[str, int] = {}
        for c in found:
            seeded[c.kind] = seeded.get(c.kind, 0) + 1
        say(f"  conditions as seeded (by kind): {seeded or 'none'}")
        cleared = clear(engine, policy, found)
        with engine.connect() as conn:
            left = incidents.conditions(conn, policy)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) jobs, sources, incidents, incident_pending"))
        say(f"  cleared: {cleared or 'nothing'}; left: {len(left)}")
        say(f"  control.evaluate_incidents: {WARM_UP} warm-up + {a.passes} timed passes ...")
        times: list[float] = []
        opened = 0
        for i in range(WARM_UP + a.passes):
            t = time.perf_counter()
            result = control.evaluate_incidents(engine, policy)
            ms = (time.perf_counter() - t) * 1000
            opened += len(result.opened)
            if i >= WARM_UP:
                times.append(ms)
        burn: list[float] = []
        burning = 0
        for _ in range(1 + 5):
            t = time.perf_counter()
            burning = len(incidents.burn_conditions(engine, slo.Slo(target=settings.slo_target)))
            burn.append((time.perf_counter() - t) * 1000)
        burn = burn[1:]
    finally:
        engine.dispose()
    out = {
        "p50": round(float(percentile(times, 0.5) or 0), 2),
        "p95": round(float(percentile(times, 0.95) or 0), 2),
        "max": round(max(times), 2),
        "jobs": jobs,
        "passes": a.passes,
        "seeded_conditions": seeded,
        "cleared": cleared,
        "conditions_left": len(left),
        "incidents_opened": opened,
        "burn_p50": round(float(percentile(burn, 0.5) or 0), 2),
        "burn_conditions": burning,
    }
    say(f"  p50 {out['p50']} ms, p95 {out['p95']} ms, max {out['max']} ms")
    return out


def clear(engine: Any, policy: Any, found: list[Any]) -> dict[str, int]:
    """Make the seeded ledger one where nothing is wrong; returns what was changed."""
    import sqlalchemy as sa

    from core.ledger import jobs as ledger

    done: dict[str, int] = {}
    kinds = {c.kind for c in found}
    if kinds & {"sustained_throttling", "stuck_job"}:
        with engine.begin() as conn:
            waiting = [
                int(r[0])
                for r in conn.execute(sa.text("SELECT id FROM jobs WHERE state IN ('queued', 'throttled', 'retrying')"))
            ]
            ledger.cancel_waiting_jobs(conn, waiting, actor="bench", reason="bench/events.py: nothing wrong")
        done["waiting_jobs_canceled"] = len(waiting)
    if "stuck_job" in kinds:
        with engine.begin() as conn:
            done["running_jobs_restarted"] = conn.execute(
                sa.text(
                    "UPDATE jobs SET started_at = now() WHERE state IN ('leased', 'running')"
                    " AND started_at < now() - make_interval(secs => :s)"
                ),
                {"s": policy.running_s},
            ).rowcount
    if "circuit_open" in kinds:
        with engine.begin() as conn:
            done["circuits_closed"] = conn.execute(
                sa.text(
                    "UPDATE sources SET circuit_state = 'closed', circuit_since = now(), circuit_until = NULL,"
                    " circuit_probes = 0 WHERE circuit_state <> 'closed'"
                )
            ).rowcount
    if "dlq_growth" in kinds:
        with engine.begin() as conn:
            done["dead_letters_moved"] = conn.execute(
                sa.text(
                    "UPDATE jobs SET finished_at = now() - make_interval(secs => :w + 60)"
                    " WHERE state = 'dead_lettered' AND finished_at > now() - make_interval(secs => :w)"
                    " AND started_at < now() - make_interval(secs => :w + 60)"
                ),
                {"w": policy.dlq_window_s},
            ).rowcount
    return done
