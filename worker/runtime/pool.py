"""`orch worker`: a supervisor and its worker processes.

Each worker process runs a Dramatiq Worker (consumer + M threads) and one Pump. The
supervisor restarts a process that dies (SIGKILL, out of memory) while the others keep
working; Dramatiq's own CLI would instead take the whole pool down. Recovery of the dead
process's jobs does not wait for the broker: their leases expire and the scheduler reaps them.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

import dramatiq

from core.ledger import db
from core.settings import Settings, get_settings
from worker import jobtypes, sdk
from worker.runtime import actors, exporter
from worker.runtime import broker as broker_mod
from worker.runtime.pump import Pump

log = logging.getLogger(__name__)

RESTART_WINDOW_S = 60.0
MAX_RESTARTS_IN_WINDOW = 10


@dataclass
class PoolConfig:
    processes: int = 2
    threads: int = 8
    queues: list[str] = field(default_factory=lambda: ["default"])
    handler_modules: list[str] = field(default_factory=list)
    worker_timeout_ms: int = 1000


def load_handlers(modules: list[str]) -> dict[str, sdk.HandlerSpec]:
    """Import the built-in handlers and the configured modules; return the registry."""
    for name in jobtypes.BUILTIN_MODULES:
        importlib.import_module(name)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SystemExit(
                f"cannot import handler module {name!r} (ORCH_HANDLER_MODULES / --handlers): {exc}"
            ) from None
    return dict(sdk.registry())


def owner_name(slot: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:w{slot}"


#: Credentials a worker process drops from its environment before it loads any handler: a
#: handler gets no credential it was not given (API tokens belong to the CLI and console).
SCRUBBED_ENV = ("ORCH_TOKEN", "ORCH_CONSOLE_TOKEN")


def worker_main(slot: int, config: PoolConfig, ready: multiprocessing.synchronize.Event | None = None) -> None:
    """Body of one worker process. SIGTERM stops it gracefully; SIGINT is left to the supervisor."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in SCRUBBED_ENV:
        os.environ.pop(name, None)
    from worker.runtime import logs

    logs.configure(f"worker-{slot}")
    settings = get_settings()
    handlers = load_handlers(config.handler_modules)
    assert settings.database_url and settings.redis_url, "the supervisor passes both URLs"
    engine = db.create_engine(
        settings.database_url,
        pool_size=3,
        application_name=f"orch-worker-{slot}",
        # Worker-side writes are recoverable: a transition lost in a database crash leaves
        # the job leased, its lease expires and the scheduler retries it. Submissions, which
        # are not recoverable, keep synchronous commit (docs/adr/0003).
        synchronous_commit=False,
        ordered_scans=True,
    )
    owner = owner_name(slot)
    broker = broker_mod.build_broker(settings.redis_url, namespace=settings.broker_namespace)
    pump = Pump(
        engine,
        owner=owner,
        job_types=lambda: list(handlers),
        lease_policy=lambda t: (handlers[t].lease_s, handlers[t].heartbeat_s) if t in handlers else (30.0, 10.0),
        write_linger_s=settings.write_linger_s,
        threads=config.threads,
        claim_linger_s=settings.claim_linger_s,
        doorbell=broker_mod.RedisDoorbell(broker),
    )
    from core import control

    control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
    runtime = actors.Runtime(pump, handlers)
    actors.declare_doorbells(broker, config.queues, runtime)
    pump.start()
    worker = dramatiq.Worker(broker, worker_threads=config.threads, worker_timeout=config.worker_timeout_ms)
    worker.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "worker %s ready: queues=%s threads=%d types=%d", owner, ",".join(config.queues), config.threads, len(handlers)
    )
    if ready is not None:
        ready.set()
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the supervisor died: do not linger as an orphan
            log.warning("supervisor gone; stopping")
            break
    log.info("worker %s stopping (grace %.0fs)", owner, settings.shutdown_grace_s)
    stopper = threading.Thread(
        target=worker.stop, kwargs={"timeout": int(settings.shutdown_grace_s * 1000)}, daemon=True
    )
    stopper.start()
    stopper.join(settings.shutdown_grace_s + 2)
    pump.stop(timeout=5.0)
    engine.dispose()
    logging.shutdown()
    # Handler threads still running past the grace are abandoned; their leases were released.
    os._exit(0)


class Supervisor:
    """Starts `processes` workers and keeps that many alive until told to stop."""

    def __init__(self, config: PoolConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[int, BaseProcess] = {}
        self.restarts: list[float] = []
        self.stopping = threading.Event()
        self.metrics_dir: exporter.MetricsDir | None = None
        #: Every worker pid this pool started, for tidying their metric files at the end.
        self.started_pids: list[int] = []

    def prepare_metrics(self, base: Path | None = None) -> exporter.MetricsDir:
        """The directory of this pool's metric files (`base`, ORCH_METRICS_DIR, or a fresh
        temporary one), exported to the worker processes spawned afterwards. Call it before
        anything in this process imports prometheus_client."""
        if self.metrics_dir is None:
            self.metrics_dir = exporter.prepare_multiprocess_dir(base or self.settings.metrics_dir)
        return self.metrics_dir

    def _spawn(self, slot: int) -> BaseProcess:
        proc = self.ctx.Process(target=worker_main, args=(slot, self.config), name=f"orch-worker-{slot}", daemon=False)
        proc.start()
        if proc.pid:
            self.started_pids.append(proc.pid)
        log.info("started worker process %d (pid %s)", slot, proc.pid)
        return proc

    def start(self) -> None:
        # Before any worker process exists: each imports prometheus_client fresh.
        self.prepare_metrics()
        for slot in range(self.config.processes):
            self.children[slot] = self._spawn(slot)

    def supervise_once(self) -> None:
        for slot, proc in list(self.children.items()):
            if proc.is_alive() or self.stopping.is_set():
                continue
            code = proc.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            if proc.pid:
                exporter.mark_process_dead(proc.pid)
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self.restarts) > MAX_RESTARTS_IN_WINDOW:
                log.error("worker process %d died (%s); too many restarts, waiting 5s", slot, how)
                self.stopping.wait(5.0)
            else:
                log.warning("worker process %d (pid %s) died (%s); restarting it", slot, proc.pid, how)
            if not self.stopping.is_set():
                self.children[slot] = self._spawn(slot)

    def run(self) -> None:
        self.start()
        while not self.stopping.wait(0.2):
            self.supervise_once()
        self.shutdown()

    def shutdown(self) -> None:
        for proc in self.children.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 10
        for proc in self.children.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker pid %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join(5)
        if self.metrics_dir is not None:
            # Only this pool's files (another pool may share the directory).
            self.metrics_dir.release(self.started_pids)

    def pids(self) -> list[int]:
        return [p.pid for p in self.children.values() if p.pid]
