"""End-to-end throughput of Orch against the transport's own ceiling, measured in one run.

    python bench/throughput.py [--jobs 20000] [--processes 2] [--threads 8] [--probes 200]
    python bench/throughput.py --limits [--rounds 3] ...

1. Bare Dramatiq: N messages pre-enqueued on the same Redis, consumed by P processes x T
   threads of a plain RedisBroker worker whose actor does nothing.
2. Orch: N noop jobs batch-submitted (timed: submit rate, doorbells included), then the same
   P x T worker pool runs them through the ledger (claim, ack, succeed, history). As deployed:
   an `orch scheduler` holds the lead throughout, and every run uses a fresh scratch database
   (rounds share it), so jobs left in ORCH_DATABASE_URL's database by earlier runs count for
   nothing.
   Throughput is N / (last finish - first start), both from the ledger's clock.
3. Dispatch latency on the idle pool: one probe job at a time, submit -> handler start.

With --limits: the cost of flow control. Rounds alternate Orch runs with and without
limits (same pool size, jobs, probes; the order flips every round) in a fresh scratch
database. "With limits" means every job carries a source whose token bucket is generous
(rate 1e6/s, burst 1e6: it never denies) and its tenant has a quota on bench.noop
(max_active 10,000, max_per_hour 1e9), so claims admit under both (taking room ahead for
the next ones where it is ample, docs/adr/0026), and each success feeds the bucket's AIMD
and the source's circuit (orch_record_outcomes). The last line is JSON {"with_limits_jobs_per_s": a,
"without_limits_jobs_per_s": b, "ratio": r}: a and b are medians over rounds, r the median of
the per-round ratios a_i / b_i (target >= 0.9). The bare-Dramatiq baseline is skipped; an
unmeasured warm-up run comes first, so no measured run meets an empty ledger.

Uses ORCH_DATABASE_URL / ORCH_REDIS_URL, or the embedded servers (under .orch/) when unset.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- Orch ---------------------------------------------------------------------------------


#: Whether any job of the measured batch is not finished yet (queued, running, waiting). Each
#: EXISTS stops at the first live job of its state, after those that have left it (a fresh
#: update is not all-visible, so each costs a heap visit until a scan marks its entry dead):
#: 8-18 ms a poll here by mid-run, every POLL_S, so 5-12 ms per 1,000 jobs. The count this
#: replaced took 21 ms every 0.1 s, on the two cores the pool runs on, and the meter counted
#: it as the pool's PostgreSQL CPU (about 55 ms per 1,000 jobs at 3,700 jobs/s).
LEFT_SQL = (
    "SELECT EXISTS (SELECT FROM jobs WHERE queue = 'bench' AND state = 'queued' AND id BETWEEN :lo AND :hi)"
    " OR EXISTS (SELECT FROM jobs WHERE state IN ('leased', 'running') AND id BETWEEN :lo AND :hi)"
    " OR EXISTS (SELECT FROM jobs WHERE state IN ('retrying', 'throttled') AND id BETWEEN :lo AND :hi)"
)

#: Whether a job of the batch has finished: the meter starts then, so the workers' start-up
#: is not counted.
STARTED_SQL = "SELECT EXISTS (SELECT FROM jobs WHERE finished_at IS NOT NULL AND id BETWEEN :lo AND :hi)"

#: Seconds between polls once the meter runs. The rate comes from the ledger's timestamps
#: (first start, last finish), so the poll's period only delays the end of a round.
POLL_S = 0.5

#: --limits: a bucket that never denies and a quota that never binds, so only their cost shows.
GENEROUS_RATE = 1_000_000.0
GENEROUS_MAX_ACTIVE = 10_000
GENEROUS_MAX_PER_HOUR = 1_000_000_000


def run_orch(
    db_url: str, redis_url: str, n: int, processes: int, threads: int, probes: int, *, limits: bool = False
) -> dict[str, float]:
    import sqlalchemy as sa

    from bench import pgcpu
    from core import control
    from core.domain.auth import local_principal
    from core.ledger import db
    from core.ledger import jobs as ledger
    from core.settings import get_settings
    from worker.runtime import broker as broker_mod
    from worker.runtime import pool

    namespace = f"bench-orch-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        ORCH_DATABASE_URL=db_url, ORCH_REDIS_URL=redis_url, ORCH_BROKER_NAMESPACE=namespace, ORCH_LOG_LEVEL="WARNING"
    )
    get_settings.cache_clear()
    settings = get_settings()
    engine = db.create_engine(db_url, application_name="orch-bench")
    db.upgrade(engine)
    handlers = pool.load_handlers(["bench.handlers"])
    control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
    broker = broker_mod.build_broker(redis_url, namespace=namespace)
    bell = broker_mod.RedisDoorbell(broker)
    principal = local_principal("bench")
    tenant = f"bench-{uuid.uuid4().hex[:6]}"

    # The stack as deployed: a scheduler holds the lead while jobs are submitted and run.
    with scheduler_process(settings):
        # Every round starts from a vacuumed ledger (the flow-control rows too: a bucket row is
        # updated by every claim), so rounds compare alike even on a server with autovacuum off
        # (this machine's PostgreSQL has it off).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) jobs, job_history, buckets, quotas, quota_starts, sources"))
        with engine.begin() as conn:  # an aborted earlier run may have left jobs on the queue
            stale = [
                r[0] for r in conn.execute(sa.text("SELECT id FROM jobs WHERE queue = 'bench' AND state = 'queued'"))
            ]
            ledger.cancel_waiting_jobs(conn, stale, actor="bench", reason="left over by an aborted benchmark")
        source = None
        if limits:
            source = "bench"
            control.add_source(
                engine,
                principal,
                tenant=tenant,
                name=source,
                host="throughput.bench.invalid",
                rate=GENEROUS_RATE,
                burst=GENEROUS_RATE,
                reason="bench --limits: a bucket that never denies",
            )
            control.set_quota(
                engine,
                principal,
                tenant=tenant,
                job_type="bench.noop",
                max_active=GENEROUS_MAX_ACTIVE,
                max_per_hour=GENEROUS_MAX_PER_HOUR,
                reason="bench --limits: a quota that never binds",
            )
        spec = control.JobSpec(tenant, "bench.noop", source=source)
        t0 = time.perf_counter()
        ids: list[int] = []
        for start in range(0, n, 5000):
            ids += control.submit_many(engine, principal, [spec] * min(5000, n - start), doorbell=bell).job_ids
        submit_s = time.perf_counter() - t0

        sup = pool.Supervisor(
            pool.PoolConfig(processes=processes, threads=threads, queues=["bench"], handler_modules=["bench.handlers"]),
            settings,
        )
        sup.start()
        try:
            lo, hi = min(ids), max(ids)
            deadline = time.monotonic() + 900
            meter: pgcpu.PgMeter | None = None
            cpu0: float | None = None
            metered_at = None  # the server's clock when the meter started
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if meter is None and conn.execute(sa.text(STARTED_SQL), {"lo": lo, "hi": hi}).scalar_one():
                        metered_at = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
                        meter, cpu0 = pgcpu.PgMeter.start(engine), pgcpu.processes_cpu(sup.pids())
                    if not conn.execute(sa.text(LEFT_SQL), {"lo": lo, "hi": hi}).scalar_one():
                        break
                time.sleep(0.05 if meter is None else POLL_S)
            with engine.connect() as conn:
                done = conn.execute(
                    sa.text("SELECT count(*) FROM jobs WHERE id BETWEEN :lo AND :hi AND state = 'succeeded'"),
                    {"lo": lo, "hi": hi},
                ).scalar_one()
                # The jobs the meter did not see: those finished before it started.
                done0 = conn.execute(
                    sa.text("SELECT count(*) FROM jobs WHERE id BETWEEN :lo AND :hi AND finished_at <= :t"),
                    {"lo": lo, "hi": hi, "t": metered_at},
                ).scalar_one()
                first, last = conn.execute(
                    sa.text("SELECT min(started_at), max(finished_at) FROM jobs WHERE id BETWEEN :lo AND :hi"),
                    {"lo": lo, "hi": hi},
                ).one()
            orch_rate = done / (last - first).total_seconds()
            pg = meter.stop() if meter is not None else {"pg_cpu_s": None, "statements": []}
            cpu1 = pgcpu.processes_cpu(sup.pids())
            workers_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            measured = max(1, done - done0)

            # Dispatch latency: the pool is idle now; one probe at a time.
            # The handler pushes its start time onto a Redis list of this run, which the bench
            # waits on (BLPOP): polling the ledger for it would load the two cores the pool
            # dispatches on.
            reply = f"{namespace}:probe-started"
            probe_spec = control.JobSpec(tenant, "bench.probe", {"reply": reply}, source=source)
            latencies: list[float] = []
            # Where an idle dispatch's time goes: the submit call (insert, commit, doorbell),
            # then until the claim's history row, the claim to the ack, the ack to the handler.
            parts: dict[str, list[float]] = {"submit": [], "to_claim": [], "claim_to_ack": [], "ack_to_handler": []}
            for _ in range(probes):
                time.sleep(0.02)
                sent = time.time()
                job_id = control.submit(engine, principal, probe_spec, doorbell=bell)
                returned = time.time()
                started = None
                wait_until = time.monotonic() + 10
                while started is None and time.monotonic() < wait_until:
                    popped = broker.client.blpop([reply], timeout=max(0.01, wait_until - time.monotonic()))
                    if popped is not None:  # a late reply of an earlier probe that timed out is dropped
                        popped_id, _, at = popped[1].decode().partition(" ")
                        started = at if int(popped_id) == job_id else None
                if started is not None:
                    latencies.append((float(started) - sent) * 1000)
                    with engine.connect() as conn:
                        at = dict(
                            conn.execute(
                                sa.text(
                                    "SELECT event, extract(epoch FROM at) FROM job_history"
                                    " WHERE job_id = :id AND event IN ('claim', 'ack')"
                                ),
                                {"id": job_id},
                            ).all()
                        )
                    if "claim" in at and "ack" in at:
                        claim, ack = float(at["claim"]), float(at["ack"])
                        parts["submit"].append((returned - sent) * 1000)
                        parts["to_claim"].append((claim - returned) * 1000)
                        parts["claim_to_ack"].append((ack - claim) * 1000)
                        parts["ack_to_handler"].append((float(started) - ack) * 1000)
        finally:
            sup.stopping.set()
            sup.shutdown()
            keys = broker.client.keys(f"{namespace}:*")
            if keys:
                broker.client.delete(*keys)
    # Again once the scheduler has stopped: until then its repair may ring doorbells in this
    # namespace (for the keyed jobs an earlier round left queued, say), which nobody reads.
    keys = broker.client.keys(f"{namespace}:*")
    if keys:
        broker.client.delete(*keys)
    latencies.sort()
    keyed_per_s = submit_keyed(engine, principal, tenant, min(n, 20_000))
    return {
        "orch_jobs_per_s": orch_rate,
        "submit_jobs_per_s": n / submit_s,
        "submit_keyed_jobs_per_s": keyed_per_s,
        "dispatch_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "dispatch_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan"),
        "dispatch_parts_p50_ms": {k: round(statistics.median(v), 2) if v else None for k, v in parts.items()},
        "completed": done,
        "pg_cpu_ms_per_1k_jobs": None if pg["pg_cpu_s"] is None else pg["pg_cpu_s"] * 1e6 / measured,
        "workers_cpu_ms_per_1k_jobs": None if workers_cpu is None else workers_cpu * 1e6 / measured,
        "pg_statements": pg["statements"],
        "measured_jobs": measured,
    }


def submit_keyed(engine: Any, principal: Any, tenant: str, n: int) -> float:
    """Jobs/s of batch submits (5,000 a call) where every job has its own idempotency key and
    payload, as a feed's deduplicated submits have; into a queue no worker reads, after the
    round's pool has stopped, so they change nothing else the round measures."""
    from core import control
    from core.domain.jobtypes import JobTypeRow

    control.register_job_types(engine, [JobTypeRow("bench.keyed", "bench-keyed", 1, 1.0, 10.0, 30.0, 10.0)])
    tag = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    for start in range(0, n, 5000):
        specs = [
            control.JobSpec(tenant, "bench.keyed", {"i": i}, idempotency_key=f"{tag}-{i}")
            for i in range(start, min(n, start + 5000))
        ]
        control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell())
    return n / (time.perf_counter() - t0)


def resolve_urls() -> tuple[str, str, object]:
    from core.settings import get_settings
    from worker.devtools import services

    s = get_settings()
    if s.database_url and s.redis_url:
        return s.database_url, s.redis_url, None
    embedded = services.EmbeddedServices(s.data_dir)
    urls = embedded.start(postgres=s.database_url is None, redis=s.redis_url is None)
    return s.database_url or urls.database_url, s.redis_url or urls.redis_url, embedded


# -- shared with the flow-control benches (ratelimit.py, adaptive.py) ---------------------


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes a bench started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "orch_bench", *, keep: bool = False) -> Iterator[str]:
    """A new, empty database on the server of `server_url` (whose own database is only used
    to connect), migrated, and dropped on exit (unless `keep`): no leftover jobs, buckets or
    second scheduler of an earlier run can skew the figures. Yields its URL."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from core.ledger import db

    url = sa.make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        scratch = url.set(database=name).render_as_string(hide_password=False)
        engine = db.create_engine(scratch, application_name="orch-bench-migrate")
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
        yield scratch
    finally:
        if keep:
            print(f"kept the scratch database {name}", file=sys.stderr, flush=True)
        else:
            with admin.connect() as conn:  # FORCE: a worker that outlived its pool cannot keep it
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def use_ledger(db_url: str, redis_url: str, namespace: str) -> Any:
    """Point this process's settings, and the worker and scheduler processes it starts, at
    `db_url` and a broker namespace of its own. Returns the settings."""
    from core import control
    from core.settings import get_settings

    os.environ.update(
        ORCH_DATABASE_URL=db_url,
        ORCH_REDIS_URL=redis_url,
        ORCH_BROKER_NAMESPACE=namespace,
        ORCH_LOG_LEVEL=os.environ.get("ORCH_BENCH_LOG_LEVEL", "WARNING"),
    )
    get_settings.cache_clear()
    control.forget_cached_catalog()
    return get_settings()


def _parent_death_signal() -> Any:
    """A pre-exec hook that makes the child get SIGTERM when the bench dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG); None elsewhere. Resolved here, in the parent: between fork
    and exec the child must not load libraries (other threads may hold their locks)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))


@dataclasses.dataclass
class Stack:
    """The processes `worker_stack` started."""

    supervisor: Any
    scheduler: subprocess.Popen[bytes]
    scheduler_log: Path
    warned: set[str] = dataclasses.field(default_factory=set)

    def check(self) -> None:
        """Say once per process that died during a measurement (its figures are suspect)."""
        dead = {f"worker process {slot} (pid {p.pid})": p.exitcode for slot, p in self.supervisor.children.items()}
        dead = {name: code for name, code in dead.items() if code is not None}
        if self.scheduler.poll() is not None:
            dead[f"the scheduler (log {self.scheduler_log})"] = self.scheduler.returncode
        for name, code in dead.items():
            if name not in self.warned:
                self.warned.add(name)
                print(f"warning: {name} exited with code {code} during the run", flush=True)


def _wait_for_leader(db_url: str, sched: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    """Block until the scheduler holds its leader lock: a pool that started first would see
    its denied jobs wait for the scheduler's start-up instead of their not_before."""
    import sqlalchemy as sa

    from worker.runtime import scheduler

    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if sched.poll() is not None:
                raise SystemExit(f"the scheduler exited with code {sched.returncode}; see {log}")
            with engine.connect() as conn:
                leading = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        " AND ((classid::bigint << 32) | objid::bigint) = :key"
                    ),
                    {"key": scheduler.LEADER_LOCK_KEY},
                ).scalar_one()
            if leading:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise SystemExit(f"the scheduler did not take the lead within {timeout_s:.0f}s; see {log}")


@contextlib.contextmanager
def scheduler_process(settings: Any) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """An `orch scheduler` process holding the lead (it releases throttled and retrying jobs
    at their not_before, repairs doorbells and keeps the statistics of jobs fresh, as in a
    deployed stack); stopped on exit, also on Ctrl-C. Its log is kept only if it exited on
    its own."""
    log_dir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    sched_log = log_dir / "scheduler.log"
    sched: subprocess.Popen[bytes] | None = None
    interrupted = False
    try:
        with sched_log.open("wb") as out:
            sched = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "scheduler"],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(),
            )
        _wait_for_leader(settings.database_url, sched, sched_log)
        yield sched, sched_log
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C reached the scheduler too: its exit is no surprise
        raise
    finally:
        if sched is not None:
            early = sched.poll() is not None and not interrupted
            if early:
                print(f"warning: the scheduler exited early (code {sched.returncode}); see {sched_log}")
            sched.terminate()
            try:
                sched.wait(15)
            except subprocess.TimeoutExpired:
                sched.kill()
                sched.wait(5)
            if not early:
                shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def worker_stack(
    settings: Any,
    *,
    processes: int,
    threads: int,
    queues: list[str],
    handler_modules: list[str],
) -> Iterator[Stack]:
    """An `orch scheduler` process and a supervised pool of `processes` x `threads` workers,
    as `orch up` runs them; both stopped on exit, also on Ctrl-C."""
    from worker.runtime import pool

    with scheduler_process(settings) as (sched, sched_log):
        sup = pool.Supervisor(
            pool.PoolConfig(processes=processes, threads=threads, queues=queues, handler_modules=handler_modules),
            settings,
        )
        sup.start()
        try:
            yield Stack(sup, sched, sched_log)
        finally:
            sup.stopping.set()
            sup.shutdown()


def sliding_max(times: list[float], width: float = 1.0) -> int:
    """The most events in any closed window [t, t + width] (a maximal window starts at an event)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j + 1 < len(times) and times[j + 1] - start <= width:
            j += 1
        best = max(best, j - i + 1)
    return best


# -- main ---------------------------------------------------------------------------------


def run_limits(db_url: str, redis_url: str, a: argparse.Namespace) -> None:
    """--limits: alternate runs without and with flow control; the last line is JSON."""
    with_limits: list[float] = []
    without: list[float] = []
    ratios: list[float] = []
    with scratch_database(db_url, "orch_bench_limits") as scratch:
        # Unmeasured: otherwise the first run alone would meet an empty ledger.
        print(f"warm-up (not measured): {a.jobs} noop jobs without limits ...", flush=True)
        warm = run_orch(scratch, redis_url, a.jobs, a.processes, a.threads, 0)
        print(f"  run      {warm['orch_jobs_per_s']:,.0f} jobs/s ({warm['completed']} succeeded)", flush=True)
        for r in range(1, a.rounds + 1):
            # Flip the order every round so drift on a noisy machine hits both alike.
            order = (False, True) if r % 2 else (True, False)
            got: dict[bool, float] = {}
            for limits in order:
                label = "with limits" if limits else "without limits"
                print(f"[{r}/{a.rounds}] orch {label}: {a.jobs} noop jobs, {a.processes}x{a.threads} ...", flush=True)
                orch = run_orch(scratch, redis_url, a.jobs, a.processes, a.threads, a.probes, limits=limits)
                got[limits] = orch["orch_jobs_per_s"]
                print_round(orch, a.probes, keyed=False)
            with_limits.append(got[True])
            without.append(got[False])
            ratios.append(got[True] / got[False])
            print(f"  round {r}: ratio {ratios[-1]:.3f}", flush=True)
    a_med, b_med, r_med = statistics.median(with_limits), statistics.median(without), statistics.median(ratios)
    print(
        f"with limits {a_med:,.0f} jobs/s, without {b_med:,.0f} jobs/s (medians of {a.rounds} rounds); "
        f"ratio {r_med:.3f} (median of per-round ratios {', '.join(f'{x:.3f}' for x in ratios)}; target >= 0.9)"
    )
    print(
        json.dumps(
            {
                "with_limits_jobs_per_s": round(a_med, 1),
                "without_limits_jobs_per_s": round(b_med, 1),
                "ratio": round(r_med, 3),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/orch rounds; medians are reported")
    ap.add_argument("--skip-bare", action="store_true", help="skip the Dramatiq baseline (no ratio)")
    ap.add_argument("--limits", action="store_true", help="compare runs with and without flow control")
    a = ap.parse_args()
    exit_on_sigterm()
    db_url, redis_url, embedded = resolve_urls()
    if a.limits:
        try:
            run_limits(db_url, redis_url, a)
        finally:
            if embedded is not None:
                embedded.stop()  # type: ignore[attr-defined]
        return
    from bench import bare

    bares: list[float] = []
    orchs: list[dict[str, float]] = []
    try:
        # A scratch ledger: jobs left by earlier runs or tests in ORCH_DATABASE_URL's database
        # would make every figure depend on what happened before.
        with scratch_database(db_url, "orch_bench_tp") as scratch:
            for r in range(1, a.rounds + 1):
                # Alternate the two in each round so drift on a noisy machine hits both alike.
                if not a.skip_bare:
                    print(
                        f"[{r}/{a.rounds}] bare dramatiq: {a.jobs} messages, {a.processes}x{a.threads} ...", flush=True
                    )
                    bares.append(bare.run_bare(redis_url, a.jobs, a.processes, a.threads))
                    print(f"  {bares[-1]:,.0f} messages/s", flush=True)
                print(f"[{r}/{a.rounds}] orch: {a.jobs} noop jobs, {a.processes}x{a.threads} ...", flush=True)
                orch = run_orch(scratch, redis_url, a.jobs, a.processes, a.threads, a.probes)
                orchs.append(orch)
                print_round(orch, a.probes, keyed=True)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]

    def med(key: str) -> float:
        return statistics.median(o[key] for o in orchs)

    bare = statistics.median(bares) if bares else float("nan")
    ratios = [o["orch_jobs_per_s"] / b for o, b in zip(orchs, bares, strict=False)]
    result = {
        "jobs": a.jobs,
        "rounds": a.rounds,
        "orch_jobs_per_s": round(med("orch_jobs_per_s"), 1),
        "dramatiq_jobs_per_s": round(bare, 1),
        # The median of per-round ratios: each round's pair ran back to back.
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "submit_jobs_per_s": round(med("submit_jobs_per_s"), 1),
        "submit_keyed_jobs_per_s": round(med("submit_keyed_jobs_per_s"), 1),
        "dispatch_p50_ms": round(med("dispatch_p50_ms"), 2),
        "dispatch_p99_ms": round(med("dispatch_p99_ms"), 2),
        "dispatch_parts_p50_ms": {
            k: _med_or_none([o["dispatch_parts_p50_ms"][k] for o in orchs]) for k in orchs[0]["dispatch_parts_p50_ms"]
        },
        "pg_cpu_ms_per_1k_jobs": _med_or_none([o["pg_cpu_ms_per_1k_jobs"] for o in orchs]),
        "workers_cpu_ms_per_1k_jobs": _med_or_none([o["workers_cpu_ms_per_1k_jobs"] for o in orchs]),
    }
    print(json.dumps(result))


def print_round(orch: dict[str, Any], probes: int, *, keyed: bool) -> None:
    from bench import pgcpu

    print(f"  submit   {orch['submit_jobs_per_s']:,.0f} jobs/s (batch insert + doorbells)")
    if keyed:
        print(f"  keyed    {orch['submit_keyed_jobs_per_s']:,.0f} jobs/s (an idempotency key per job)")
    print(f"  run      {orch['orch_jobs_per_s']:,.0f} jobs/s ({orch['completed']} succeeded)")
    print(
        f"  cpu      {_ms(orch['pg_cpu_ms_per_1k_jobs'])} PostgreSQL, {_ms(orch['workers_cpu_ms_per_1k_jobs'])}"
        " workers (per 1,000 jobs, from the first finished jobs on; the workers' whole processes)"
    )
    pgcpu.print_statements(orch["pg_statements"], orch["measured_jobs"])
    print(
        f"  dispatch p50 {orch['dispatch_p50_ms']:.1f} ms, p99 {orch['dispatch_p99_ms']:.1f} ms"
        f" (idle, {probes} probes)",
        flush=True,
    )
    parts = orch.get("dispatch_parts_p50_ms") or {}
    if any(v is not None for v in parts.values()):
        print("  dispatch p50 parts: " + ", ".join(f"{k} {v} ms" for k, v in parts.items()), flush=True)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} ms"


def _med_or_none(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


if __name__ == "__main__":
    main()
