"""Where the worker pool's PostgreSQL backends wait: a sampled profile of `pg_stat_activity`
while `bench/throughput.py`'s Orch run drains a batch, with and without flow control.

    python bench/waits.py [--jobs 20000] [--rounds 2] [--interval-ms 10]

In a scratch database (`orch_bench_waits_*`, dropped on exit): an unmeasured warm-up run,
then --rounds pairs of runs (without limits, then with the `--limits` bucket and quota; the
order flips every round), each exactly as `throughput.py` runs Orch (2 processes x 8
threads, a scheduler, --probes idle probes after the batch). While a run's pool works, a
thread samples every --interval-ms the worker backends that are running a statement
(`state = 'active'`, application names `orch-worker-*`) and files each under its wait:
on CPU (no wait event), a lock wait (`Lock`) with the relation whose row it waits for (the
`tuple` lock a row waiter holds) and the statement waiting, or any other wait event. A
share is the fraction of those samples: where a statement's time goes, not how many
statements there are. Each sample is one query on another connection (about 0.3 ms of the
server's CPU), so the sampled runs are a little slower than unsampled ones; compare shares,
not rates, with `throughput.py`.

Uses ORCH_DATABASE_URL / ORCH_REDIS_URL, or the embedded servers (under .orch/) when unset.
The last line printed is JSON: {"plain": {"<wait>": pct, ...}, "limits": {...},
"jobs_per_s": {"plain": p, "limits": l}}, shares summed over rounds, rates medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Active worker backends and what each waits for. A backend waiting for a row holds the
#: row's `tuple` lock and waits for the holder's transaction id; the tuple lock names the
#: table.
SAMPLE_SQL = """
SELECT a.wait_event_type, a.wait_event,
       (SELECT min(l.relation::regclass::text) FROM pg_locks AS l WHERE l.pid = a.pid AND l.locktype = 'tuple'),
       substring(a.query FROM '^/\\* ([a-z_]+) \\*/')
FROM pg_stat_activity AS a
WHERE a.datname = current_database() AND a.state = 'active' AND a.application_name LIKE 'orch-worker%'
"""


def label(wait_type: str | None, wait_event: str | None, table: str | None, statement: str | None) -> str:
    """One sample's bucket: 'cpu', 'lock <table> by <statement>' or '<type>:<event>'."""
    if wait_type is None:
        return "cpu"
    if wait_type == "Lock":
        return f"lock {table or wait_event} in {statement or '?'}"
    return f"{wait_type}:{wait_event}"


class Sampler:
    """Samples the scratch database's worker backends on a thread of its own until stopped."""

    def __init__(self, url: str, interval_s: float) -> None:
        self.url, self.interval_s = url, interval_s
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="waits-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        engine = sa.create_engine(sa.make_url(self.url), poolclass=NullPool)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while not self._stop.is_set():
                    for row in conn.execute(sa.text(SAMPLE_SQL)):
                        self.counts[label(*row)] += 1
                    time.sleep(self.interval_s)
        finally:
            engine.dispose()


def shares(counts: collections.Counter[str], top: int = 12) -> dict[str, float]:
    """The largest buckets as percentages of all samples (the rest summed as 'other')."""
    total = sum(counts.values()) or 1
    out = {k: round(100 * v / total, 1) for k, v in counts.most_common(top)}
    rest = total - sum(v for _, v in counts.most_common(top))
    if rest:
        out["other"] = round(100 * rest / total, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    a = ap.parse_args()
    if a.jobs < 1 or a.rounds < 1 or a.probes < 1 or a.interval_ms <= 0:
        ap.error("--jobs, --rounds and --probes must be at least 1, --interval-ms above 0")

    from bench import throughput

    throughput.exit_on_sigterm()
    db_url, redis_url, embedded = throughput.resolve_urls()
    counts: dict[str, collections.Counter[str]] = {"plain": collections.Counter(), "limits": collections.Counter()}
    rates: dict[str, list[float]] = {"plain": [], "limits": []}
    try:
        with throughput.scratch_database(db_url, "orch_bench_waits") as scratch:
            print(f"warm-up (not sampled): {a.jobs} noop jobs without limits ...", flush=True)
            throughput.run_orch(scratch, redis_url, a.jobs, 2, 8, a.probes)
            for r in range(1, a.rounds + 1):
                for kind in ("plain", "limits") if r % 2 else ("limits", "plain"):
                    with Sampler(scratch, a.interval_ms / 1000) as s:
                        got = throughput.run_orch(scratch, redis_url, a.jobs, 2, 8, a.probes, limits=kind == "limits")
                    counts[kind] += s.counts
                    rates[kind].append(got["orch_jobs_per_s"])
                    top = ", ".join(f"{k} {v}%" for k, v in list(shares(s.counts, 4).items())[:4])
                    print(f"[{r}/{a.rounds}] {kind:6s} {got['orch_jobs_per_s']:7,.0f} jobs/s  {top}", flush=True)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    out: dict[str, Any] = {kind: shares(c) for kind, c in counts.items()}
    for kind in counts:
        print(f"{kind}: " + "; ".join(f"{k} {v}%" for k, v in out[kind].items()))
    out["jobs_per_s"] = {kind: round(statistics.median(v), 1) for kind, v in rates.items()}
    out["samples"] = {kind: sum(c.values()) for kind, c in counts.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
