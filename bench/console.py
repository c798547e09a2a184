"""The console on a big ledger: every panel's and CLI listing's query, timed.

    python bench/console.py [--jobs 1000000] [--runs 20] [--range 3600] [--keep] [--reuse URL]
                            [--only PATTERN] [--explain-over 150]

In a scratch database on the server of ORCH_DATABASE_URL (`orch_bench_console_*`, dropped
on exit and on Ctrl-C unless --keep), bench/console_seed.py seeds --jobs jobs and about 5
history rows per job over the last 20 days, 8 tenants, 6 job types on 3 queues, 32 sources,
DAG runs, schedules with their ticks and windows, backfills, watermarks, and the counters and
samples the ledger keeps, then runs VACUUM ANALYZE. Retention is active: before the timings,
core.control.retention.prune runs once (30 days, outbox 7: it removes the events older than 7
days and nothing else), and its seconds and what it removed are reported.

Then every read the console and the CLI make is called as they call it (a local principal;
no tenant and the largest tenant where the page or command offers the filter; the pages'
default time range, --range): each read model of dashboards/ (panels sharing one share its
run, as the console's Panels runs it once per render), the pages' own core.queries calls, and
the CLI's listings on the CLI's engine (core.ledger.db.create_engine: generic plans). Each is
called once to warm up, then --runs times; p50 and p95 (nearest rank) of the in-process time.
For every item whose p95 exceeds --explain-over ms, its SQL (captured with SQLAlchemy's
before_cursor_execute) is run under EXPLAIN (ANALYZE, BUFFERS) and the plans' top lines
printed (the CLI's as generic plans, through PREPARE / EXECUTE).

The table goes to stdout; the last line is JSON {"jobs", "panels": {item: {"p50_ms",
"p95_ms"}}, "max_p95_ms", "seed_s", "prune_s", ...}. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import console_seed as seeding  # noqa: E402 - needs ROOT on sys.path when run as a script
from bench import throughput  # noqa: E402

TARGET_MS = 150.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the scratch database -------------------------------------------------------------------


def server_url() -> tuple[str, Any]:
    """ORCH_DATABASE_URL, or the embedded PostgreSQL of `orch up` (no Redis: nothing rings)."""
    from core.settings import get_settings
    from worker.devtools import services

    s = get_settings()
    if s.database_url:
        return s.database_url, None
    embedded = services.EmbeddedServices(s.data_dir)
    return embedded.start(postgres=True, redis=False).database_url, embedded


@contextlib.contextmanager
def scratch_database(server: str, keep: list[bool]) -> Iterator[str]:
    """As throughput.scratch_database (created, migrated with db.upgrade, dropped on exit, on
    Ctrl-C and on SIGTERM), except that it stays when keep[0] is True by then."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from core.ledger import db

    url = sa.make_url(server)
    name = f"orch_bench_console_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    scratch = url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = db.create_engine(scratch, application_name="orch-bench-migrate")
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
        yield scratch
    finally:
        if keep[0]:
            say(f"kept the scratch database: --reuse {scratch}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the timed items ------------------------------------------------------------------------


@dataclasses.dataclass
class Item:
    name: str
    engine: str  # "console" or "cli"
    fn: Callable[[Any], Any]
    #: Other panels drawn from the same read model (the console runs it once for all).
    also: tuple[str, ...] = ()
    samples: list[float] = dataclasses.field(default_factory=list)
    rows: int = 0
    error: str | None = None

    def p(self, q: float) -> float:
        s = sorted(self.samples)
        return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")


def rows_of(out: Any) -> int:
    if isinstance(out, list):
        return len(out)
    if isinstance(out, tuple):
        return sum(rows_of(x) for x in out)
    if isinstance(out, dict):
        for key in ("jobs", "ticks", "window_rows", "by_state", "windows"):
            if isinstance(out.get(key), list | dict):
                return len(out[key])
        return 1
    if hasattr(out, "number_of_nodes"):
        return int(out.number_of_nodes())
    return 1


@dataclasses.dataclass(frozen=True)
class Subjects:
    """The rows the detail views show: a job with logs and an artifact, a run that failed, a
    schedule firing every 15 minutes, a paused one, a running backfill, a source."""

    tenant: str
    job: int
    run: int
    schedule: tuple[str, str]
    paused: tuple[str, str]
    backfill: int
    source: tuple[str, str]
    stream_target: Any


def subjects(engine: Any, tenant: str) -> Subjects:
    import sqlalchemy as sa

    from core.control import Target

    def one(sql: str) -> Any:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).one()

    half = "(SELECT max(id) / 2 FROM jobs)"
    job = one(
        f"SELECT job_id FROM artifacts WHERE job_id > {half} AND job_id IN (SELECT job_id FROM job_logs)"
        " ORDER BY job_id LIMIT 1"
    )[0]
    run = one("SELECT id FROM runs WHERE state = 'failed' ORDER BY id DESC LIMIT 1")[0]
    sched = "SELECT t.name, s.name FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id WHERE "
    schedule = tuple(one(sched + f"t.name = '{tenant}' AND s.name LIKE 'q-%' ORDER BY s.id LIMIT 1"))
    paused = tuple(one(sched + "s.paused ORDER BY s.id LIMIT 1"))
    backfill = one("SELECT id FROM backfills WHERE state = 'running' AND schedule_id IS NULL ORDER BY id LIMIT 1")[0]
    kind, target = one(f"SELECT s.target_kind, s.target {sched[sched.index('FROM') :]} t.name = '{tenant}' LIMIT 1")
    return Subjects(tenant, job, run, schedule, paused, backfill, (tenant, "feed-a"), Target.load(kind, target))


def items(s: Subjects, range_s: int) -> list[Item]:
    from core import control, queries
    from core.domain.auth import local_principal
    from core.queries import schedule_views
    from dashboards import panels, read_models
    from dashboards.read_models import Filters

    p = local_principal("bench")
    out: list[Item] = []

    def add(name: str, fn: Callable[[Any], Any], engine: str = "console", *, tenanted: bool = False) -> None:
        """`fn(conn, tenant)`; with `tenanted`, once for every tenant and once for the largest."""
        for t in (None, s.tenant) if tenanted else (None,):
            out.append(Item(name if t is None else f"{name}[{t}]", engine, lambda c, t=t: fn(c, t)))

    # The panels of dashboards/: one item per read model, named by its first panel.
    by_model: dict[str, list[str]] = {}
    for panel in panels.PANELS:
        if panel.read_model is not None:
            by_model.setdefault(panel.read_model, []).append(panel.key)
    for model, keys in by_model.items():
        for t in (None, s.tenant):
            suffix, f = "" if t is None else f"[{t}]", Filters(tenant=t, since_s=range_s)

            def run(c: Any, m: str = model, f: Filters = f) -> Any:
                return read_models.run(m, c, p, f)

            out.append(Item(f"panel.{keys[0]}{suffix}", "console", run, tuple(f"panel.{k}{suffix}" for k in keys[1:])))
    # Overview, Jobs, Dead letters, Audit, Sources, Rate limits, Runs, Schedules, Backfills, Watermarks.
    add("pick.tenants", lambda c, t: queries.tenants(c, p))
    add("pick.job_types", lambda c, t: queries.job_types(c, p))
    add("home.job_stats", lambda c, t: queries.job_stats(c, p, tenant=t), tenanted=True)
    add("home.run_time_summary", lambda c, t: queries.run_time_summary(c, p, since_s=3600, tenant=t), tenanted=True)
    add("runs.overview", lambda c, t: queries.runs_overview(c, p, tenant=t), tenanted=True)
    jobs = queries.list_jobs
    add("jobs.list", lambda c, t: jobs(c, p, tenant=t, limit=200, since_s=range_s), tenanted=True)
    add("jobs.list[dead_lettered]", lambda c, t: jobs(c, p, state="dead_lettered", limit=200, since_s=range_s))
    add("jobs.list[queued]", lambda c, t: jobs(c, p, state="queued", limit=200, since_s=range_s))
    add("jobs.list[bench.report]", lambda c, t: jobs(c, p, job_type="bench.report", limit=200, since_s=range_s))
    add("jobs.get", lambda c, t: queries.get_job(c, p, s.job))
    add("jobs.history", lambda c, t: queries.job_history(c, p, s.job))
    add("jobs.logs", lambda c, t: queries.job_logs(c, p, s.job))
    add("jobs.artifacts", lambda c, t: queries.job_artifacts(c, p, s.job))
    add("dead_letters.clusters", lambda c, t: queries.dead_letter_clusters(c, p, tenant=t, limit=50), tenanted=True)
    add("audit.list", lambda c, t: queries.audit_log(c, p, tenant=t, limit=100), tenanted=True)
    add("audit.verify", lambda c, t: queries.verify_audit(c, p))
    add("sources.list", lambda c, t: queries.sources(c, p, tenant=t), tenanted=True)
    add("sources.show", lambda c, t: queries.source(c, p, tenant=s.source[0], name=s.source[1]))
    add("sources.rates", lambda c, t: read_models.source_rates(c, p, tenant=s.tenant, source="feed-a", since_s=range_s))
    add(
        "rate_limits.changes", lambda c, t: queries.throttles(c, p, tenant=t, since_s=range_s, limit=500), tenanted=True
    )
    add("runs.list", lambda c, t: queries.list_runs(c, p, tenant=t, limit=50), tenanted=True)
    add("runs.get", lambda c, t: queries.get_run(c, p, s.run))
    add("runs.timeline", lambda c, t: queries.run_timeline(c, p, s.run))
    add("schedules.list", lambda c, t: queries.list_schedules(c, p, tenant=t), tenanted=True)
    add("schedules.get", lambda c, t: queries.get_schedule(c, p, *s.schedule, ticks=50, next_n=10))
    add("schedules.paused_ticks", lambda c, t: schedule_views.paused_ticks(c, p, *s.paused))
    add("backfills.list", lambda c, t: queries.list_backfills(c, p, tenant=t, limit=100), tenanted=True)
    add("backfills.get", lambda c, t: queries.get_backfill(c, p, s.backfill, windows=200))
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    spec = control.BackfillSpec(s.tenant, s.stream_target, now - dt.timedelta(days=2), now - dt.timedelta(days=1))
    add(
        "backfills.preview",
        lambda c, t: control.create_backfill(c.engine, p, spec, reason=None, ticket=None, dry_run=True),
    )
    add("watermarks.list", lambda c, t: queries.list_watermarks(c, p, tenant=t), tenanted=True)
    add("watermarks.series", lambda c, t: queries.watermark_series(c, p, tenant=t, since_s=range_s), tenanted=True)
    # The CLI's listings and shows, with their default limits, on the CLI's engine.
    cli = "cli"
    add("cli.jobs.list", lambda c, t: jobs(c, p, tenant=t, limit=50), cli, tenanted=True)
    add(
        "cli.jobs.show",
        lambda c, t: (
            queries.get_job(c, p, s.job),
            queries.job_history(c, p, s.job),
            queries.job_logs(c, p, s.job),
            queries.job_artifacts(c, p, s.job),
        ),
        cli,
    )
    add("cli.jobs.stats", lambda c, t: queries.job_stats(c, p, tenant=t), cli, tenanted=True)
    add("cli.dlq.list", lambda c, t: queries.dead_letters(c, p, tenant=t, limit=100), cli, tenanted=True)
    add(
        "cli.errors.clusters",
        lambda c, t: queries.error_clusters(c, p, tenant=t, since_s=3600, limit=20),
        cli,
        tenanted=True,
    )
    add("cli.audit.list", lambda c, t: queries.audit_log(c, p, tenant=t, limit=100), cli)
    add("cli.sources.list", lambda c, t: queries.sources(c, p, tenant=t), cli, tenanted=True)
    add("cli.sources.show", lambda c, t: queries.source(c, p, tenant=s.source[0], name=s.source[1]), cli)
    add("cli.blackouts.list", lambda c, t: queries.blackouts(c, p, tenant=t), cli)
    add("cli.quotas.list", lambda c, t: (queries.quotas(c, p, tenant=t), queries.backlog_limits(c, p, tenant=t)), cli)
    add("cli.runs.list", lambda c, t: queries.list_runs(c, p, tenant=t, limit=50), cli, tenanted=True)
    add("cli.runs.show", lambda c, t: queries.get_run(c, p, s.run), cli)
    add("cli.runs.graph", lambda c, t: queries.graph_json(queries.run_graph(c, p, s.run))["nodes"], cli)
    add("cli.schedules.list", lambda c, t: queries.list_schedules(c, p, tenant=t, limit=1000), cli, tenanted=True)
    add("cli.schedules.show", lambda c, t: queries.get_schedule(c, p, *s.schedule, ticks=50), cli)
    add("cli.backfill.list", lambda c, t: queries.list_backfills(c, p, tenant=t, limit=100), cli, tenanted=True)
    add("cli.backfill.show", lambda c, t: queries.get_backfill(c, p, s.backfill), cli)
    add("cli.watermarks.list", lambda c, t: queries.list_watermarks(c, p, tenant=t), cli, tenanted=True)
    return out


# -- timing and plans -----------------------------------------------------------------------


class Capture:
    """The statements an engine sends while on (SQLAlchemy's before_cursor_execute)."""

    def __init__(self, engine: Any) -> None:
        import sqlalchemy as sa

        self.on = False
        self.got: list[tuple[str, Any]] = []
        sa.event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if self.on:
            self.got.append((statement, parameters))


def engines(url: str) -> dict[str, Any]:
    """The console's engine (app/common.py's _engine: plain SQLAlchemy, psycopg's defaults)
    and the CLI's (worker/cli/common.py: core.ledger.db.create_engine, generic plans)."""
    import sqlalchemy as sa

    from core.ledger import db

    console = sa.create_engine(
        url,
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,
        connect_args={"application_name": "orch-console", "connect_timeout": 5},
    )
    return {"console": console, "cli": db.create_engine(url, pool_size=2, application_name="orch-cli", pre_ping=True)}


def time_items(todo: list[Item], eng: dict[str, Any], runs: int) -> None:
    conns = {k: e.connect() for k, e in eng.items()}
    try:
        for n, it in enumerate(todo, 1):
            conn = conns[it.engine]
            try:
                for r in range(runs + 1):
                    t = time.perf_counter()
                    out = it.fn(conn)
                    ms = (time.perf_counter() - t) * 1000
                    conn.rollback()
                    if r:
                        it.samples.append(ms)
                    else:
                        it.rows = rows_of(out)
            except Exception as exc:  # a broken read is a finding: report it and go on
                conn.rollback()
                it.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            say(f"[{n}/{len(todo)}] {it.name:<44} p50 {it.p(0.5):8.1f} ms  p95 {it.p(0.95):8.1f} ms  rows {it.rows}")
    finally:
        for c in conns.values():
            c.close()


def explain(it: Item, eng: dict[str, Any], caps: dict[str, Capture], top: int = 12) -> list[str]:
    """The plans of the item's SELECTs under EXPLAIN (ANALYZE, BUFFERS), slowest first."""
    cap = caps[it.engine]
    with eng[it.engine].connect() as conn:
        cap.got, cap.on = [], True
        try:
            it.fn(conn)
        finally:
            cap.on = False
            conn.rollback()
        plans = []
        for statement, params in cap.got:
            if not re.match(r"\s*(/\*.*?\*/\s*)?(SELECT|WITH)\b", statement, re.S | re.I):
                continue
            lines = plan_lines(conn, statement, params, generic=it.engine == "cli")
            ms = next((float(m[1]) for line in lines if (m := re.search(r"Execution Time: ([\d.]+)", line))), 0.0)
            plans.append((ms, statement, lines))
            conn.rollback()
    out = []
    for ms, statement, lines in sorted(plans, key=lambda x: -x[0])[:2]:
        sql = " ".join(statement.split())
        out += [f"  -- {ms:.1f} ms: {sql[:300]}{' ...' if len(sql) > 300 else ''}"]
        # The top of the plan, then the scans and filters below it (where the rows come from).
        deeper = [line for line in lines[top:] if re.search(r"Scan|Filter|Cond:|Rows Removed|Time:", line)]
        out += ["     " + line for line in lines[:top] + deeper[-16:]]
    return out


def plan_lines(conn: Any, statement: str, params: Any, *, generic: bool) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS): the custom plan the console's psycopg gets, or for the CLI
    (plan_cache_mode=force_generic_plan, statements prepared) the generic plan, through a
    PREPARE whose $n replace the named parameters."""
    raw = conn.connection.driver_connection
    if generic and isinstance(params, dict) and params:
        import psycopg.sql

        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m[1] not in names:
                names.append(m[1])
            return f"${names.index(m[1]) + 1}"

        body = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
        args = ", ".join(psycopg.sql.Literal(params[k]).as_string(raw) for k in names)
        try:
            with raw.cursor() as cur:
                cur.execute(f"PREPARE bench_plan AS {body}")
                cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_plan({args})")
                lines = ["(generic plan)"] + [r[0] for r in cur.fetchall()]
                cur.execute("DEALLOCATE bench_plan")
                return lines
        except Exception as exc:
            raw.rollback()
            note = f"(no generic plan: {str(exc).splitlines()[0][:80]}; custom plan)"
    else:
        note = "(custom plan)"
    with raw.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params or None)
        return [note] + [r[0] for r in cur.fetchall()]


# -- main -----------------------------------------------------------------------------------


def prune(url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from core.control import retention
    from core.ledger import db

    engine = db.create_engine(url, application_name="orch-bench-prune")
    try:
        result = retention.prune(engine, default_days=30, outbox_days=7)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) events"))  # as autovacuum would after the deletes
    finally:
        engine.dispose()
    return result.as_dict()


def roll_up(url: str) -> dict[str, Any]:
    """The scheduler's rollup step (core.ledger.rollups.roll_up) to the end, as the scheduler
    would have run it while the ledger filled; then ANALYZE of its tables (autovacuum is off)."""
    import sqlalchemy as sa

    from core.ledger import db, rollups

    engine = db.create_engine(url, application_name="orch-bench-rollup")
    try:
        db.upgrade(engine)  # a database kept by an older version of this bench gets the rollups
        result = rollups.roll_up(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE job_finish_rollups, job_state_totals, rollup_marks"))
    finally:
        engine.dispose()
    return {"seconds": round(result.seconds, 3), "jobs": result.jobs, "transactions": result.transactions}


def report(
    todo: list[Item],
    a: argparse.Namespace,
    jobs: int,
    seed_s: float | None,
    pruned: dict[str, Any],
    rolled: dict[str, Any],
) -> None:
    print(f"\n{'item':<46} {'p50 ms':>9} {'p95 ms':>9} {'rows':>7}")
    panels: dict[str, dict[str, float | None]] = {}
    for it in todo:
        mark = "" if it.error or it.p(0.95) <= TARGET_MS else "  > 150"
        also = f"  (also {', '.join(it.also)})" if it.also else ""
        if it.error:
            print(f"{it.name:<46} {'error':>9} {'':>9} {'':>7}  {it.error}")
        else:
            print(f"{it.name:<46} {it.p(0.5):9.1f} {it.p(0.95):9.1f} {it.rows:7}{mark}{also}")
        for name in (it.name, *it.also):
            ok = not it.error
            panels[name] = {
                "p50_ms": round(it.p(0.5), 2) if ok else None,
                "p95_ms": round(it.p(0.95), 2) if ok else None,
            }
    p95s = [v["p95_ms"] for v in panels.values() if v["p95_ms"] is not None]
    print(f"\nrollup step: {rolled['seconds']:.3f} s, {rolled['jobs']} jobs in {rolled['transactions']} transactions")
    print(f"retention prune: {pruned['seconds']:.3f} s, removed {pruned['removed']}")
    result = {
        "jobs": jobs,
        "panels": panels,
        "max_p95_ms": max(p95s, default=None),
        "seed_s": None if seed_s is None else round(seed_s, 1),
        "rollup_s": rolled["seconds"],
        "rollup_jobs": rolled["jobs"],
        "prune_s": pruned["seconds"],
        "prune_removed": pruned["removed"],
        "runs": a.runs,
        "range_s": a.range,
        "over_target": sorted(k for k, v in panels.items() if v["p95_ms"] is not None and v["p95_ms"] > TARGET_MS),
        "errors": sorted(it.name for it in todo if it.error),
    }
    print(json.dumps(result))


def measure(url: str, a: argparse.Namespace, seed_s: float | None) -> None:
    import sqlalchemy as sa

    from bench.console_seed import TENANTS

    say("rollup step (the scheduler's, to the end) ...")
    rolled = roll_up(url)
    say(f"  {rolled['seconds']:.3f} s, {rolled['jobs']} jobs in {rolled['transactions']} transactions")
    say("retention prune (30 days, outbox 7) ...")
    pruned = prune(url)
    say(f"  {pruned['seconds']:.3f} s, removed {pruned['removed']}")
    eng = engines(url)
    try:
        with eng["console"].connect() as conn:
            jobs = int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
        todo = [it for it in items(subjects(eng["console"], TENANTS[0]), a.range) if re.search(a.only, it.name)]
        caps = {k: Capture(e) for k, e in eng.items()}
        say(f"timing {len(todo)} items, 1 warm-up + {a.runs} runs each ...")
        time_items(todo, eng, a.runs)
        slow = [it for it in todo if not it.error and it.p(0.95) > a.explain_over]
        if slow:
            print(f"Plans of the items over {a.explain_over:g} ms (p95), slowest statements first:")
        for it in slow:
            print(f"\n{it.name}: p50 {it.p(0.5):.1f} ms, p95 {it.p(0.95):.1f} ms")
            print("\n".join(explain(it, eng, caps)))
        report(todo, a, jobs, seed_s, pruned, rolled)
    finally:
        for e in eng.values():
            e.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20, help="timed calls per item after one warm-up")
    ap.add_argument("--range", type=int, default=3600, help="time range of the panels, seconds (the pages' default)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database and print its URL")
    ap.add_argument("--reuse", metavar="URL", help="time a database seeded by an earlier --keep run (no seeding)")
    ap.add_argument("--only", default="", metavar="PATTERN", help="time only items whose name matches this regex")
    ap.add_argument("--explain-over", type=float, default=TARGET_MS, help="EXPLAIN items with a p95 over this (ms)")
    a = ap.parse_args()
    if a.jobs < 10_000 or a.runs < 1:
        ap.error("--jobs must be at least 10000 and --runs at least 1")
    throughput.exit_on_sigterm()
    if a.reuse:
        measure(a.reuse, a, None)
        return
    server, embedded = server_url()
    keep = [False]
    try:
        with scratch_database(server, keep) as url:
            from core.ledger import db

            started = time.monotonic()
            engine = db.create_engine(url, application_name="orch-bench-seed")
            try:
                say(f"seeding {a.jobs:,} jobs ...")
                tenants, sources = seeding.configure(engine)
                made = seeding.seed(engine, a.jobs, tenants, sources, say)
            finally:
                engine.dispose()
            seed_s = time.monotonic() - started
            say(f"seeded in {seed_s:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in made.items()))
            keep[0] = a.keep
            measure(url, a, seed_s)
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
