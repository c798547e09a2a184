"""`orch db upgrade | worker | scheduler | exporter | console`: the long-running processes
around the ledger, and the ledger's migration. `orch up` (worker.cli.up) runs them together."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import control
from core.domain import errors, slo
from core.ledger import db
from core.settings import Settings, get_settings
from worker.cli.common import Context, print_json, stop_on_signals, to_int


def cmd_db_upgrade(ctx: Context) -> int:
    from worker.runtime import pool

    rev = db.upgrade(ctx.engine)
    handlers = pool.load_handlers(ctx.settings.handler_module_list())
    control.register_job_types(ctx.engine, [h.job_type_row() for h in handlers.values()])
    print(f"ledger at revision {rev} ({db.describe(ctx.engine.url)}); {len(handlers)} job types registered")
    return 0


def cmd_ledger_prune(ctx: Context) -> int:
    from core.control import retention

    a = ctx.args
    s = ctx.settings
    result = retention.prune_by_hand(
        ctx.engine,
        ctx.principal,
        default_days=s.retention_days,
        outbox_days=s.outbox_retention_days,
        dry_run=a.dry_run,
        reason=a.reason,
    )
    if a.json:
        print_json(result.as_dict())
        return 0
    removed = result.as_dict()["removed"]
    verb = "would remove" if a.dry_run else "removed"
    shown = ", ".join(f"{n} {k}" for k, n in removed.items() if n is not None)
    print(f"{verb}: {shown} (retention {s.retention_days} days, outbox {s.outbox_retention_days} days)")
    return 0


def cmd_ledger_retention(ctx: Context) -> int:
    from core.control import retention

    a = ctx.args
    if (a.days is None) == (not a.default):
        raise errors.InvalidInput("give --days N or --default")
    retention.set_tenant_retention(ctx.engine, ctx.principal, a.tenant, a.days, reason=a.reason)
    kept = f"{a.days} days" if a.days is not None else f"the default ({ctx.settings.retention_days} days)"
    if a.json:
        print_json({"tenant": a.tenant, "retention_days": a.days})
    else:
        print(f"tenant {a.tenant}: finished work is kept {kept}")
    return 0


def pool_config(ctx: Context) -> Any:
    """The worker pool's shape from --processes, --threads, --queues and --handlers."""
    from worker.runtime import pool

    a = ctx.args
    if not 1 <= a.processes <= 64 or not 1 <= a.threads <= 256:
        raise errors.InvalidInput("--processes must be 1..64 and --threads 1..256")
    queues = [q for q in (a.queues or ctx.settings.queues).split(",") if q]
    modules = [m for m in (a.handlers or ctx.settings.handler_modules).split(",") if m]
    return pool.PoolConfig(processes=a.processes, threads=a.threads, queues=queues, handler_modules=modules)


def export_urls(db_url: str, redis_url: str) -> None:
    """Child processes (spawned) read their settings from the environment: only the URLs of
    the ledger and the broker are put there, never a token."""
    os.environ["ORCH_DATABASE_URL"] = db_url
    os.environ["ORCH_REDIS_URL"] = redis_url
    get_settings.cache_clear()


def cmd_worker(ctx: Context) -> int:
    from worker.runtime import logs, pool

    logs.configure("supervisor")
    db_url, redis_url = ctx.urls()
    if not redis_url:
        raise errors.InvalidInput("a worker needs Redis: set ORCH_REDIS_URL or start `orch up`")
    config = pool_config(ctx)
    db.check_connection(ctx.engine)
    export_urls(db_url, redis_url)
    sup = pool.Supervisor(config, get_settings())
    stop_on_signals(sup.stopping)
    server = None
    if ctx.args.metrics:
        sup.prepare_metrics()
        server = serve_metrics(None, get_settings())
    sup.run()
    if server is not None:
        server.shutdown()
    return 0


def scheduler_for(ctx: Context, redis_url: str) -> Any:
    """A Scheduler on its own engine and broker connection."""
    from worker.runtime import broker, scheduler

    b = broker.build_broker(redis_url, namespace=ctx.settings.broker_namespace)
    broker.check_redis(b)
    engine = db.create_engine(ctx.urls()[0], pool_size=3, application_name="orch-scheduler", ordered_scans=True)
    return scheduler.Scheduler(engine, b, broker.RedisDoorbell(b), ctx.settings)


def cmd_scheduler(ctx: Context) -> int:
    from worker.runtime import logs

    logs.configure("scheduler")
    _, redis_url = ctx.urls()
    if not redis_url:
        raise errors.InvalidInput("the scheduler needs Redis: set ORCH_REDIS_URL or start `orch up`")
    db.check_connection(ctx.engine)
    stop = threading.Event()
    stop_on_signals(stop)
    server = serve_metrics(None, ctx.settings) if ctx.args.metrics else None
    scheduler_for(ctx, redis_url).run(stop)
    if server is not None:
        server.shutdown()
    return 0


def cmd_exporter(ctx: Context) -> int:
    from worker.runtime import exporter, logs

    logs.configure("exporter")
    s = ctx.settings
    if s.metrics_dir is not None:
        os.environ[exporter.ENV] = str(s.metrics_dir)  # this host's worker files
    server = serve_metrics(ctx.engine, s)
    if server is None:
        return 6
    stop = threading.Event()
    stop_on_signals(stop)
    stop.wait()
    server.shutdown()
    return 0


def serve_metrics(engine: sa.Engine | None, s: Settings) -> Any:
    """Serve /metrics on ORCH_METRICS_HOST/PORT; None (after a one-line error) when the port
    cannot be bound."""
    from worker.runtime import exporter

    try:
        server = exporter.serve(engine, s.metrics_host, s.metrics_port, slo.Slo(target=s.slo_target))
    except OSError as exc:
        print(
            f"orch: error: cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror} "
            "(set ORCH_METRICS_PORT)",
            file=sys.stderr,
        )
        return None
    print(f"metrics: http://{s.metrics_host}:{s.metrics_port}/metrics", flush=True)
    return server


def console_home() -> Path:
    """app/Home.py of the installed `app` package, from a checkout or a wheel alike (found
    without importing it). Raises InvalidInput when the console is not installed."""
    spec = importlib.util.find_spec("app")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        home = Path(location) / "Home.py"
        if home.is_file():
            return home
    raise errors.InvalidInput("the console is not installed: the `app` package of orch (app/Home.py) is missing")


#: Streamlit options the console always runs with: no browser, no usage statistics, and a
#: toolbar without the developer's entries (Deploy, Rerun, Clear cache): the console is the
#: product, not a script in development.
CONSOLE_OPTIONS: dict[str, str] = {
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "minimal",
}


def console_command(
    db_url: str, port: int, host: str = "127.0.0.1", token: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The Streamlit command line and environment of the console (`orch console` and `orch up`
    both start it so), with CONSOLE_OPTIONS. `token` (the console's sign-in) goes to the
    console's environment only."""
    env = dict(os.environ, ORCH_DATABASE_URL=db_url)
    if token is not None:
        env["ORCH_CONSOLE_TOKEN"] = token
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(console_home()),
        *(f"--{name}={value}" for name, value in CONSOLE_OPTIONS.items()),
        f"--server.address={host}",
        f"--server.port={port}",
    ]
    return command, env


def cmd_console(ctx: Context) -> int:
    """Run the Streamlit console (app/Home.py) against the ledger other commands use."""
    db_url, _ = ctx.urls()
    port_text = str(ctx.args.port) if ctx.args.port is not None else os.environ.get("ORCH_CONSOLE_PORT", "8501")
    try:
        port = int(port_text)
    except ValueError:
        raise errors.InvalidInput(f"ORCH_CONSOLE_PORT must be a port number, got {port_text!r}") from None
    if not 1 <= port <= 65535:
        raise errors.InvalidInput(f"the console port must be between 1 and 65535, got {port}")
    host = ctx.settings.console_host
    command, env = console_command(db_url, port, host)
    print(f"console: http://{host}:{port} (ledger {db.describe(db_url)}); Ctrl-C stops it", flush=True)
    proc = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached streamlit too: let it stop
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def add_pool_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=to_int, default=2, help="worker processes to run (1..64, default 2)")
    parser.add_argument(
        "--threads", type=to_int, default=8, help="handler threads in each worker process (1..256, default 8)"
    )
    parser.add_argument("--queues", help="comma-separated queues to consume (default ORCH_QUEUES or 'default')")
    parser.add_argument(
        "--handlers", help="comma-separated modules with @job_handler functions (default ORCH_HANDLER_MODULES)"
    )


def register(sub: Any) -> None:
    dbp = sub.add_parser("db", help="ledger schema").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="migrate the ledger to the latest schema (safe to repeat)").set_defaults(
        fn=cmd_db_upgrade
    )
    lp = sub.add_parser("ledger", help="ledger maintenance").add_subparsers(dest="ledger_command", required=True)
    pr = lp.add_parser("prune", help="remove finished work past its retention, as the scheduler does (orch:operate)")
    pr.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")
    pr.add_argument("--reason", help="why, for the audit log (optional)")
    pr.add_argument("--json", action="store_true", help="print the result as JSON")
    pr.set_defaults(fn=cmd_ledger_prune)
    rt = lp.add_parser("retention", help="how long a tenant's finished work is kept (orch:quota)")
    rt.add_argument("--tenant", required=True, help="the tenant")
    rt.add_argument("--days", type=to_int, help="keep finished work this many days (1 to 3650)")
    rt.add_argument("--default", action="store_true", help="back to ORCH_RETENTION_DAYS")
    rt.add_argument("--reason", help="why, for the audit log (required)")
    rt.add_argument("--json", action="store_true", help="print the result as JSON")
    rt.set_defaults(fn=cmd_ledger_retention)
    w = sub.add_parser("worker", help="run a supervised pool of worker processes")
    add_pool_args(w)
    w.add_argument("--metrics", action="store_true", help="serve this pool's /metrics (ORCH_METRICS_HOST/PORT)")
    w.set_defaults(fn=cmd_worker)
    sch = sub.add_parser("scheduler", help="run the scheduler (one leader at a time)")
    sch.add_argument("--metrics", action="store_true", help="serve its /metrics (ORCH_METRICS_HOST/PORT)")
    sch.set_defaults(fn=cmd_scheduler)
    sub.add_parser("exporter", help="serve /metrics (ORCH_METRICS_HOST/PORT)").set_defaults(fn=cmd_exporter)
    con = sub.add_parser("console", help="run the Streamlit console (ORCH_CONSOLE_HOST, default 127.0.0.1)")
    con.add_argument("--port", type=to_int, help="port to serve on (default ORCH_CONSOLE_PORT or 8501)")
    con.set_defaults(fn=cmd_console)
