"""Token-bucket accuracy under a real worker pool: many jobs, one bucket, every claim racing.

    python bench/ratelimit.py [--jobs 1000] [--rate 20] [--burst 5] [--processes 4] [--threads 8]

In a fresh scratch database: one source whose (tenant, host) bucket has rate 20/s and
capacity (burst) 5; 1,000 bench.probe jobs of that source are submitted (doorbells rung) before
the pool starts; then an `orch scheduler` process (it releases denied jobs at their
not_before) and a pool of 4 worker processes x 8 threads run them all.

Definitions. A start is a job's 'ack' row in job_history: the claim statement writes it, on the
database clock, in the same statement that takes the job's token and starts its handler.
- max_starts_in_1s: the most starts in any closed 1 s window [t, t + 1]. The bucket promises at
  most burst + rate x 1 s = 25.
- utilisation: achieved rate / configured rate, where achieved rate = (starts - burst) /
  (last start - first start): the burst is spent at the first instant, so only the tokens
  earned after it count as rate. A pool that kept the bucket empty all run scores 1.0.
Also printed: the same window on the handlers' own clock (each handler logs time.time()),
wall time (pool start to last success), 'deny' rows (a claim refused for want of a token, or
any other admission hold) and re-denials per job (deny rows beyond a job's first), and the
check that every job succeeded on attempt 1 (a denial must not use an attempt).

Uses ORCH_DATABASE_URL (its server; a scratch database is created and dropped) and
ORCH_REDIS_URL (a fresh namespace), or the embedded servers. The last line is JSON
{"max_starts_in_1s": n, "utilisation": u}. Exit code 1 when a job did not succeed on attempt 1.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import throughput  # noqa: E402 - needs ROOT on sys.path when run as a script

TENANT = "bench-rl"
SOURCE = "limited"
HOST = "ratelimit.bench.invalid"
JOB_TYPE = "bench.probe"


def measure(db_url: str, redis_url: str, a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import local_principal
    from core.ledger import db
    from worker.runtime import broker as broker_mod
    from worker.runtime import pool

    namespace = f"bench-rl-{uuid.uuid4().hex[:8]}"
    settings = throughput.use_ledger(db_url, redis_url, namespace)
    engine = db.create_engine(db_url, application_name="orch-bench")
    handlers = pool.load_handlers(["bench.handlers"])
    control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
    broker = broker_mod.build_broker(redis_url, namespace=namespace)
    principal = local_principal("bench")
    control.add_source(
        engine, principal, tenant=TENANT, name=SOURCE, host=HOST, rate=a.rate, burst=a.burst, reason="bench"
    )
    spec = control.JobSpec(TENANT, JOB_TYPE, source=SOURCE)
    ids = control.submit_many(engine, principal, [spec] * a.jobs, doorbell=broker_mod.RedisDoorbell(broker)).job_ids
    lo, hi = min(ids), max(ids)
    params = {"lo": lo, "hi": hi}
    print(f"{a.jobs} jobs submitted; bucket rate {a.rate:g}/s, burst {a.burst:g}; pool {a.processes}x{a.threads}")

    deadline_s = max(120.0, 5 * a.jobs / a.rate)
    done = 0
    try:
        with throughput.worker_stack(
            settings,
            processes=a.processes,
            threads=a.threads,
            queues=["bench"],
            handler_modules=["bench.handlers"],
        ) as stack:
            started = time.monotonic()
            next_report = started + 5
            while time.monotonic() - started < deadline_s:
                with engine.connect() as conn:
                    counts: dict[str, int] = dict(
                        conn.execute(
                            sa.text("SELECT state, count(*) FROM jobs WHERE id BETWEEN :lo AND :hi GROUP BY 1"), params
                        ).all()
                    )
                finished = sum(v for k, v in counts.items() if k in ("succeeded", "dead_lettered", "canceled"))
                done = counts.get("succeeded", 0)
                if finished >= a.jobs:
                    break
                stack.check()
                if time.monotonic() >= next_report:
                    next_report += 5
                    print(f"  {time.monotonic() - started:5.1f}s  {dict(sorted(counts.items()))}", flush=True)
                time.sleep(0.2)
            wall_s = time.monotonic() - started
    finally:
        broker.client.delete(*(broker.client.keys(f"{namespace}:*") or ["-"]))
    if done < a.jobs:
        print(f"warning: only {done} of {a.jobs} jobs succeeded within {deadline_s:.0f}s", flush=True)

    with engine.connect() as conn:
        acks = [
            float(t)
            for (t,) in conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM at) FROM job_history"
                    " WHERE event = 'ack' AND job_id BETWEEN :lo AND :hi ORDER BY at"
                ),
                params,
            )
        ]
        handler_times = [
            float(m)
            for (m,) in conn.execute(sa.text("SELECT message FROM job_logs WHERE job_id BETWEEN :lo AND :hi"), params)
        ]
        denies: dict[int, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT job_id, count(*) FROM job_history"
                    " WHERE event = 'deny' AND job_id BETWEEN :lo AND :hi GROUP BY 1"
                ),
                params,
            ).all()
        )
        deny_reasons: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT split_part(reason, ' ', 1), count(*) FROM job_history"
                    " WHERE event = 'deny' AND job_id BETWEEN :lo AND :hi GROUP BY 1"
                ),
                params,
            ).all()
        )
        outcomes = conn.execute(
            sa.text(
                "SELECT state, attempt, count(*) FROM jobs WHERE id BETWEEN :lo AND :hi GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            params,
        ).all()
        bucket = (
            conn.execute(sa.text("SELECT rate, capacity, denied_total FROM buckets WHERE host = :h"), {"h": HOST})
            .mappings()
            .one()
        )
    engine.dispose()
    return {
        "acks": acks,
        "handler_times": handler_times,
        "denies": denies,
        "deny_reasons": deny_reasons,
        "outcomes": outcomes,
        "bucket": dict(bucket),
        "wall_s": wall_s,
    }


def report(a: argparse.Namespace, m: dict[str, Any]) -> int:
    acks: list[float] = m["acks"]
    n = len(acks)
    if n < 2:
        print(f"only {n} start(s) recorded; nothing to measure")
        print(json.dumps({"max_starts_in_1s": n, "utilisation": 0.0}))
        return 1
    first, last = acks[0], acks[-1]
    span = last - first
    promise = a.burst + a.rate
    max_1s = throughput.sliding_max(acks)
    achieved = (n - a.burst) / span
    utilisation = achieved / a.rate
    handler_max = throughput.sliding_max(m["handler_times"]) if m["handler_times"] else None
    per_second = collections.Counter(int(t - first) for t in acks)
    busiest = per_second.most_common(3)

    denies: dict[int, int] = m["denies"]
    deny_rows = sum(denies.values())
    jobs_denied = len(denies)
    re_denials = deny_rows - jobs_denied
    spread = collections.Counter(denies.values())

    print(f"wall time        {m['wall_s']:.1f} s (pool start to last success)")
    print(f"starts           {n} over {span:.2f} s (first to last start, database clock)")
    print(
        f"max in any 1 s   {max_1s} starts (ledger 'ack' times; promise burst + rate = {promise:g})"
        + (f"; {handler_max} on the handlers' clock" if handler_max is not None else "")
    )
    print(f"busiest seconds  {', '.join(f'+{s}s: {c}' for s, c in sorted(busiest))} (fixed 1 s bins)")
    print(
        f"achieved rate    {achieved:.2f}/s = ({n} starts - burst {a.burst:g}) / {span:.2f} s;"
        f" utilisation {utilisation:.3f} of {a.rate:g}/s (target >= 0.95)"
    )
    gaps = [b - x for x, b in itertools.pairwise(acks)]
    print(
        f"start gaps       median {statistics.median(gaps) * 1000:.1f} ms, p99"
        f" {sorted(gaps)[int(len(gaps) * 0.99)] * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
        f" (ideal {1000 / a.rate:.1f} ms)"
    )
    longest = sorted(range(len(gaps)), key=lambda i: gaps[i], reverse=True)[:3]
    print(
        "longest gaps     "
        + ", ".join(f"{gaps[i] * 1000:.0f} ms after start {i + 1} (+{acks[i] - first:.2f}s)" for i in sorted(longest))
    )
    print(
        f"denials          {deny_rows} 'deny' rows (bucket denied_total {m['bucket']['denied_total']});"
        f" {jobs_denied} jobs denied at least once; re-denials {re_denials}"
        f" = {re_denials / a.jobs:.2f} per job; reasons {m['deny_reasons']}"
    )
    print(f"denials per job  {', '.join(f'{k}x: {v}' for k, v in sorted(spread.items()))}")
    ok = True
    for state, attempt, count in m["outcomes"]:
        good = state == "succeeded" and attempt == 1
        ok = ok and good
        print(f"jobs             {count} {state}, attempt {attempt}{'' if good else '  <-- NOT OK'}")
    succeeded = sum(c for s, at, c in m["outcomes"] if s == "succeeded" and at == 1)
    ok = ok and succeeded == a.jobs
    print(f"check            {succeeded}/{a.jobs} succeeded on attempt 1: {'OK' if ok else 'FAILED'}")
    print(f"target           max_starts_in_1s <= {promise:g}: {'met' if max_1s <= promise else 'NOT met'}")
    print(json.dumps({"max_starts_in_1s": max_1s, "utilisation": round(utilisation, 3)}))
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20.0, help="the bucket's refill rate (tokens/s)")
    ap.add_argument("--burst", type=float, default=5.0, help="the bucket's capacity")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    throughput.exit_on_sigterm()
    db_url, redis_url, embedded = throughput.resolve_urls()
    try:
        with throughput.scratch_database(db_url, "orch_bench_rl") as scratch:
            m = measure(scratch, redis_url, a)
    except KeyboardInterrupt:
        print("interrupted; processes stopped and the scratch database dropped", file=sys.stderr)
        sys.exit(130)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    sys.exit(report(a, m))


if __name__ == "__main__":
    main()
