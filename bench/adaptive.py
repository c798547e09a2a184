"""Adaptive refill (AIMD) against a real upstream: does the bucket find a hidden limit, and
stay there?

    python bench/adaptive.py [--limit 25] [--start-rate 100] [--burst 10] [--duration 100]
                             [--jobs 4000] [--processes 4] [--threads 8]

The upstream simulator (worker/upstream_sim.py, in this process) serves one feed with a
hidden limit of 25 requests/s (its own token bucket, capacity one second's worth = 25) and
answers 429 with Retry-After: 1 beyond it. In a fresh scratch database a source on the
simulator's host gets a bucket that starts at 100/s (capacity 10); more http_fetch jobs than
the run can finish (4,000) are submitted up front, so the source has a backlog all run long;
an `orch scheduler` process and a pool of 4 worker processes x 8 threads run them for 100 s
after the first job starts.

Definitions (database clock; the run is [first handler start, first start + duration]).
- The bucket's rate over time is the step function of its `throttles` rows (every change of
  its rate appends one: at, old rate, new rate, reason).
- converge_s: seconds from the first start until the rate enters +/-15% of the limit
  (21.25..28.75 for 25) and stays inside until the end of the run; null if it is outside at
  the end.
- post_convergence_429_share: 429 answers / all answers the simulator gave between the
  convergence moment and the end (its own counters, snapshotted every 100 ms; the first
  snapshot at or after convergence is used); null when not converged. The same share from
  the ledger (job_history 'throttle' rows / outcome rows) is printed as a cross-check.
Targets: converge_s <= 60, share <= 0.05. The rate changes, a 5 s timeline of rate, starts,
200s and 429s, and the jobs' states and attempts are printed before the last line, which is
JSON {"converge_s": s, "post_convergence_429_share": f}.

Uses ORCH_DATABASE_URL (its server; a scratch database is created and dropped) and
ORCH_REDIS_URL (a fresh namespace), or the embedded servers.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import throughput  # noqa: E402 - needs ROOT on sys.path when run as a script

TENANT = "bench-adaptive"
SOURCE = "feed"
FEED = "limited"
BAND = 0.15


@dataclass
class Run:
    t0: float  # first handler start (database clock, epoch seconds)
    t_end: float  # end of the measured run (database clock)
    offset: float  # database clock - this process's time.time()
    limit: float
    changes: list[tuple[float, float | None, float, str]]  # at, old rate, new rate, reason
    snapshots: list[tuple[float, dict[str, int]]]  # database-clock time, simulator counters
    acks: list[float]
    outcomes: list[tuple[float, str]]  # at, event (succeed, throttle, fail_*)
    states: list[tuple[str, int, int]]  # state, attempt, count

    def rate_at(self, t: float) -> float:
        rate = self.changes[0][2]
        for at, _, new, _ in self.changes:
            if at > t:
                break
            rate = new
        return rate

    def in_band(self, rate: float) -> bool:
        return self.limit * (1 - BAND) <= rate <= self.limit * (1 + BAND)

    def converged_at(self) -> float | None:
        """The moment the rate entered the band for good (database clock), or None."""
        at: float | None = self.t0 if self.in_band(self.rate_at(self.t0)) else None
        for when, _, new, _ in self.changes:
            if self.t0 < when <= self.t_end:
                if not self.in_band(new):
                    at = None
                elif at is None:
                    at = when
        return at

    def counters_at(self, t: float) -> dict[str, int]:
        """The simulator's counters at the first snapshot at or after `t` (the last one if none)."""
        times = [s[0] for s in self.snapshots]
        i = min(bisect.bisect_left(times, t), len(self.snapshots) - 1)
        return self.snapshots[i][1]


def _answers(c: dict[str, int]) -> int:
    return sum(c.values())


def measure(db_url: str, redis_url: str, a: argparse.Namespace) -> Run:
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import local_principal
    from core.ledger import db
    from worker.devtools.upstream_sim import FeedConfig, UpstreamSim
    from worker.runtime import broker as broker_mod
    from worker.runtime import pool

    namespace = f"bench-ad-{uuid.uuid4().hex[:8]}"
    settings = throughput.use_ledger(db_url, redis_url, namespace)
    engine = db.create_engine(db_url, application_name="orch-bench")
    handlers = pool.load_handlers([])
    control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
    broker = broker_mod.build_broker(redis_url, namespace=namespace)
    principal = local_principal("bench")

    def db_now() -> float:
        with engine.connect() as conn:
            return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())

    before = time.time()
    db_time = db_now()
    offset = db_time - (before + time.time()) / 2

    sim = UpstreamSim(port=0, feeds={FEED: FeedConfig(rate_limit=a.limit)}).start()
    stop_sampling = threading.Event()
    snapshots: list[tuple[float, dict[str, int]]] = []

    def sample() -> None:
        while not stop_sampling.is_set():
            snapshots.append((time.time() + offset, sim.stats()[FEED]))
            stop_sampling.wait(0.1)

    sampler = threading.Thread(target=sample, name="sim-sampler", daemon=True)
    try:
        host = f"127.0.0.1:{sim.port}"
        src = control.add_source(  # the simulator listens on loopback, which http_fetch refuses unless allowed
            engine,
            principal,
            tenant=TENANT,
            name=SOURCE,
            host=host,
            rate=a.start_rate,
            burst=a.burst,
            allow_private=True,
            reason="bench",
        )
        specs = [
            control.JobSpec(
                TENANT,
                "http_fetch",
                {"url": f"{sim.url}/feeds/{FEED}/items?page={i + 1}", "parse": True, "timeout_s": 10.0},
                source=SOURCE,
            )
            for i in range(a.jobs)
        ]
        bell = broker_mod.RedisDoorbell(broker)
        for start in range(0, a.jobs, 5000):
            control.submit_many(engine, principal, specs[start : start + 5000], doorbell=bell)
        print(
            f"{a.jobs} http_fetch jobs on {sim.url}/feeds/{FEED}; hidden limit {a.limit:g}/s"
            f" (simulator burst {sim.feeds()[FEED].capacity:g}, Retry-After {sim.feeds()[FEED].retry_after_s:g}s);"
            f" bucket starts at {a.start_rate:g}/s, burst {a.burst:g}; pool {a.processes}x{a.threads};"
            f" {a.duration:g}s run",
            flush=True,
        )
        sampler.start()
        with throughput.worker_stack(
            settings, processes=a.processes, threads=a.threads, queues=["default"], handler_modules=[]
        ) as stack:
            t0: float | None = None
            wait_until = time.monotonic() + 120
            while t0 is None and time.monotonic() < wait_until:
                with engine.connect() as conn:
                    t0 = conn.execute(
                        sa.text("SELECT extract(epoch FROM min(at)) FROM job_history WHERE event = 'ack'")
                    ).scalar()
                if t0 is None:
                    stack.check()
                    time.sleep(0.1)
            if t0 is None:
                raise SystemExit("no job started within 120 s of the pool's start")
            t0 = float(t0)
            next_report = t0 + 10
            while (now := db_now()) < t0 + a.duration:
                stack.check()
                if now >= next_report:
                    next_report += 10
                    with engine.connect() as conn:
                        rate = conn.execute(
                            sa.text("SELECT rate FROM buckets WHERE host = :h"), {"h": host}
                        ).scalar_one()
                        done = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE state = 'succeeded'")).scalar_one()
                    c = sim.stats()[FEED]
                    print(
                        f"  +{now - t0:5.1f}s  bucket {rate:6.2f}/s  simulator 200: {c['ok']}, 429: {c['throttled']}"
                        f"  succeeded {done}",
                        flush=True,
                    )
                time.sleep(min(0.2, max(0.0, t0 + a.duration - now)))
            t_end = db_now()
            snapshots.append((time.time() + offset, sim.stats()[FEED]))
            stop_sampling.set()
    finally:
        stop_sampling.set()
        sim.stop()
        broker.client.delete(*(broker.client.keys(f"{namespace}:*") or ["-"]))

    with engine.connect() as conn:
        bucket_id = conn.execute(sa.text("SELECT bucket_id FROM sources WHERE id = :id"), {"id": src.id}).scalar_one()
        changes = [
            (float(at), None if old is None else float(old), float(new), reason)
            for at, old, new, reason in conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM at), old_rate, new_rate, reason FROM throttles"
                    " WHERE bucket_id = :b ORDER BY at, id"
                ),
                {"b": bucket_id},
            )
        ]
        acks = [
            float(t)
            for (t,) in conn.execute(
                sa.text("SELECT extract(epoch FROM at) FROM job_history WHERE event = 'ack' ORDER BY at")
            )
        ]
        outcomes = [
            (float(t), e)
            for t, e in conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM at), event FROM job_history"
                    " WHERE event IN ('succeed', 'throttle', 'fail_retryable', 'fail_final') ORDER BY at"
                )
            )
        ]
        states = [
            (s, int(at), int(n))
            for s, at, n in conn.execute(
                sa.text("SELECT state, attempt, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            )
        ]
    engine.dispose()
    return Run(t0, t_end, offset, a.limit, changes, sorted(snapshots), acks, outcomes, states)


def _compressed_changes(run: Run) -> list[str]:
    """One line per decrease or manual change; consecutive raises folded into one line."""
    lines: list[str] = []
    raises: list[tuple[float, float | None, float, str]] = []

    def flush() -> None:
        if raises:
            t_a, t_b = raises[0][0] - run.t0, raises[-1][0] - run.t0
            lines.append(
                f"  +{t_a:6.2f}s..+{t_b:6.2f}s  raised {raises[0][1] or 0:6.2f} -> {raises[-1][2]:6.2f}"
                f" in {len(raises)} step(s)"
            )
            raises.clear()

    for change in run.changes:
        at, old, new, reason = change
        if reason.startswith("successes"):
            raises.append(change)
            continue
        flush()
        old_text = "   new" if old is None else f"{old:6.2f}"
        lines.append(f"  +{at - run.t0:6.2f}s             {old_text} -> {new:6.2f}  {reason}")
    flush()
    return lines


def report(run: Run, a: argparse.Namespace) -> None:
    lo, hi = run.limit * (1 - BAND), run.limit * (1 + BAND)
    print(f"rate changes (time since the first start; band {lo:g}..{hi:g}):")
    for line in _compressed_changes(run):
        print(line)

    print("timeline (5 s bins: bucket rate at the bin's end [min..max], handler starts, simulator 200s and 429s):")
    edges = [run.t0 + i * 5.0 for i in range(int((run.t_end - run.t0) // 5) + 1)] + [run.t_end]
    for b0, b1 in itertools.pairwise(edges):
        if b1 - b0 < 0.5:
            continue
        inside = [new for at, _, new, _ in run.changes if b0 < at <= b1]
        rates = [run.rate_at(b0), *inside]
        starts = bisect.bisect_right(run.acks, b1) - bisect.bisect_right(run.acks, b0)
        c0, c1 = run.counters_at(b0), run.counters_at(b1)
        ok = c1["ok"] - c0["ok"]
        n429 = c1["throttled"] - c0["throttled"]
        print(
            f"  +{b0 - run.t0:5.1f}..+{b1 - run.t0:5.1f}s  rate {run.rate_at(b1):6.2f}"
            f" [{min(rates):6.2f}..{max(rates):6.2f}]"
            f"  starts {starts / (b1 - b0):5.1f}/s  200s {ok / (b1 - b0):5.1f}/s  429s {n429:4d}"
        )

    total = run.counters_at(run.t_end)
    print(
        f"simulator        {_answers(total)} answers: {total['ok']} x 200, {total['throttled']} x 429,"
        f" {total['errors']} x 5xx; 200s/s over the run {total['ok'] / (run.t_end - run.t0):.2f}"
        f" (limit {run.limit:g})"
    )
    for state, attempt, count in run.states:
        print(f"jobs             {count} {state}, attempt {attempt}")

    conv = run.converged_at()
    converge_s: float | None = None
    share: float | None = None
    if conv is None:
        print(
            f"converge         NOT converged: the rate is {run.rate_at(run.t_end):.2f}/s at the end,"
            f" outside {lo:g}..{hi:g}"
        )
        tail = run.t_end - (run.t_end - run.t0) / 3
        c0, c1 = run.counters_at(tail), run.counters_at(run.t_end)
        d = _answers(c1) - _answers(c0)
        if d:
            print(f"last third       429 share {(c1['throttled'] - c0['throttled']) / d:.4f} of {d} answers")
    else:
        converge_s = conv - run.t0
        c0, c1 = run.counters_at(conv), run.counters_at(run.t_end)
        answers = _answers(c1) - _answers(c0)
        n429 = c1["throttled"] - c0["throttled"]
        share = n429 / answers if answers else None  # nothing answered after it: no share
        after = [e for t, e in run.outcomes if conv <= t <= run.t_end]
        ledger_share = after.count("throttle") / len(after) if after else 0.0
        print(
            f"converge         {converge_s:.1f} s after the first start (target <= 60); rate at the end"
            f" {run.rate_at(run.t_end):.2f}/s"
        )
        print(
            f"after that       {n429} x 429 of {answers} answers: share"
            f" {'n/a' if share is None else f'{share:.4f}'} (target <= 0.05);"
            f" ledger: {after.count('throttle')} 'throttle' of {len(after)} outcomes = {ledger_share:.4f}"
        )
        print(
            f"                 200s/s after convergence {(c1['ok'] - c0['ok']) / max(1e-9, run.t_end - conv):.2f}"
            f" (limit {run.limit:g})"
        )
    print(
        json.dumps(
            {
                "converge_s": None if converge_s is None else round(converge_s, 1),
                "post_convergence_429_share": None if share is None else round(share, 4),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=25.0, help="the simulator's hidden limit (requests/s)")
    ap.add_argument("--start-rate", type=float, default=100.0, help="the bucket's configured (starting) rate")
    ap.add_argument("--burst", type=float, default=10.0, help="the bucket's capacity")
    ap.add_argument("--duration", type=float, default=100.0, help="seconds measured from the first start")
    ap.add_argument("--jobs", type=int, default=4000, help="submitted up front; more than the run can finish")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    throughput.exit_on_sigterm()
    db_url, redis_url, embedded = throughput.resolve_urls()
    try:
        with throughput.scratch_database(db_url, "orch_bench_adaptive") as scratch:
            run = measure(scratch, redis_url, a)
    except KeyboardInterrupt:
        print("interrupted; processes stopped and the scratch database dropped", file=sys.stderr)
        sys.exit(130)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    report(run, a)


if __name__ == "__main__":
    main()
