"""`orch up`: everything on one machine with no configuration: embedded PostgreSQL and Redis
where no URL is set, the migration, /metrics, the HTTP API, the console, a worker pool, the scheduler, and
with --demo the upstream simulator and a demo workload. Ctrl-C stops it all.

The local admin token lives in .orch/admin-token (mode 600) and reaches the console's
environment only: worker processes, and so every job handler, never see it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import control, queries
from core.domain import auth, errors
from core.domain.auth import local_principal
from core.ledger import db
from core.settings import get_settings
from worker.cli import api as api_cli
from worker.cli import processes
from worker.cli.common import Context, stop_on_signals

ADMIN_SUBJECT = "admin"


def admin_token(ctx: Context, data_dir: Path) -> tuple[str, Path]:
    """The local admin token of `orch up`: created on first start, kept in .orch/admin-token
    (mode 600) for the console and for `ORCH_TOKEN=$(cat .orch/admin-token) orch ...`. It
    has every scope: one kept from an older version gets the scopes added since."""
    path = data_dir / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        try:
            control.grant_every_scope(
                ctx.engine, local_principal(), token, reason="orch up: the local admin has every scope"
            )
            return token, path
        except errors.Forbidden:
            pass  # the ledger was reset (or the file holds something else): make a new one
    token = control.create_token(
        ctx.engine,
        local_principal(),
        subject=ADMIN_SUBJECT,
        scopes=auth.ALL_SCOPES,
        tenants=None,
        reason="orch up: local admin token",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, path


def cmd_up(ctx: Context) -> int:
    from worker.devtools import demo, services
    from worker.runtime import logs, pool

    os.environ.setdefault("ORCH_LOG_LEVEL", "WARNING")  # workers inherit it
    logs.configure("up")
    a = ctx.args
    s = ctx.settings
    embedded: services.EmbeddedServices | None = None
    stop = threading.Event()
    stop_on_signals(stop)
    threads: list[threading.Thread] = []
    sup: pool.Supervisor | None = None
    metrics_server: Any = None
    console: Any = None
    api_server: Any = None
    sim: Any = None
    try:
        db_url, redis_url = s.database_url, s.redis_url
        if db_url is None or redis_url is None:
            embedded = services.EmbeddedServices(s.data_dir)
            which = " and ".join(
                n for n, missing in (("PostgreSQL", db_url is None), ("Redis", redis_url is None)) if missing
            )
            print(f"starting embedded {which} under {s.data_dir}/ ...", flush=True)
            urls = embedded.start(postgres=db_url is None, redis=redis_url is None)
            db_url = db_url or urls.database_url
            redis_url = redis_url or urls.redis_url
        processes.export_urls(db_url, redis_url)
        config = processes.pool_config(ctx)
        sup = pool.Supervisor(config, get_settings())
        # Before anything imports prometheus_client: workers and this process share the files.
        sup.prepare_metrics(s.data_dir.resolve() / "metrics")
        ctx = Context(ctx.args)
        rev = db.upgrade(ctx.engine)
        handlers = pool.load_handlers(get_settings().handler_module_list())
        control.register_job_types(ctx.engine, [h.job_type_row() for h in handlers.values()])
        print(f"ledger: {db.describe(ctx.engine.url)} (revision {rev})")
        print(f"broker: {redis_url}")
        token, token_path = admin_token(ctx, s.data_dir)
        print(f"admin token: {token_path} (mode 600; use it as ORCH_TOKEN)")
        metrics_server = processes.serve_metrics(ctx.engine, get_settings())
        if not a.no_api:
            api_engine = db.create_engine(db_url, pool_size=5, application_name="orch-api")
            api_server = api_cli.serve(api_engine, get_settings())
        if not a.no_console:
            command, env = processes.console_command(db_url, get_settings().console_port, token=token)
            console = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            print(f"console: http://127.0.0.1:{get_settings().console_port} (signed in as admin)", flush=True)
        sup.start()
        sched = processes.scheduler_for(ctx, redis_url)
        threads.append(threading.Thread(target=sched.run, args=(stop,), name="scheduler", daemon=True))
        if a.demo:
            sim = _start_upstream_sim()
            threads.append(
                threading.Thread(
                    target=demo.run,
                    args=(ctx.engine, ctx.principal, ctx.doorbell(), stop, sim),
                    name="demo",
                    daemon=True,
                )
            )
        for t in threads:
            t.start()
        print(
            f"{config.processes} worker process(es) x {config.threads} threads; scheduler running"
            f"{'; demo workload on' if a.demo else ''}. Ctrl-C stops everything.",
            flush=True,
        )
        _status_loop(ctx, sup, stop)
    finally:
        stop.set()
        print("\nstopping ...", flush=True)
        for t in threads:
            t.join(5)
        if sup is not None:
            sup.stopping.set()
            sup.shutdown()
        if console is not None and console.poll() is None:
            console.terminate()
            try:
                console.wait(10)
            except subprocess.TimeoutExpired:
                console.kill()
        if metrics_server is not None:
            metrics_server.shutdown()
        if api_server is not None:
            api_server.stop()
        if sim is not None:
            sim.stop()
        if embedded is not None:
            embedded.stop()
        print("stopped.", flush=True)
    return 0


def _start_upstream_sim() -> Any:
    """The upstream simulator the demo sources read, on ORCH_UPSTREAM_SIM_PORT (default 8599,
    or any free port when that one is taken)."""
    from worker.devtools import upstream_sim

    port = int(os.environ.get("ORCH_UPSTREAM_SIM_PORT", "8599"))
    try:
        sim = upstream_sim.UpstreamSim(port=port).start()
    except OSError:
        sim = upstream_sim.UpstreamSim(port=0).start()
    print(f"upstream simulator: {sim.url} (the demo's first feed; it starts one more per other feed)", flush=True)
    return sim


def _status_loop(ctx: Context, sup: Any, stop: threading.Event) -> None:
    tty = sys.stdout.isatty()
    last: tuple[float, int] | None = None
    last_print = 0.0
    while not stop.wait(1.0):
        sup.supervise_once()
        try:
            with ctx.engine.connect() as conn:
                stats = queries.job_stats(conn, ctx.principal)
        except sa.exc.SQLAlchemyError as exc:
            print(f"status unavailable: {str(exc).splitlines()[0][:120]}", flush=True)
            continue
        by = stats["by_state"]
        done = by["succeeded"] + by["dead_lettered"] + by["canceled"]
        now = time.monotonic()
        rate = 0.0 if last is None else (done - last[1]) / max(1e-6, now - last[0])
        last = (now, done)
        line = (
            f"queued {by['queued']}  running {by['running'] + by['leased']}  succeeded {by['succeeded']}  "
            f"retrying {by['retrying']}  throttled {by['throttled']}  dead-lettered {by['dead_lettered']}"
            f"  {rate:.1f} jobs/s"
        )
        if tty:
            print("\r" + line.ljust(110), end="", flush=True)
        elif now - last_print >= 5:
            print(line, flush=True)
            last_print = now


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run everything: (embedded) services, console, scheduler, workers")
    processes.add_pool_args(up)
    up.add_argument("--demo", action="store_true", help="keep submitting a mixed demo workload")
    up.add_argument("--no-console", action="store_true", help="do not start the Streamlit console")
    up.add_argument("--no-api", action="store_true", help="do not start the HTTP API (orch api)")
    up.set_defaults(fn=cmd_up)
