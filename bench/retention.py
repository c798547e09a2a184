"""Retention on a big ledger: the built batched deletes against dropping day partitions of
job_history, each with the latency of a hot submit/claim/succeed loop beside it.

    python bench/retention.py [--jobs 200000] [--days 60] [--baseline-s 15] [--hot-interval-ms 20]
                              [--reads 300] [--insert-rounds 6] [--insert-tx 300]

In a scratch database on the server of ORCH_DATABASE_URL (`orch_bench_retention_<pid>_*`,
dropped on exit, on Ctrl-C and on SIGTERM), bench/retention_seed.py seeds --jobs finished jobs
created evenly over --days days (about 5 history rows each, logs, artifacts, DAG runs), so
that with the default 30-day retention about half have expired, and builds the bench's own
copy of job_history partitioned by day on `at` (not a migration: the product has none).

1. Batched deletes: core.control.retention.prune (default_days=30, batch 1000, no budget: the
   whole backlog, as `orch ledger prune` runs it), then VACUUM of the tables it deleted from.
2. Partitions: the expired day partitions of the copy go (rows that must be kept moved out
   first, then DETACH PARTITION ... CONCURRENTLY and DROP TABLE).
3. What partitioning costs the hot path: a job's history read by job_id (no partition can be
   pruned) and small history inserts, plain table against partitioned one.

A hot loop runs in a thread throughout: submit one job (control.submit_many), claim and start
it (claim_and_start_jobs), succeed it (succeed_jobs), each its own transaction as the pump's;
for the partition arm its succeed's transaction also copies the job's history rows into the
partitioned copy. Its latency is compared with the same loop in a quiet baseline window just
before each arm. The table goes to stdout; the last line is JSON. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import console, throughput  # noqa: E402 - needs ROOT on sys.path when run as a script
from bench import retention_seed as seeding  # noqa: E402

RETENTION_DAYS, OUTBOX_DAYS, BATCH = 30, 7, 1000
TABLES = ("jobs", "job_history", "job_logs", "artifacts")
PART, KEPT = seeding.PART, seeding.KEPT
HOT_TENANT = "hot"

NOTES = (
    "jobs and runs cannot be partitioned by finish time: a job's finished_at is set (and a run's"
    " changes) long after its row is written, a dead letter and its history stay until an operator"
    " removes them, and a run goes as a unit; so jobs, runs, artifacts and results are deleted in"
    " batches either way, and partitions could only take job_history (and job_logs, alike).",
    "a day partition can only be dropped when nothing in it must be kept: the history of dead letters,"
    " of jobs of runs not pruned yet, of jobs a kept job replays, of jobs that ended after the cutoff."
    " Here the batched prune runs first, so the rows to keep are exactly those whose job is still in"
    f" jobs; they are copied into {KEPT} (a plain table beside the partitions: a default partition"
    " would forbid DETACH CONCURRENTLY) before the detach, and a job's history read must then read"
    " both (the read below does).",
    "partitions cut whole UTC days: history stays up to a day past the retention; and a day is shared by"
    " every tenant, so with tenants.retention_days it can only go after the longest retention, the"
    " shorter ones still being deleted in batches.",
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")


def r3(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 3)


# -- the hot loop ---------------------------------------------------------------------------


class HotLoop:
    """Submit one job, claim and start it, succeed it (three transactions, as the API and the
    pump make them), every `interval_s`. `mirror` on: the succeed's transaction also copies the
    job's history rows into PART, the loop's writes to the partitioned history."""

    def __init__(self, url: str, interval_s: float) -> None:
        from core.ledger import db

        self.engine = db.create_engine(url, pool_size=2, application_name="orch-bench-hot")
        self.interval_s, self.mirror = interval_s, False
        #: (start on the monotonic clock, cycle ms, claim ms, mirror)
        self.samples: list[tuple[float, float, float, bool]] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hot-loop", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self.engine.dispose()

    def _run(self) -> None:
        import sqlalchemy as sa

        from core import control
        from core.domain.auth import local_principal
        from core.ledger import jobs as ledger

        p, bell = local_principal("bench"), control.NoDoorbell()
        spec = control.JobSpec(HOT_TENANT, seeding.JOB_TYPE, {"hot": True})
        copy = sa.text(f"INSERT INTO {PART} SELECT * FROM job_history WHERE job_id = :id")
        owner, types = "worker:bench-hot", [seeding.JOB_TYPE]
        nxt = time.monotonic()
        while not self.stopping.is_set():
            try:
                t0 = time.monotonic()
                control.submit_many(self.engine, p, [spec], doorbell=bell)
                t1 = time.monotonic()
                with self.engine.begin() as conn:
                    got = ledger.claim_and_start_jobs(conn, queue=seeding.QUEUE, limit=1, owner=owner, job_types=types)
                t2 = time.monotonic()
                mirror = self.mirror
                with self.engine.begin() as conn:
                    ids, leases = [int(r["id"]) for r in got], [r["lease_id"] for r in got]
                    ledger.succeed_jobs(conn, ids, leases, actor=owner)
                    if mirror:
                        for job_id in ids:
                            conn.execute(copy, {"id": job_id})
                t3 = time.monotonic()
                self.samples.append((t0, (t3 - t0) * 1000, (t2 - t1) * 1000, mirror))
            except Exception as exc:  # a failing hot path is a finding: count it and go on
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            nxt = max(nxt + self.interval_s, time.monotonic())
            self.stopping.wait(max(0.0, nxt - time.monotonic()))

    def stats(self, t0: float, t1: float) -> dict[str, Any]:
        """Cycles that started in [t0, t1]."""
        got = [s for s in list(self.samples) if t0 <= s[0] <= t1]
        cyc, claim = [s[1] for s in got], [s[2] for s in got]
        return {
            "hot_p50_ms": r3(pct(cyc, 0.5)),
            "hot_p99_ms": r3(pct(cyc, 0.99)),
            "hot_max_ms": r3(max(cyc, default=float("nan"))),
            "claim_p50_ms": r3(pct(claim, 0.5)),
            "claim_p99_ms": r3(pct(claim, 0.99)),
            "hot_samples": len(got),
        }

    def window(self, seconds: float) -> dict[str, Any]:
        t0 = time.monotonic()
        time.sleep(seconds)
        return self.stats(t0, time.monotonic())


# -- sizes, the delete statement's split ----------------------------------------------------

SIZE_SQL = """SELECT sum(pg_relation_size(r)), sum(pg_indexes_size(r)) FROM (
    SELECT relid AS r FROM pg_partition_tree(CAST(:t AS regclass)) WHERE isleaf
    UNION SELECT oid FROM pg_class WHERE oid = CAST(:t AS regclass) AND relkind = 'r') AS x"""


def sizes(conn: Any, tables: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Main fork and indexes of each table (a partitioned one's partitions summed), MB."""
    import sqlalchemy as sa

    out = {}
    for t in tables:
        heap, idx = conn.execute(sa.text(SIZE_SQL), {"t": t}).one()
        out[t] = {"heap_mb": round(int(heap or 0) / 2**20, 1), "index_mb": round(int(idx or 0) / 2**20, 1)}
    return out


def delete_split(engine: Any, batches: int = 3) -> dict[str, Any]:
    """EXPLAIN ANALYZE of `delete_jobs` on the first `batches` batches the prune will take,
    each rolled back: the time of each table's delete (its ModifyTable node, the scan for its
    rows included) and of the foreign-key triggers, against the statement's."""
    import sqlalchemy as sa

    from core.ledger import retention as ledger
    from core.ledger.statements import stmt

    explain = sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + stmt("delete_jobs").text)
    parts: dict[str, float] = {}
    total = 0.0
    with engine.connect() as conn:
        tenant = int(ledger.retention_groups(conn, RETENTION_DAYS)[0]["id"])
        ids = ledger.prunable_jobs(conn, tenant, RETENTION_DAYS, BATCH * batches)
        conn.rollback()
        for i in range(batches):
            plan = conn.execute(explain, {"ids": ids[i * BATCH : (i + 1) * BATCH]}).scalar_one()
            conn.rollback()
            top = (json.loads(plan) if isinstance(plan, str) else plan)[0]
            total += float(top["Execution Time"])
            stack = [top["Plan"]]
            while stack:
                node = stack.pop()
                if node["Node Type"] == "ModifyTable":
                    key = f"{node['Operation'].lower()} {node['Relation Name']}"
                    parts[key] = parts.get(key, 0.0) + float(node["Actual Total Time"]) * int(node["Actual Loops"])
                stack += node.get("Plans", [])
            for trig in top.get("Triggers", []):
                key = f"fk {trig.get('Constraint Name', trig['Trigger Name'])}"
                parts[key] = parts.get(key, 0.0) + float(trig["Time"])
    share = parts.get("delete job_history", 0.0) / total if total else float("nan")
    per_batch = {k: round(v / batches, 2) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}
    return {"ms_per_batch": per_batch, "statement_ms_per_batch": round(total / batches, 2), "history_share": r3(share)}


# -- the two arms ---------------------------------------------------------------------------


def batched_deletes(url: str, hot: HotLoop, baseline_s: float) -> dict[str, Any]:
    import sqlalchemy as sa

    from core.control import retention
    from core.ledger import db

    engine = db.create_engine(url, application_name="orch-bench-prune")
    try:
        with engine.connect() as conn:
            before = sizes(conn, TABLES)
        say("delete_jobs split (EXPLAIN ANALYZE of 3 batches, rolled back) ...")
        split = delete_split(engine)
        say(f"hot loop baseline ({baseline_s:g} s) ...")
        base = hot.window(baseline_s)
        say("retention prune (30 days, batch 1000, to the end), hot loop running ...")
        t0 = time.monotonic()
        result = retention.prune(engine, default_days=RETENTION_DAYS, outbox_days=OUTBOX_DAYS, batch=BATCH)
        t1 = time.monotonic()
        during = hot.stats(t0, t1)
        with engine.connect() as conn:
            after = sizes(conn, TABLES)
        say("VACUUM of the tables it deleted from, hot loop running ...")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            v0 = time.monotonic()
            conn.execute(sa.text(f"VACUUM (ANALYZE) {', '.join(TABLES)}, runs, run_jobs, events"))
            v1 = time.monotonic()
            vacuumed = sizes(conn, TABLES)
        vac = hot.stats(v0, v1)
    finally:
        engine.dispose()
    removed = {k: int(v) for k, v in result.removed.items() if v}
    rows = sum(removed.values())
    return {
        "seconds": r3(result.seconds),
        "removed": removed,
        "rows_per_s": round(rows / result.seconds),
        "jobs_per_s": round(removed.get("jobs", 0) / result.seconds),
        "history_rows_per_s": round(removed.get("history", 0) / result.seconds),
        **during,
        **{f"baseline_{k}": v for k, v in base.items()},
        "vacuum_s": r3(v1 - v0),
        "vacuum_hot_p50_ms": vac["hot_p50_ms"],
        "vacuum_hot_p99_ms": vac["hot_p99_ms"],
        "delete_split": split,
        #: What partitions could save at most: the prune's seconds times job_history's share.
        "history_delete_s_est": r3(result.seconds * split["history_share"]) if split["history_share"] else None,
        "sizes": {"before": before, "after": after, "after_vacuum": vacuumed},
    }


PARTITIONS_SQL = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = '{p}'::regclass ORDER BY 1"
SAMPLE_SQL = """SELECT id FROM jobs WHERE queue = :q AND finished_at > now() - interval '29 days'
ORDER BY hashint8(id) LIMIT :n"""


def day_end(partition: str) -> dt.datetime | None:
    """Where the day partition PART_YYYYMMDD ends."""
    m = re.fullmatch(rf"{PART}_(\d{{8}})", partition)
    return None if m is None else dt.datetime.strptime(m[1], "%Y%m%d").replace(tzinfo=dt.UTC) + dt.timedelta(days=1)


KEPT_SQL = """SELECT count(*) AS rows, count(DISTINCT h.job_id) AS jobs,
    count(DISTINCT h.job_id) FILTER (WHERE j.state = 'dead_lettered') AS dead_letters,
    count(DISTINCT h.job_id) FILTER (WHERE j.run_id IS NOT NULL AND j.state <> 'dead_lettered') AS of_kept_runs,
    count(DISTINCT h.job_id) FILTER (WHERE j.run_id IS NULL AND j.state <> 'dead_lettered'
                                     AND EXISTS (SELECT 1 FROM jobs AS r WHERE r.replay_of = j.id)) AS replayed,
    count(DISTINCT h.job_id) FILTER (WHERE j.finished_at >= now() - make_interval(days => :days)) AS young
FROM {p} AS h JOIN jobs AS j ON j.id = h.job_id"""


def drop_partitions(url: str, hot: HotLoop, baseline_s: float) -> dict[str, Any]:
    """Detach and drop the day partitions of PART that ended before the cutoff, after moving
    the rows that must be kept (their job is still in jobs, the batched prune having run) to
    KEPT. Counted first, outside the timed part."""
    import sqlalchemy as sa

    from core.ledger import db

    engine = db.create_engine(url, application_name="orch-bench-partitions")
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            names = [str(r[0]) for r in conn.execute(sa.text(PARTITIONS_SQL.format(p=PART)))]
            expired = [n for n in names if (end := day_end(n)) is not None and end <= cutoff]
            say(f"counting the rows of {len(expired)} expired partitions and those to keep ...")
            rows = kept_jobs = 0
            why: dict[str, int] = {}
            for n in expired:
                rows += int(conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one())
                k = conn.execute(sa.text(KEPT_SQL.format(p=n)), {"days": RETENTION_DAYS}).mappings().one()
                kept_jobs += int(k["jobs"])
                for key in ("rows", "dead_letters", "of_kept_runs", "replayed", "young"):
                    why[key] = why.get(key, 0) + int(k[key])
            before = sizes(conn, (PART,))
            hot.mirror = True
            time.sleep(1.0)
            say(f"hot loop baseline, writing {PART} too ({baseline_s:g} s) ...")
            base = hot.window(baseline_s)
            say(f"moving kept rows, DETACH CONCURRENTLY and DROP of {len(expired)} partitions, hot loop running ...")
            steps = {"move_kept_s": 0.0, "detach_s": 0.0, "drop_s": 0.0}
            worst = 0.0
            t0 = time.monotonic()
            for n in expired:
                a = time.monotonic()
                conn.execute(sa.text(f"INSERT INTO {KEPT} SELECT * FROM {n} WHERE job_id IN (SELECT id FROM jobs)"))
                b = time.monotonic()
                conn.execute(sa.text(f"ALTER TABLE {PART} DETACH PARTITION {n} CONCURRENTLY"))
                c = time.monotonic()
                conn.execute(sa.text(f"DROP TABLE {n}"))
                d = time.monotonic()
                steps["move_kept_s"] += b - a
                steps["detach_s"] += c - b
                steps["drop_s"] += d - c
                worst = max(worst, d - a)
            t1 = time.monotonic()
            during = hot.stats(t0, t1)
            after = sizes(conn, (PART,))
            left = len(names) - len(expired)
    finally:
        engine.dispose()
    seconds = t1 - t0
    return {
        "partitions_before": len(names),
        "dropped": len(expired),
        "partitions_after": left,
        "history_rows_removed": rows - why.get("rows", 0),
        "seconds": r3(seconds),
        "history_rows_per_s": round((rows - why.get("rows", 0)) / seconds) if seconds else None,
        **{k: r3(v) for k, v in steps.items()},
        "worst_partition_s": r3(worst),
        "kept_rows": why.get("rows", 0),
        "kept_jobs": kept_jobs,
        "kept_why_jobs": {k: v for k, v in why.items() if k != "rows"},
        **during,
        **{f"baseline_{k}": v for k, v in base.items()},
        "sizes": {"before": before, "after": after},
    }


# -- what partitioning costs the hot path ---------------------------------------------------

COLS = "from_state, to_state, event, at, actor, reason, attempt"
READ = "SELECT {c} FROM {t} WHERE job_id = :id"
READS = {
    "plain": READ.format(c=COLS, t="job_history") + " ORDER BY id",
    "partitioned": READ.format(c=COLS, t=PART) + " ORDER BY id",
    "partitioned+kept": f"SELECT {COLS} FROM ({READ.format(c='id, ' + COLS, t=PART)}"
    f" UNION ALL {READ.format(c='id, ' + COLS, t=KEPT)}) AS h ORDER BY id",
}


def reads(url: str, n: int) -> dict[str, Any]:
    """The console's read of one job's history (core.ledger.reads.jobs.history), on the plain
    table and on the partitioned copy (with and without KEPT), for n jobs of the last 30 days
    in the same order (interleaved), after one untimed pass; on the console's engine (custom
    plans until psycopg prepares) and the CLI's (generic plans). Plus each one's plan."""
    import sqlalchemy as sa

    from core.ledger import db

    engines = {"console": sa.create_engine(url, pool_size=1), "cli": db.create_engine(url, pool_size=1)}
    out: dict[str, Any] = {}
    try:
        with engines["console"].connect() as conn:
            got = conn.execute(sa.text(SAMPLE_SQL), {"q": seeding.QUEUE, "n": n})
            ids = [int(r[0]) for r in got]
        for ename, engine in engines.items():
            with engine.connect() as conn:
                times: dict[str, list[float]] = {k: [] for k in READS}
                for timed in (False, True):
                    for job_id in ids:
                        for name, sql in READS.items():
                            t = time.perf_counter()
                            conn.execute(sa.text(sql), {"id": job_id}).all()
                            if timed:
                                times[name].append((time.perf_counter() - t) * 1000)
                    conn.rollback()
                for name, xs in times.items():
                    out[f"{ename}.{name}"] = {"p50_ms": r3(pct(xs, 0.5)), "p95_ms": r3(pct(xs, 0.95))}
        with engines["console"].connect() as conn:  # after the timings: warm caches, as timed
            for name, sql in READS.items():
                lines = [r[0] for r in conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + sql), {"id": ids[0]})]
                plan = "\n".join(lines)
                out[f"plan.{name}"] = {
                    "index_scans": len(re.findall(r"Index (?:Only )?Scan", plan)),
                    "planning_ms": float(m[1]) if (m := re.search(r"Planning Time: ([\d.]+)", plan)) else None,
                    "execution_ms": float(m[1]) if (m := re.search(r"Execution Time: ([\d.]+)", plan)) else None,
                    "top": lines[:4],
                }
    finally:
        for e in engines.values():
            e.dispose()
    return out


INSERT = """INSERT INTO {t} (job_id, from_state, event, to_state, actor, attempt) VALUES
(:j, NULL, 'submit', 'queued', 'api:bench', 0), (:j, 'queued', 'claim', 'leased', 'worker:bench-1', 1),
(:j, 'leased', 'ack', 'running', 'worker:bench-1', 1), (:j, 'running', 'succeed', 'succeeded', 'worker:bench-1', 1)"""


def inserts(url: str, rounds: int, per_round: int) -> dict[str, Any]:
    """History rows/s of small transactions (4 rows each: a job's submit, claim, ack and
    success) into the plain table and the partitioned copy, on the workers' engine setting
    (asynchronous commit, ADR 0003; generic plans); rounds alternate the two tables, the
    order flipping every round. Rows/s is the median over rounds."""
    import sqlalchemy as sa

    from core.ledger import db

    engine = db.create_engine(url, pool_size=1, synchronous_commit=False, application_name="orch-bench-insert")
    tables = {"plain": "job_history", "partitioned": PART}
    rates: dict[str, list[float]] = {k: [] for k in tables}
    lat: dict[str, list[float]] = {k: [] for k in tables}
    job = 10**12
    try:
        with engine.connect() as conn:
            for r in range(rounds + 1):  # round 0 warms up
                for name in list(tables) if r % 2 else list(tables)[::-1]:
                    sql = sa.text(INSERT.format(t=tables[name]))
                    t0 = time.perf_counter()
                    for _ in range(per_round):
                        job += 1
                        t = time.perf_counter()
                        conn.execute(sql, {"j": job})
                        conn.commit()
                        if r:
                            lat[name].append((time.perf_counter() - t) * 1000)
                    if r:
                        rates[name].append(4 * per_round / (time.perf_counter() - t0))
    finally:
        engine.dispose()
    return {
        name: {
            "rows_per_s": round(statistics.median(rates[name])),
            "tx_p50_ms": r3(pct(lat[name], 0.5)),
            "tx_p99_ms": r3(pct(lat[name], 0.99)),
        }
        for name in tables
    }


# -- report ---------------------------------------------------------------------------------


def ratio(a: Any, b: Any) -> float | None:
    return None if a is None or b in (None, 0) else round(float(a) / float(b), 3)


def row(k: str, a: Any, b: Any = "") -> None:
    print(f"{k:<46} {a!s:>18} {b!s:>18}")


def pair(x: dict[str, Any], a: str, b: str) -> str:
    return f"{x[a]} / {x[b]}"


def report(out: dict[str, Any]) -> None:
    d, p, rd, ins = out["delete"], out["partitions"], out["read_by_job"], out["insert"]
    print(f"\nretention on {out['jobs']:,} jobs over {out['days']} days (retention {RETENTION_DAYS} days)\n")
    print("sizes are heap + indexes")
    row("", "batched deletes", "day partitions")
    row("what goes", "jobs and all", "job_history only")
    row("seconds", d["seconds"], p["seconds"])
    row("history rows removed", f"{d['removed'].get('history', 0):,}", f"{p['history_rows_removed']:,}")
    row("history rows/s", f"{d['history_rows_per_s']:,}", f"{p['history_rows_per_s']:,}")
    row("all rows/s (jobs, history, logs, ...)", f"{d['rows_per_s']:,}", "-")
    row(
        "s of it deleting history (EXPLAIN share)",
        f"{d['history_delete_s_est']} ({d['delete_split']['history_share']:.0%})",
        "-",
    )
    for label, a, b in (
        ("hot cycle p50 / p99 ms, during", "hot_p50_ms", "hot_p99_ms"),
        ("hot cycle p50 / p99 ms, baseline", "baseline_hot_p50_ms", "baseline_hot_p99_ms"),
        ("claim p50 / p99 ms, during", "claim_p50_ms", "claim_p99_ms"),
        ("claim p50 / p99 ms, baseline", "baseline_claim_p50_ms", "baseline_claim_p99_ms"),
        ("hot max ms / samples, during", "hot_max_ms", "hot_samples"),
    ):
        row(label, pair(d, a, b), pair(p, a, b))
    row("VACUUM afterwards s (hot p99 ms)", f"{d['vacuum_s']} ({d['vacuum_hot_p99_ms']})", "not needed")
    row("rows kept (moved out first) / of jobs", "-", pair(p, "kept_rows", "kept_jobs"))
    sz = d["sizes"]
    for t in TABLES:
        mb = [sz[k][t]["heap_mb"] + sz[k][t]["index_mb"] for k in ("before", "after", "after_vacuum")]
        row(f"{t} MB before/after/vacuumed", "/".join(f"{x:.0f}" for x in mb))
    mb = [p["sizes"][k][PART]["heap_mb"] + p["sizes"][k][PART]["index_mb"] for k in ("before", "after")]
    row(f"{PART} MB before/after", "", "/".join(f"{x:.0f}" for x in mb))
    split = d["delete_split"]
    print(
        f"\ndelete_jobs per batch of {BATCH} (EXPLAIN ANALYZE, 3 batches): {split['statement_ms_per_batch']} ms;"
        f" job_history's delete is {split['history_share']:.0%} of it: {split['ms_per_batch']}"
    )
    print("\nhot path, plain job_history vs partitioned by day:")
    row("", "plain", "partitioned")
    for e in ("console", "cli"):
        row(
            f"{e}: history of one job p50 / p95 ms",
            pair(rd[f"{e}.plain"], "p50_ms", "p95_ms"),
            pair(rd[f"{e}.partitioned"], "p50_ms", "p95_ms"),
        )
        row(f"{e}: the same with {KEPT}", "", pair(rd[f"{e}.partitioned+kept"], "p50_ms", "p95_ms"))
    row(
        "plan: index scans / planning ms",
        pair(rd["plan.plain"], "index_scans", "planning_ms"),
        pair(rd["plan.partitioned"], "index_scans", "planning_ms"),
    )
    row("history inserts rows/s (4-row tx)", f"{ins['plain']['rows_per_s']:,}", f"{ins['partitioned']['rows_per_s']:,}")
    row(
        "history insert tx p50 / p99 ms",
        pair(ins["plain"], "tx_p50_ms", "tx_p99_ms"),
        pair(ins["partitioned"], "tx_p50_ms", "tx_p99_ms"),
    )
    print("\nplan of the partitioned read (top):\n  " + "\n  ".join(rd["plan.partitioned"]["top"]))
    print("\nconstraints:\n- " + "\n- ".join(NOTES))
    print(f"\nratios: {out['ratios']}")
    if out["hot_errors"]:
        print(f"hot loop errors: {out['hot_errors'][:5]}")
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=60, help="the jobs are created evenly over this many days")
    ap.add_argument("--baseline-s", type=float, default=15.0, help="quiet hot-loop window before each arm")
    ap.add_argument("--hot-interval-ms", type=float, default=20.0, help="the hot loop starts a cycle this often")
    ap.add_argument("--reads", type=int, default=300, help="jobs whose history is read per table")
    ap.add_argument("--insert-rounds", type=int, default=6)
    ap.add_argument("--insert-tx", type=int, default=300, help="4-row transactions per table and round")
    a = ap.parse_args()
    if a.jobs < 10_000 or a.days <= RETENTION_DAYS + 1:
        ap.error(f"--jobs must be at least 10000 and --days more than {RETENTION_DAYS + 1}")
    throughput.exit_on_sigterm()
    server, embedded = console.server_url()
    try:
        with throughput.scratch_database(server, prefix=f"orch_bench_retention_{os.getpid()}") as url:
            from core.ledger import db

            t = time.monotonic()
            engine = db.create_engine(url, application_name="orch-bench-seed")
            try:
                say(f"seeding {a.jobs:,} jobs over {a.days} days ...")
                steps = seeding.seed(engine, a.jobs, a.days, say)
                built = seeding.partition(engine, say)
            finally:
                engine.dispose()
            seed_s = time.monotonic() - t
            say(f"seeded in {seed_s:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
            hot = HotLoop(url, a.hot_interval_ms / 1000)
            hot.start()
            try:
                time.sleep(2.0)  # warm-up: prepared statements, the tenant's row
                deleted = batched_deletes(url, hot, a.baseline_s)
                dropped = drop_partitions(url, hot, a.baseline_s)
            finally:
                hot.stop()
            say(f"reading {a.reads} jobs' history from each table ...")
            rd = reads(url, a.reads)
            say("history inserts, plain and partitioned ...")
            ins = inserts(url, a.insert_rounds, a.insert_tx)
    finally:
        if embedded is not None:
            embedded.stop()
    out = {
        "jobs": a.jobs,
        "days": a.days,
        "retention_days": RETENTION_DAYS,
        "seed_s": round(seed_s, 1),
        "partitioned_fill_rows_per_s": round(built["rows"] / built["fill_s"]),
        "delete": deleted,
        "partitions": dropped,
        "read_by_job": rd,
        "insert": ins,
        "ratios": {
            "delete_hot_p99_vs_baseline": ratio(deleted["hot_p99_ms"], deleted["baseline_hot_p99_ms"]),
            "delete_claim_p99_vs_baseline": ratio(deleted["claim_p99_ms"], deleted["baseline_claim_p99_ms"]),
            "partitions_hot_p99_vs_baseline": ratio(dropped["hot_p99_ms"], dropped["baseline_hot_p99_ms"]),
            "partitions_claim_p99_vs_baseline": ratio(dropped["claim_p99_ms"], dropped["baseline_claim_p99_ms"]),
            "history_rows_per_s_partitions_vs_delete": ratio(
                dropped["history_rows_per_s"], deleted["history_rows_per_s"]
            ),
            "read_p50_partitioned_vs_plain": ratio(rd["console.partitioned"]["p50_ms"], rd["console.plain"]["p50_ms"]),
            "read_p50_partitioned_kept_vs_plain": ratio(
                rd["console.partitioned+kept"]["p50_ms"], rd["console.plain"]["p50_ms"]
            ),
            "insert_rows_per_s_partitioned_vs_plain": ratio(
                ins["partitioned"]["rows_per_s"], ins["plain"]["rows_per_s"]
            ),
        },
        "hot_errors": hot.errors[:20],
        "notes": list(NOTES),
    }
    report(out)


if __name__ == "__main__":
    main()
