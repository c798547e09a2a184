"""The baseline of bench/throughput.py: bare Dramatiq on the same Redis, N messages
pre-enqueued and consumed by P processes x T threads of a plain RedisBroker worker whose
actor does nothing. `run_bare` returns its messages per second."""

from __future__ import annotations

import json
import multiprocessing
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path


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
