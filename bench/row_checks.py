"""What the row rules of jobs and job_history cost a statement that writes them, measured
in one run (docs/adr/0024). Three variants:

- `function`: one CHECK that calls a PL/pgSQL function: for jobs orch_check_job, as
  migration 0020 installs it; for job_history the same design for its three rules
  (`bench_check_history`, created here: measured and not kept);
- `checks`: the plain CHECKs: for jobs the ten of revision 0019, which migration 0020
  replaced; for job_history the three it has;
- `none`: no rule at all (the floor; not an option).

    python bench/row_checks.py [--rounds 5] [--iterations 2000]

In a scratch database migrated to head, each variant gets its own copies of the two tables
(`LIKE ... INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING IDENTITY`, so the same indexes)
with that variant's CHECKs, and 20,000 queued jobs. A PL/pgSQL loop on the server runs each
statement --iterations times and reports its mean wall time in µs (no client round trip):

- `jobs_update_1` / `jobs_update_8`: an UPDATE of 1 or 8 jobs' state, lease id and expiry,
  as a claim or a success moves its jobs;
- `history_insert_1` / `history_insert_24`: an INSERT of 1 or 24 history rows (claim, ack
  and succeed of 8 jobs), as a submit or a worker's statement writes them;
- `jobs_insert_1000` / `history_insert_1000`: 1,000 new jobs or their submit rows, as a
  batch submit writes them (run an eighth as often as the 8-job statements, for a like
  number of rows).

PostgreSQL builds a table's CHECK expressions once per statement node that writes it, so
the 1-row statements show that build and the larger ones add the rows' evaluation. Variants
alternate within every round, so drift on a noisy machine hits all alike. The last line is
JSON: per statement, the median µs of each variant over the rounds, `saved_us` (checks -
function) and `left_us` (function - none), medians of per-round differences. Uses
ORCH_DATABASE_URL's server (or the embedded one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_STATES = (
    "'pending', 'queued', 'leased', 'running', 'throttled', 'retrying', 'succeeded', 'dead_lettered', 'canceled',"
    " 'upstream_failed', 'skipped'"
)
_REASONS = "'rate_limited', 'quota', 'paused', 'blackout', 'circuit_open', 'backpressure'"
_TRANSITIONS = (
    "'leased ack running', 'leased lease_expired queued', 'pending cancel canceled', 'pending deps_met queued',"
    " 'pending parent_failed upstream_failed', 'pending skip skipped', 'queued cancel canceled', 'queued claim leased',"
    " 'queued deny throttled', 'retrying cancel canceled', 'retrying due queued', 'running cancel canceled',"
    " 'running fail_final dead_lettered', 'running fail_retryable retrying', 'running lease_expired dead_lettered',"
    " 'running lease_expired retrying', 'running succeed succeeded', 'running throttle throttled',"
    " 'throttled cancel canceled', 'throttled due queued'"
)

#: The CHECKs of jobs at revision 0019, which migration 0020 replaced.
OLD_JOBS = (
    "attempt >= 0",
    "length(idempotency_key) >= 1 AND length(idempotency_key) <= 256",
    "state <> ALL (ARRAY['leased', 'running']) OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)",
    "max_attempts >= 1",
    "length(payload_digest) = 64",
    "progress >= 0 AND progress <= 1",
    f"state = ANY (ARRAY[{_STATES}])",
    "state <> 'throttled' OR wait_reason IS NOT NULL",
    f"wait_reason = ANY (ARRAY[{_REASONS}])",
    "state <> ALL (ARRAY['retrying', 'throttled']) OR not_before IS NOT NULL",
)
#: The CHECKs job_history has (migration 0001, and 0016 for the transitions).
OLD_HISTORY = (
    "from_state IS NOT NULL OR (event = 'submit' AND to_state = ANY (ARRAY['pending', 'queued', 'throttled']))",
    f"from_state IS NULL OR from_state || ' ' || event || ' ' || to_state = ANY (ARRAY[{_TRANSITIONS}])",
    f"wait_reason = ANY (ARRAY[{_REASONS}])",
)
NEW_JOBS = (
    "orch_check_job(state, wait_reason, not_before, lease_id, lease_expires_at, attempt, max_attempts, progress,"
    " idempotency_key, payload_digest)",
)
FUNCTION_HISTORY = ("bench_check_history(from_state, event, to_state, wait_reason)",)

#: job_history's rules in orch_check_job's design, without the branch that names a broken
#: rule (a row that passes never reaches it).
CREATE_HISTORY_FUNCTION = f"""
CREATE FUNCTION bench_check_history(from_state text, event text, to_state text, wait_reason text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    IF ({" AND ".join(f"({c})" for c in OLD_HISTORY)}) IS NOT FALSE THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'new row for relation "job_history" violates check constraint "bench"'
        USING ERRCODE = 'check_violation';
END $fn$"""

VARIANTS = {"function": (NEW_JOBS, FUNCTION_HISTORY), "checks": (OLD_JOBS, OLD_HISTORY), "none": ((), ())}

STATEMENTS = {
    "jobs_update_1": (
        "UPDATE {jobs} SET state = CASE WHEN state = 'queued' THEN 'leased' ELSE 'queued' END,"
        " lease_id = gen_random_uuid(), lease_expires_at = now() WHERE id BETWEEN k + 1 AND k + 1",
        1,
    ),
    "jobs_update_8": (
        "UPDATE {jobs} SET state = CASE WHEN state = 'queued' THEN 'leased' ELSE 'queued' END,"
        " lease_id = gen_random_uuid(), lease_expires_at = now() WHERE id BETWEEN k + 1 AND k + 8",
        8,
    ),
    "history_insert_1": (
        "INSERT INTO {history} (job_id, from_state, event, to_state, actor, tenant_id, job_type)"
        " VALUES (k + 1, 'queued', 'claim', 'leased', 'bench', 1, 'bench.noop')",
        1,
    ),
    "history_insert_24": (
        "INSERT INTO {history} (job_id, from_state, event, to_state, actor, tenant_id, job_type)"
        " SELECT k + g / 3, (ARRAY['queued', 'leased', 'running'])[g % 3 + 1],"
        " (ARRAY['claim', 'ack', 'succeed'])[g % 3 + 1], (ARRAY['leased', 'running', 'succeeded'])[g % 3 + 1],"
        " 'bench', 1, 'bench.noop' FROM generate_series(0, 23) AS g",
        8,
    ),
    # A batch submit's jobs and history: the rows' evaluation, not the build, is what shows.
    "jobs_insert_1000": (
        "INSERT INTO {jobs_batch} (tenant_id, job_type, queue, payload, payload_digest, state, max_attempts)"
        " SELECT 1, 'bench.noop', 'bench', '{{}}', repeat('0', 64), 'queued', 3 FROM generate_series(1, 1000)",
        1000,
    ),
    "history_insert_1000": (
        "INSERT INTO {history} (job_id, from_state, event, to_state, actor, tenant_id, job_type)"
        " SELECT k + g, NULL, 'submit', 'queued', 'bench', 1, 'bench.noop' FROM generate_series(1, 1000) AS g",
        1000,
    ),
}


def arrange(conn: Any, variant: str) -> None:
    """The variant's copies of jobs and job_history, with its CHECKs, and 20,000 jobs."""
    import sqlalchemy as sa

    jobs_checks, history_checks = VARIANTS[variant]
    for table, copy, checks in (
        ("jobs", f"jobs_{variant}", jobs_checks),
        ("jobs", f"jobs_batch_{variant}", jobs_checks),
        ("job_history", f"job_history_{variant}", history_checks),
    ):
        conn.execute(
            sa.text(f"CREATE TABLE {copy} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING IDENTITY)")
        )
        for i, check in enumerate(checks):
            conn.execute(sa.text(f"ALTER TABLE {copy} ADD CONSTRAINT {copy}_rule_{i} CHECK ({check})"))
    conn.execute(
        sa.text(
            f"INSERT INTO jobs_{variant} (tenant_id, job_type, queue, payload, payload_digest, state, max_attempts)"
            " SELECT 1, 'bench.noop', 'bench', '{}', repeat('0', 64), 'queued', 3 FROM generate_series(1, 20000)"
        )
    )
    conn.execute(sa.text(f"VACUUM ANALYZE jobs_{variant}"))


def time_statement(conn: Any, notices: list[str], name: str, variant: str, iterations: int) -> float:
    """Mean µs of one execution of statement `name` on `variant`'s tables, timed on the server."""
    import sqlalchemy as sa

    template, step = STATEMENTS[name]
    iterations = max(1, iterations * 8 // step) if step > 8 else iterations  # a like number of rows
    sql = template.format(jobs=f"jobs_{variant}", jobs_batch=f"jobs_batch_{variant}", history=f"job_history_{variant}")
    body = f"""
DO $$
DECLARE t0 timestamptz; k int := 0;
BEGIN
    t0 := clock_timestamp();
    FOR i IN 1..{iterations} LOOP
        {sql};
        k := (k + {step}) % 19000;
    END LOOP;
    RAISE NOTICE 'us %', extract(epoch FROM clock_timestamp() - t0) * 1e6 / {iterations};
END $$"""
    conn.execute(sa.text(body))
    conn.execute(sa.text(f"TRUNCATE job_history_{variant}, jobs_batch_{variant}"))
    return float(notices[-1].split()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    a = parser.parse_args(argv)
    if a.rounds < 1 or a.iterations < 1:
        parser.error("--rounds and --iterations must be at least 1")

    import sqlalchemy as sa

    from bench.throughput import resolve_urls, scratch_database

    db_url, _redis, embedded = resolve_urls()
    times: dict[str, dict[str, list[float]]] = {s: {v: [] for v in VARIANTS} for s in STATEMENTS}
    try:
        with scratch_database(db_url, "orch_bench_checks") as url:
            engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                notices: list[str] = []  # the DO blocks' timings arrive as notices
                conn.connection.driver_connection.add_notice_handler(lambda d: notices.append(d.message_primary))
                conn.execute(sa.text("SET synchronous_commit = off"))
                conn.execute(sa.text(CREATE_HISTORY_FUNCTION))
                for variant in VARIANTS:
                    arrange(conn, variant)
                for r in range(a.rounds):
                    order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                    for name in STATEMENTS:
                        for variant in order:
                            times[name][variant].append(time_statement(conn, notices, name, variant, a.iterations))
                    print(
                        f"round {r + 1}/{a.rounds}: "
                        + ", ".join(f"{n} " + "/".join(f"{times[n][v][-1]:.0f}" for v in VARIANTS) for n in STATEMENTS)
                        + " µs (function/checks/none)",
                        file=sys.stderr,
                        flush=True,
                    )
            engine.dispose()
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]

    out: dict[str, dict[str, float]] = {}
    for name in STATEMENTS:
        t = times[name]
        out[name] = {v: round(statistics.median(t[v]), 1) for v in VARIANTS}
        out[name]["saved_us"] = round(
            statistics.median(o - f for o, f in zip(t["checks"], t["function"], strict=True)), 1
        )
        out[name]["left_us"] = round(statistics.median(f - n for f, n in zip(t["function"], t["none"], strict=True)), 1)
    print(f"{'statement':<20} {'function':>9} {'checks':>9} {'none':>9} {'saved':>9} {'left':>9}  (µs, medians)")
    for name, row in out.items():
        cells = (row[k] for k in ("function", "checks", "none", "saved_us", "left_us"))
        print(f"{name:<20} " + " ".join(f"{c:>9}" for c in cells))
    print(json.dumps({"rounds": a.rounds, "iterations": a.iterations, "statements": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
