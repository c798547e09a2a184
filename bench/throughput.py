"""End-to-end throughput of Orch against the transport's own ceiling, measured in one run.

    python bench/throughput.py [--jobs 20000] [--processes 2] [--threads 8] [--probes 200]

1. Bare Dramatiq: N messages pre-enqueued on the same Redis, consumed by P processes x T
   threads of a plain RedisBroker worker whose actor does nothing.
2. Orch: N noop jobs batch-submitted (timed: submit rate, doorbells included), then the same
   P x T worker pool runs them through the ledger (claim, ack, succeed, history).
   Throughput is N / (last finish - first start), both from the ledger's clock.
3. Dispatch latency on the idle pool: one probe job at a time, submit -> handler start.

Uses ORCH_DATABASE_URL / ORCH_REDIS_URL, or the embedded servers (under .orch/) when unset.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- bare Dramatiq ------------------------------------------------------------------------


def _bare_worker(redis_url: str, namespace: str, threads: int, out: str, ready: object) -> None:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=namespace, middleware=[])
    stamps = {"first": None, "last": None, "count": 0}
    lock = threading.Lock()

    def nothing(i: int) -> None:
        now = time.time()
        with lock:
            if stamps["first"] is None:
                stamps["first"] = now
            stamps["last"] = now
            stamps["count"] += 1

    dramatiq.Actor(nothing, broker=broker, actor_name="bench.nothing", queue_name="bench", priority=0, options={})
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    ready.set()  # type: ignore[attr-defined]
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    worker.stop(timeout=5000)
    Path(out).write_text(json.dumps(stamps))


def run_bare(redis_url: str, n: int, processes: int, threads: int) -> float:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    namespace = f"bench-bare-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=redis_url, namespace=namespace, middleware=[])
    pipe = broker.client.pipeline(transaction=False)
    key = f"{namespace}:bench"
    for start in range(0, n, 2000):
        ids, mapping = [], {}
        for i in range(start, min(n, start + 2000)):
            mid = str(uuid.uuid4())
            msg = dramatiq.Message(
                queue_name="bench", actor_name="bench.nothing", args=(i,), kwargs={}, options={"redis_message_id": mid}
            )
            ids.append(mid)
            mapping[mid] = msg.encode()
        pipe.hset(key + ".msgs", mapping=mapping)
        pipe.rpush(key, *ids)
    pipe.execute()
    ctx = multiprocessing.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    procs, readies = [], []
    for p in range(processes):
        ready = ctx.Event()
        readies.append(ready)  # keep it alive until the child has unpickled it
        proc = ctx.Process(target=_bare_worker, args=(redis_url, namespace, threads, str(tmp / f"{p}.json"), ready))
        proc.start()
        procs.append(proc)
    for ready in readies:
        ready.wait(60)
    deadline = time.monotonic() + 600
    while broker.client.hlen(key + ".msgs") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(30)
    stamps = [json.loads((tmp / f"{p}.json").read_text()) for p in range(processes)]
    broker.client.delete(*broker.client.keys(f"{namespace}:*") or ["-"])
    count = sum(s["count"] for s in stamps)
    first = min(s["first"] for s in stamps if s["first"])
    last = max(s["last"] for s in stamps if s["last"])
    if count != n:
        print(f"warning: bare dramatiq processed {count} of {n} messages", file=sys.stderr)
    return count / (last - first)


# -- Orch ---------------------------------------------------------------------------------


def run_orch(db_url: str, redis_url: str, n: int, processes: int, threads: int, probes: int) -> dict[str, float]:
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import local_principal
    from core.ledger import db
    from core.ledger import jobs as ledger
    from core.settings import get_settings
    from worker import broker as broker_mod
    from worker import pool

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

    # Every round starts from a vacuumed ledger, so rounds compare alike even on a server
    # with autovacuum off (this machine's PostgreSQL has it off).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) jobs, job_history"))
    with engine.begin() as conn:  # an aborted earlier run may have left jobs on the queue
        stale = [r[0] for r in conn.execute(sa.text("SELECT id FROM jobs WHERE queue = 'bench' AND state = 'queued'"))]
        ledger.cancel_waiting_jobs(conn, stale, actor="bench", reason="left over by an aborted benchmark")
    spec = control.JobSpec(tenant, "bench.noop")
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
        done = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.execute(
                    sa.text("SELECT count(*) FROM jobs WHERE id BETWEEN :lo AND :hi AND state = 'succeeded'"),
                    {"lo": lo, "hi": hi},
                ).scalar_one()
            if done >= n:
                break
            time.sleep(0.1)
        with engine.connect() as conn:
            first, last = conn.execute(
                sa.text("SELECT min(started_at), max(finished_at) FROM jobs WHERE id BETWEEN :lo AND :hi"),
                {"lo": lo, "hi": hi},
            ).one()
        orch_rate = done / (last - first).total_seconds()

        # Dispatch latency: the pool is idle now; one probe at a time.
        probe_spec = control.JobSpec(tenant, "bench.probe")
        latencies: list[float] = []
        for _ in range(probes):
            time.sleep(0.02)
            sent = time.time()
            job_id = control.submit(engine, principal, probe_spec, doorbell=bell)
            started = None
            wait_until = time.monotonic() + 10
            while started is None and time.monotonic() < wait_until:
                with engine.connect() as conn:
                    started = conn.execute(
                        sa.text("SELECT message FROM job_logs WHERE job_id = :id"), {"id": job_id}
                    ).scalar()
                if started is None:
                    time.sleep(0.002)
            if started is not None:
                latencies.append((float(started) - sent) * 1000)
    finally:
        sup.stopping.set()
        sup.shutdown()
        keys = broker.client.keys(f"{namespace}:*")
        if keys:
            broker.client.delete(*keys)
    latencies.sort()
    return {
        "orch_jobs_per_s": orch_rate,
        "submit_jobs_per_s": n / submit_s,
        "dispatch_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "dispatch_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan"),
        "completed": done,
    }


def resolve_urls() -> tuple[str, str, object]:
    from core.settings import get_settings
    from worker import services

    s = get_settings()
    if s.database_url and s.redis_url:
        return s.database_url, s.redis_url, None
    embedded = services.EmbeddedServices(s.data_dir)
    urls = embedded.start(postgres=s.database_url is None, redis=s.redis_url is None)
    return s.database_url or urls.database_url, s.redis_url or urls.redis_url, embedded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/orch rounds; medians are reported")
    ap.add_argument("--skip-bare", action="store_true", help="skip the Dramatiq baseline (no ratio)")
    a = ap.parse_args()
    db_url, redis_url, embedded = resolve_urls()
    bares: list[float] = []
    orchs: list[dict[str, float]] = []
    try:
        for r in range(1, a.rounds + 1):
            # Alternate the two in each round so drift on a noisy machine hits both alike.
            if not a.skip_bare:
                print(f"[{r}/{a.rounds}] bare dramatiq: {a.jobs} messages, {a.processes}x{a.threads} ...", flush=True)
                bares.append(run_bare(redis_url, a.jobs, a.processes, a.threads))
                print(f"  {bares[-1]:,.0f} messages/s", flush=True)
            print(f"[{r}/{a.rounds}] orch: {a.jobs} noop jobs, {a.processes}x{a.threads} ...", flush=True)
            orch = run_orch(db_url, redis_url, a.jobs, a.processes, a.threads, a.probes)
            orchs.append(orch)
            print(f"  submit   {orch['submit_jobs_per_s']:,.0f} jobs/s (batch insert + doorbells)")
            print(f"  run      {orch['orch_jobs_per_s']:,.0f} jobs/s ({orch['completed']} succeeded)")
            print(
                f"  dispatch p50 {orch['dispatch_p50_ms']:.1f} ms, p99 {orch['dispatch_p99_ms']:.1f} ms"
                f" (idle, {a.probes} probes)",
                flush=True,
            )
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
        "dispatch_p50_ms": round(med("dispatch_p50_ms"), 2),
        "dispatch_p99_ms": round(med("dispatch_p99_ms"), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
