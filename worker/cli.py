"""`orch`: process commands (up, worker, scheduler) and operator commands, thin over
core.control and core.queries. Errors print one line that says what to fix, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa

from core import control, queries
from core.domain import auth, errors, payloads, slo
from core.domain.auth import Principal, local_principal
from core.ledger import db
from core.settings import Settings, get_settings

log = logging.getLogger("orch")

EXIT_CODES: list[tuple[type[Exception], int]] = [
    (errors.Unavailable, 6),
    (errors.Backpressure, 8),
    (errors.IdempotencyConflict, 5),
    (errors.InvalidTransition, 5),
    (errors.Forbidden, 4),
    (errors.NotFound, 3),
    (errors.ReasonRequired, 7),
    (errors.InvalidInput, 2),
    (errors.OrchError, 1),
]


class Context:
    """What a command needs, built lazily so `orch --help` touches nothing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._engine: sa.Engine | None = None
        self._broker: Any = None
        self._principal: Principal | None = None

    @property
    def settings(self) -> Settings:
        return get_settings()

    def urls(self) -> tuple[str, str | None]:
        s = self.settings
        db_url, redis_url = s.database_url, s.redis_url
        if db_url is None or redis_url is None:
            from worker import services

            running = services.running_urls(s.data_dir)
            if running is not None:
                db_url = db_url or running.database_url
                redis_url = redis_url or running.redis_url
        if not db_url:
            raise errors.InvalidInput(
                "no ledger configured: set ORCH_DATABASE_URL (postgresql+psycopg://...) "
                "or start `orch up` in this directory"
            )
        return db_url, redis_url

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = db.create_engine(self.urls()[0], pool_size=2, application_name="orch-cli", pre_ping=True)
            db.check_connection(self._engine)
        return self._engine

    def doorbell(self) -> control.Doorbell:
        redis_url = self.urls()[1]
        if not redis_url:
            log.warning("no ORCH_REDIS_URL: jobs are rung by the scheduler instead")
            return control.NoDoorbell()
        from worker import broker

        self._broker = broker.build_broker(redis_url, namespace=self.settings.broker_namespace)
        return broker.RedisDoorbell(self._broker)

    @property
    def principal(self) -> Principal:
        """The API token's principal (--token or ORCH_TOKEN); without one, the local
        principal: whoever reaches the database directly is already trusted."""
        if self._principal is None:
            token = getattr(self.args, "token", None) or os.environ.get("ORCH_TOKEN")
            self._principal = control.authenticate(self.engine, token) if token else local_principal()
        return self._principal


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i][:60]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v[:60].ljust(w) for v, w in zip(row, widths, strict=True)))


# -- operator commands -----------------------------------------------------------------


def cmd_db_upgrade(ctx: Context) -> int:
    from worker import pool

    rev = db.upgrade(ctx.engine)
    handlers = pool.load_handlers(ctx.settings.handler_module_list())
    control.register_job_types(ctx.engine, [h.job_type_row() for h in handlers.values()])
    print(f"ledger at revision {rev} ({db.describe(ctx.engine.url)}); {len(handlers)} job types registered")
    return 0


def cmd_submit(ctx: Context) -> int:
    a = ctx.args
    payload = payloads.parse_payload(a.payload) if a.payload is not None else {}
    if a.count < 1 or a.count > 1_000_000:
        raise errors.InvalidInput(f"--count must be between 1 and 1000000, got {a.count}")
    if a.idempotency_key is not None and a.count > 1:
        raise errors.InvalidInput("--idempotency-key names one job; it cannot be combined with --count > 1")
    spec = control.JobSpec(
        tenant=a.tenant,
        job_type=a.type,
        payload=payload,
        idempotency_key=a.idempotency_key,
        priority=a.priority,
        max_attempts=a.max_attempts,
        source=a.source,
    )
    engine = ctx.engine
    bell = ctx.doorbell()
    ids: list[int] = []
    for start in range(0, a.count, 10_000):
        n = min(10_000, a.count - start)
        ids += control.submit_many(engine, ctx.principal, [spec] * n, doorbell=bell, reason=a.reason).job_ids
    if a.json:
        _print_json({"job_ids": ids})
    elif len(ids) == 1:
        print(f"job {ids[0]}")
    else:
        print(f"{len(ids)} jobs: {ids[0]}..{ids[-1]}")
    return 0


LIST_COLUMNS = ["id", "tenant", "job_type", "state", "attempt", "max_attempts", "error_class", "updated_at"]


def cmd_jobs_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_jobs(conn, ctx.principal, tenant=a.tenant, state=a.state, job_type=a.type, limit=a.limit)
    if a.json:
        _print_json({"jobs": rows})
    else:
        _table(rows, LIST_COLUMNS)
    return 0


def cmd_jobs_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        job = queries.get_job(conn, ctx.principal, a.id)
        history = queries.job_history(conn, ctx.principal, a.id)
        logs = queries.job_logs(conn, ctx.principal, a.id)
        artifacts = queries.job_artifacts(conn, ctx.principal, a.id)
    if a.json:
        _print_json({"job": job, "history": history, "logs": logs, "artifacts": artifacts})
        return 0
    from worker import cli_flow

    if (wait := cli_flow.describe_wait(job)) is not None:
        print(f"{'waits':>17}: {wait}")
    for key in [
        "id",
        "tenant",
        "job_type",
        "source",
        "queue",
        "state",
        "wait_reason",
        "not_before",
        "attempt",
        "max_attempts",
        "priority",
        "error_class",
        "last_error",
        "progress",
        "progress_message",
        "lease_owner",
        "lease_expires_at",
        "correlation_id",
        "replay_of",
        "idempotency_key",
        "created_at",
        "started_at",
        "finished_at",
    ]:
        if job.get(key) is not None:
            print(f"{key:>17}: {job[key]}")
    print(f"{'payload':>17}: {json.dumps(job['payload'], sort_keys=True)}")
    print("\nhistory:")
    for h in history:
        arrow = f"{h['from_state'] or '-'} -> {h['to_state']}"
        print(f"  {h['at']}  {arrow:<28} {h['event']:<15} {h['actor']}  {h['reason'] or ''}")
    if artifacts:
        print("\nartifacts:")
        for art in artifacts:
            print(f"  {art['name']}  {art['media_type']}  {art['size_bytes']} bytes  sha256 {art['sha256']}")
    if logs:
        print("\nlog:")
        for line in logs:
            print(f"  {line['at']}  [{line['attempt']}] {line['level']}: {line['message']}")
    return 0


def cmd_jobs_stats(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        stats = queries.job_stats(conn, ctx.principal, tenant=ctx.args.tenant)
    if ctx.args.json:
        _print_json(stats)
    else:
        print(f"total: {stats['total']}")
        for state, n in stats["by_state"].items():
            print(f"  {state:<16}{n}")
    return 0


def cmd_jobs_cancel(ctx: Context) -> int:
    result = control.cancel(ctx.engine, ctx.principal, ctx.args.id, reason=ctx.args.reason, ticket=ctx.args.ticket)
    if result == "canceled":
        print(f"job {ctx.args.id} canceled")
    else:
        print(f"job {ctx.args.id} is running; cancellation requested (the handler stops at its next check)")
    return 0


def cmd_jobs_retry(ctx: Context) -> int:
    new_id = control.retry(
        ctx.engine, ctx.principal, ctx.args.id, doorbell=ctx.doorbell(), reason=ctx.args.reason, ticket=ctx.args.ticket
    )
    if ctx.args.json:
        _print_json({"job_id": new_id, "replay_of": None if new_id == ctx.args.id else ctx.args.id})
    elif new_id == ctx.args.id:
        print(f"job {new_id} will be retried now")
    else:
        print(f"job {new_id} replays job {ctx.args.id}")
    return 0


def cmd_dlq_list(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        rows = queries.dead_letters(conn, ctx.principal, tenant=ctx.args.tenant, limit=ctx.args.limit)
    if ctx.args.json:
        _print_json({"jobs": rows})
    else:
        _table(rows, ["id", "tenant", "job_type", "attempt", "error_class", "finished_at"])
    return 0


def cmd_tokens_create(ctx: Context) -> int:
    a = ctx.args
    tenants = None if a.tenants in (None, "*") else frozenset(t.strip() for t in a.tenants.split(",") if t.strip())
    token = control.create_token(
        ctx.engine,
        ctx.principal,
        subject=a.subject,
        scopes=auth.parse_scopes(a.scopes),
        tenants=tenants,
        reason=a.reason,
    )
    if a.json:
        _print_json({"token": token, "subject": a.subject})
    else:
        print(token)
        print("(shown once: store it now; give it as ORCH_TOKEN or --token)", file=sys.stderr)
    return 0


AUDIT_COLUMNS = ["id", "at", "subject", "action", "target", "tenant", "reason", "ticket"]


def cmd_audit_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.audit_log(conn, ctx.principal, tenant=a.tenant, action=a.action, limit=a.limit)
    if a.json:
        _print_json({"entries": rows})
    else:
        _table(rows, AUDIT_COLUMNS)
    return 0


def cmd_audit_verify(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        verdict = queries.verify_audit(conn, ctx.principal)
    if verdict["ok"]:
        print(f"audit log intact: {verdict['rows']} rows, hash chain verified")
        return 0
    print(f"orch: error: audit log broken at row {verdict['first_bad_id']}: {verdict['problem']}", file=sys.stderr)
    return 1


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise errors.InvalidInput(f"bad duration {text!r}: use e.g. 90s, 15m, 1h or 3d") from None


def cmd_errors_clusters(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.error_clusters(conn, ctx.principal, tenant=a.tenant, since_s=_duration(a.since), limit=a.limit)
    if a.json:
        _print_json({"clusters": rows})
    else:
        _table(rows, ["error_class", "fingerprint", "count", "last_seen", "job_types", "message"])
    return 0


# -- process commands ------------------------------------------------------------------


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            return
        log.info("stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _pool_config(ctx: Context) -> Any:
    from worker import pool

    a = ctx.args
    if not 1 <= a.processes <= 64 or not 1 <= a.threads <= 256:
        raise errors.InvalidInput("--processes must be 1..64 and --threads 1..256")
    queues = [q for q in (a.queues or ctx.settings.queues).split(",") if q]
    modules = [m for m in (a.handlers or ctx.settings.handler_modules).split(",") if m]
    return pool.PoolConfig(processes=a.processes, threads=a.threads, queues=queues, handler_modules=modules)


def _export_urls(db_url: str, redis_url: str) -> None:
    # Child processes (spawned) read their settings from the environment.
    os.environ["ORCH_DATABASE_URL"] = db_url
    os.environ["ORCH_REDIS_URL"] = redis_url
    get_settings.cache_clear()


def cmd_worker(ctx: Context) -> int:
    from worker import logs, pool

    logs.configure("supervisor")
    db_url, redis_url = ctx.urls()
    if not redis_url:
        raise errors.InvalidInput("a worker needs Redis: set ORCH_REDIS_URL or start `orch up`")
    config = _pool_config(ctx)
    db.check_connection(ctx.engine)
    _export_urls(db_url, redis_url)
    sup = pool.Supervisor(config, get_settings())
    _stop_on_signals(sup.stopping)
    server = None
    if ctx.args.metrics:
        from worker import exporter

        exporter.prepare_multiprocess_dir(get_settings().metrics_dir)
        server = _serve_metrics(None, get_settings())
    sup.run()
    if server is not None:
        server.shutdown()
    return 0


def _scheduler(ctx: Context, redis_url: str) -> Any:
    from worker import broker, scheduler

    b = broker.build_broker(redis_url, namespace=ctx.settings.broker_namespace)
    broker.check_redis(b)
    engine = db.create_engine(ctx.urls()[0], pool_size=3, application_name="orch-scheduler", ordered_scans=True)
    return scheduler.Scheduler(engine, b, broker.RedisDoorbell(b), ctx.settings)


def cmd_scheduler(ctx: Context) -> int:
    from worker import logs

    logs.configure("scheduler")
    _, redis_url = ctx.urls()
    if not redis_url:
        raise errors.InvalidInput("the scheduler needs Redis: set ORCH_REDIS_URL or start `orch up`")
    db.check_connection(ctx.engine)
    stop = threading.Event()
    _stop_on_signals(stop)
    server = _serve_metrics(None, ctx.settings) if ctx.args.metrics else None
    _scheduler(ctx, redis_url).run(stop)
    if server is not None:
        server.shutdown()
    return 0


def cmd_exporter(ctx: Context) -> int:
    from worker import logs

    logs.configure("exporter")
    s = ctx.settings
    if s.metrics_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(s.metrics_dir)  # this host's worker files
    server = _serve_metrics(ctx.engine, s)
    if server is None:
        return 6
    stop = threading.Event()
    _stop_on_signals(stop)
    stop.wait()
    server.shutdown()
    return 0


def _serve_metrics(engine: sa.Engine | None, s: Settings) -> Any:
    from worker import exporter

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


def _admin_token(ctx: Context, data_dir: Path) -> tuple[str, Path]:
    """The local admin token of `orch up`: created on first start, kept in .orch/admin-token
    (mode 600) for the console and for `ORCH_TOKEN=$(cat .orch/admin-token) orch ...`."""
    path = data_dir / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        try:
            control.authenticate(ctx.engine, token)
            return token, path
        except errors.Forbidden:
            pass  # the ledger was reset: make a new one
    token = control.create_token(
        ctx.engine,
        local_principal(),
        subject="admin",
        scopes=auth.ALL_SCOPES,
        tenants=None,
        reason="orch up: local admin token",
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, path


def cmd_up(ctx: Context) -> int:
    from worker import demo, logs, pool, services

    os.environ.setdefault("ORCH_LOG_LEVEL", "WARNING")  # workers inherit it
    logs.configure("up")
    a = ctx.args
    s = ctx.settings
    embedded: services.EmbeddedServices | None = None
    stop = threading.Event()
    _stop_on_signals(stop)
    threads: list[threading.Thread] = []
    sup: pool.Supervisor | None = None
    metrics_server: Any = None
    console: Any = None
    sim: Any = None
    try:
        db_url, redis_url = s.database_url, s.redis_url
        if db_url is None or redis_url is None:
            embedded = services.EmbeddedServices(s.data_dir)
            print(
                f"starting embedded {'PostgreSQL' if db_url is None else ''}"
                f"{' and ' if db_url is None and redis_url is None else ''}"
                f"{'Redis' if redis_url is None else ''} under {s.data_dir}/ ...",
                flush=True,
            )
            urls = embedded.start(postgres=db_url is None, redis=redis_url is None)
            db_url = db_url or urls.database_url
            redis_url = redis_url or urls.redis_url
        _export_urls(db_url, redis_url)
        from worker import exporter

        # Before anything imports prometheus_client: workers and this process share the files.
        exporter.prepare_multiprocess_dir(s.data_dir.resolve() / "metrics")
        ctx = Context(ctx.args)
        rev = db.upgrade(ctx.engine)
        handlers = pool.load_handlers(get_settings().handler_module_list())
        control.register_job_types(ctx.engine, [h.job_type_row() for h in handlers.values()])
        print(f"ledger: {db.describe(ctx.engine.url)} (revision {rev})")
        print(f"broker: {redis_url}")
        token, token_path = _admin_token(ctx, s.data_dir)
        os.environ["ORCH_CONSOLE_TOKEN"] = token
        print(f"admin token: {token_path} (mode 600; use it as ORCH_TOKEN)")
        metrics_server = _serve_metrics(ctx.engine, get_settings())
        if not a.no_console:
            import subprocess

            command, env, root = _console_command(db_url, get_settings().console_port)
            console = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            print(f"console: http://127.0.0.1:{get_settings().console_port} (signed in as admin)", flush=True)
        config = _pool_config(ctx)
        sup = pool.Supervisor(config, get_settings())
        sup.start()
        sched = _scheduler(ctx, redis_url)
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
            except Exception:
                console.kill()
        if metrics_server is not None:
            metrics_server.shutdown()
        if sim is not None:
            sim.stop()
        if embedded is not None:
            embedded.stop()
        print("stopped.", flush=True)
    return 0


def _start_upstream_sim() -> Any:
    """The upstream simulator the demo sources read, on ORCH_UPSTREAM_SIM_PORT (default 8599,
    or any free port when that one is taken)."""
    from worker import upstream_sim

    port = int(os.environ.get("ORCH_UPSTREAM_SIM_PORT", "8599"))
    try:
        sim = upstream_sim.UpstreamSim(port=port).start()
    except OSError:
        sim = upstream_sim.UpstreamSim(port=0).start()
    print(f"upstream simulator: {sim.url} (feeds advisories, vex, sbom)", flush=True)
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


def _console_command(db_url: str, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict[str, str], Path]:
    """The Streamlit command line, environment and working directory of the console."""
    root = Path(__file__).resolve().parent.parent
    home = root / "app" / "Home.py"
    if not home.is_file():
        raise errors.InvalidInput(f"the console is not here: {home} is missing (run orch from a checkout)")
    pythonpath = os.pathsep.join(p for p in [str(root), os.environ.get("PYTHONPATH", "")] if p)
    env = dict(os.environ, ORCH_DATABASE_URL=db_url, PYTHONPATH=pythonpath)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(home),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
    ]
    return command, env, root


def cmd_console(ctx: Context) -> int:
    """Run the Streamlit console (app/Home.py) against the ledger other commands use."""
    import subprocess

    db_url, _ = ctx.urls()
    port_text = str(ctx.args.port) if ctx.args.port is not None else os.environ.get("ORCH_CONSOLE_PORT", "8501")
    try:
        port = int(port_text)
    except ValueError:
        raise errors.InvalidInput(f"ORCH_CONSOLE_PORT must be a port number, got {port_text!r}") from None
    if not 1 <= port <= 65535:
        raise errors.InvalidInput(f"the console port must be between 1 and 65535, got {port}")
    host = ctx.settings.console_host
    command, env, root = _console_command(db_url, port, host)
    print(f"console: http://{host}:{port} (ledger {db.describe(db_url)}); Ctrl-C stops it", flush=True)
    proc = subprocess.Popen(command, cwd=root, env=env)
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


# -- parser --------------------------------------------------------------------------------


def _int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    return n


def _float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orch", description="Orch: source and job orchestrator")
    p.add_argument("--token", help="API token (default: ORCH_TOKEN; none: the local principal)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dbp = sub.add_parser("db", help="ledger schema").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="migrate the ledger to the latest schema (safe to repeat)").set_defaults(
        fn=cmd_db_upgrade
    )

    s = sub.add_parser("submit", help="submit jobs")
    s.add_argument("--tenant", required=True)
    s.add_argument("--type", required=True, help="job type, e.g. noop, sleep, fail, flaky")
    s.add_argument("--payload", help="JSON object")
    s.add_argument("--idempotency-key")
    s.add_argument("--priority", type=_int, default=0)
    s.add_argument("--max-attempts", type=_int)
    s.add_argument("--count", type=_int, default=1)
    s.add_argument("--source", help="the tenant's source (upstream feed) the job reads")
    s.add_argument("--reason")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_submit)

    jobs = sub.add_parser("jobs", help="inspect and steer jobs").add_subparsers(dest="jobs_command", required=True)
    jl = jobs.add_parser("list", help="newest jobs first")
    jl.add_argument("--tenant")
    jl.add_argument("--state")
    jl.add_argument("--type")
    jl.add_argument("--limit", type=_int, default=50)
    jl.add_argument("--json", action="store_true")
    jl.set_defaults(fn=cmd_jobs_list)
    js = jobs.add_parser("show", help="one job with its history")
    js.add_argument("id", type=_int)
    js.add_argument("--json", action="store_true")
    js.set_defaults(fn=cmd_jobs_show)
    jst = jobs.add_parser("stats", help="jobs per state")
    jst.add_argument("--tenant")
    jst.add_argument("--json", action="store_true")
    jst.set_defaults(fn=cmd_jobs_stats)
    for name, fn, text in [
        ("cancel", cmd_jobs_cancel, "cancel a job"),
        ("retry", cmd_jobs_retry, "replay a dead-lettered job (or retry a retrying one now)"),
    ]:
        jp = jobs.add_parser(name, help=text)
        jp.add_argument("id", type=_int)
        jp.add_argument("--reason")
        jp.add_argument("--ticket")
        jp.add_argument("--json", action="store_true")
        jp.set_defaults(fn=fn)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq_command", required=True)
    dl = dlq.add_parser("list", help="dead-lettered jobs, newest first")
    dl.add_argument("--tenant")
    dl.add_argument("--limit", type=_int, default=100)
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(fn=cmd_dlq_list)

    tok = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    tc = tok.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--subject", required=True)
    tc.add_argument("--scopes", required=True, help="e.g. orch:read,orch:operate")
    tc.add_argument("--tenants", help="comma-separated; omit or '*' for every tenant")
    tc.add_argument("--reason")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(fn=cmd_tokens_create)

    aud = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True)
    al = aud.add_parser("list", help="newest entries first")
    al.add_argument("--tenant")
    al.add_argument("--action")
    al.add_argument("--limit", type=_int, default=100)
    al.add_argument("--json", action="store_true")
    al.set_defaults(fn=cmd_audit_list)
    aud.add_parser("verify", help="recompute the hash chain; exit 1 naming the first bad row").set_defaults(
        fn=cmd_audit_verify
    )

    err = sub.add_parser("errors", help="error clusters").add_subparsers(dest="errors_command", required=True)
    ec = err.add_parser("clusters", help="failures grouped by class and normalised message")
    ec.add_argument("--tenant")
    ec.add_argument("--since", default="1h", help="window, e.g. 15m, 1h, 3d")
    ec.add_argument("--limit", type=_int, default=20)
    ec.add_argument("--json", action="store_true")
    ec.set_defaults(fn=cmd_errors_clusters)

    def pool_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--processes", type=_int, default=2)
        parser.add_argument("--threads", type=_int, default=8)
        parser.add_argument("--queues", help="comma-separated (default ORCH_QUEUES or 'default')")
        parser.add_argument("--handlers", help="comma-separated modules with @job_handler functions")

    w = sub.add_parser("worker", help="run a supervised pool of worker processes")
    pool_args(w)
    w.add_argument("--metrics", action="store_true", help="serve this pool's /metrics (ORCH_METRICS_HOST/PORT)")
    w.set_defaults(fn=cmd_worker)
    sch = sub.add_parser("scheduler", help="run the scheduler (one leader at a time)")
    sch.add_argument("--metrics", action="store_true", help="serve its /metrics (ORCH_METRICS_HOST/PORT)")
    sch.set_defaults(fn=cmd_scheduler)
    sub.add_parser("exporter", help="serve /metrics (ORCH_METRICS_HOST/PORT)").set_defaults(fn=cmd_exporter)
    up = sub.add_parser("up", help="run everything: (embedded) services, scheduler, workers")
    pool_args(up)
    up.add_argument("--demo", action="store_true", help="keep submitting a mixed demo workload")
    up.add_argument("--no-console", action="store_true", help="do not start the Streamlit console")
    up.set_defaults(fn=cmd_up)
    con = sub.add_parser("console", help="run the Streamlit console on 127.0.0.1")
    con.add_argument("--port", type=_int, help="default ORCH_CONSOLE_PORT or 8501")
    con.set_defaults(fn=cmd_console)
    from worker import cli_flow

    cli_flow.register(sub, _int, _float)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="orch: %(levelname)s: %(message)s")
    fn: Callable[[Context], int] = args.fn
    try:
        code = fn(Context(args))
    except KeyboardInterrupt:
        code = 130
    except errors.OrchError as exc:
        code = next(c for t, c in EXIT_CODES if isinstance(exc, t))
        print(f"orch: error: {exc}", file=sys.stderr)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        print(f"orch: error: the ledger is unavailable: {reason} (check ORCH_DATABASE_URL)", file=sys.stderr)
        code = 6
    except sa.exc.ProgrammingError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        print(f"orch: error: {reason} (has `orch db upgrade` been run?)", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
