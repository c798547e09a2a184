"""What admission costs a worker's claim statement, with no other client: the server time of
`orch_admit` and of the events trigger per statement, for jobs without flow control and for
jobs under a bucket and a quota that never bind (the same limits as `throughput.py --limits`).

    python bench/admission.py [--jobs 2000] [--batch 8] [--rounds 3]

In a scratch database (`orch_bench_adm_*`, dropped on exit), one client drains --jobs jobs
with `succeed_and_claim_jobs`, --batch at a time, as a worker thread's pump does (each
statement carries the previous batch's successes and claims the next). Rounds alternate the
two tenants (the order flips every round). Per round: the median wall time of a statement
as the client sees it, and the mean server time per call of `orch_admit` and
`orch_job_history_events` from `pg_stat_user_functions` (the session sets `track_functions`
to 'pl', which needs a superuser; without it those figures are null). No lock waits: this
measures the work, not the contention (`throughput.py --limits` measures both).

Uses ORCH_DATABASE_URL, or the embedded PostgreSQL (under .orch/) when unset. The last
line printed is JSON: {"statement_us": {"plain": p, "limited": l}, "admit_us": {...},
"events_trigger_us": {...}, "admit_extra_us": l - p, ...}, medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FUNCTIONS = ("orch_admit", "orch_job_history_events")


def _function_times(conn: Any) -> dict[str, tuple[int, float]]:
    import sqlalchemy as sa

    rows = conn.execute(
        sa.text("SELECT funcname, calls, total_time FROM pg_stat_user_functions WHERE funcname = ANY(:names)"),
        {"names": list(FUNCTIONS)},
    )
    return {r[0]: (int(r[1]), float(r[2])) for r in rows}


def _reported_times(url: str) -> dict[str, tuple[int, float]]:
    """The function statistics every backend has reported (read on a connection of its own).
    A backend reports its own when it exits, or when it next goes idle after
    pg_stat_force_next_flush() (PostgreSQL 15); the callers do one or the other first."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    time.sleep(0.3)
    reader = sa.create_engine(sa.make_url(url), poolclass=NullPool)
    try:
        with reader.connect() as conn:
            return _function_times(conn)
    finally:
        reader.dispose()


def drain(
    url: str, engine: Any, client: Any, principal: Any, tenant: str, source: str | None, n: int, batch: int
) -> dict[str, Any]:
    """Submit n jobs, then drain them on `client` (one autocommit connection, kept for the
    whole run so its backend is warm)."""
    import sqlalchemy as sa

    from core import control
    from core.ledger import jobs as ledger

    spec = control.JobSpec(tenant, "bench.noop", source=source)
    for start in range(0, n, 5000):
        control.submit_many(engine, principal, [spec] * min(5000, n - start), doorbell=control.NoDoorbell())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) jobs, buckets, quotas, quota_starts"))
    engine.dispose()  # its backends exit, and report what they ran
    # The client reports its statistics when it next goes idle.
    client.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    before = _reported_times(url)
    times: list[float] = []
    rows = ledger.claim_and_start_jobs(client, queue="bench", limit=batch, owner="bench", job_types=["bench.noop"])
    while rows:
        t0 = time.perf_counter()
        _, rows = ledger.succeed_and_claim_jobs(
            client,
            [r["id"] for r in rows],
            [r["lease_id"] for r in rows],
            queue="bench",
            limit=batch,
            owner="bench",
            job_types=["bench.noop"],
        )
        times.append((time.perf_counter() - t0) * 1e6)
    client.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    after = _reported_times(url)
    out: dict[str, Any] = {"statement_us": statistics.median(times), "statements": len(times)}
    for name in FUNCTIONS:
        calls = after.get(name, (0, 0.0))[0] - before.get(name, (0, 0.0))[0]
        total = after.get(name, (0, 0.0))[1] - before.get(name, (0, 0.0))[1]
        # The first claim_and_start is one call of each too: a batch like the others.
        out[name] = total * 1000 / calls if calls else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000, help="jobs drained per tenant and round")
    ap.add_argument("--batch", type=int, default=8, help="jobs claimed per statement")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    from bench import throughput

    throughput.exit_on_sigterm()
    db_url, _redis, embedded = throughput.resolve_urls()
    try:
        with throughput.scratch_database(db_url, "orch_bench_adm") as scratch:
            os.environ.update(ORCH_DATABASE_URL=scratch, ORCH_LOG_LEVEL="WARNING")
            import sqlalchemy as sa

            from core import control
            from core.domain.auth import local_principal
            from core.ledger import db
            from core.settings import get_settings
            from worker.runtime import pool

            get_settings.cache_clear()
            control.forget_cached_catalog()
            engine = db.create_engine(scratch, application_name="orch-bench-admission")
            handlers = pool.load_handlers(["bench.handlers"])
            control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
            principal = local_principal("bench")
            tag = uuid.uuid4().hex[:6]
            plain, limited = f"plain-{tag}", f"limited-{tag}"
            control.add_source(
                engine,
                principal,
                tenant=limited,
                name="bench",
                host="admission.bench.invalid",
                rate=throughput.GENEROUS_RATE,
                burst=throughput.GENEROUS_RATE,
                reason="bench/admission.py: a bucket that never denies",
            )
            control.set_quota(
                engine,
                principal,
                tenant=limited,
                job_type="bench.noop",
                max_active=throughput.GENEROUS_MAX_ACTIVE,
                max_per_hour=throughput.GENEROUS_MAX_PER_HOUR,
                reason="bench/admission.py: a quota that never binds",
            )
            got: dict[str, list[dict[str, Any]]] = {"plain": [], "limited": []}
            # As a worker process connects (worker/runtime/pool.py): generic plans of prepared
            # statements, asynchronous commit, ordered claim scans.
            client_engine = db.create_engine(
                scratch,
                pool_size=1,
                application_name="orch-bench-admission-client",
                synchronous_commit=False,
                ordered_scans=True,
            )
            with client_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as client:
                try:
                    client.execute(sa.text("SET track_functions = 'pl'"))
                except sa.exc.DBAPIError:
                    print("track_functions needs a superuser: server times not measured", file=sys.stderr)
                # Unmeasured: the client's backend plans and caches every statement first.
                for tenant, source in ((plain, None), (limited, "bench")):
                    drain(scratch, engine, client, principal, tenant, source, 20 * a.batch, a.batch)
                for r in range(1, a.rounds + 1):
                    order = ("plain", "limited") if r % 2 else ("limited", "plain")
                    for kind in order:
                        tenant, source = (plain, None) if kind == "plain" else (limited, "bench")
                        res = drain(scratch, engine, client, principal, tenant, source, a.jobs, a.batch)
                        got[kind].append(res)
                        print(
                            f"[{r}/{a.rounds}] {kind:8s} statement {res['statement_us']:7.0f} µs"
                            f"  orch_admit {_us(res.get('orch_admit'))}"
                            f"  events trigger {_us(res.get('orch_job_history_events'))}"
                            f"  ({res['statements']} statements of {a.batch})",
                            flush=True,
                        )
            client_engine.dispose()
            engine.dispose()
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]

    def med(kind: str, key: str) -> float | None:
        values = [x[key] for x in got[kind] if x.get(key) is not None]
        return round(statistics.median(values), 1) if values else None

    admit = {k: med(k, "orch_admit") for k in got}
    result = {
        "jobs": a.jobs,
        "batch": a.batch,
        "rounds": a.rounds,
        "statement_us": {k: med(k, "statement_us") for k in got},
        "admit_us": admit,
        "events_trigger_us": {k: med(k, "orch_job_history_events") for k in got},
        "admit_extra_us": None
        if admit["plain"] is None or admit["limited"] is None
        else round(admit["limited"] - admit["plain"], 1),
        "statement_ratio": round(
            statistics.median(
                x["statement_us"] / y["statement_us"] for x, y in zip(got["limited"], got["plain"], strict=True)
            ),
            3,
        ),
    }
    print(json.dumps(result))


def _us(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:5.0f} µs"


if __name__ == "__main__":
    main()
