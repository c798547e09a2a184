"""The ledger bench/retention.py prunes (see bench/README.md): N finished jobs created evenly
over the last --days days with their history, logs, artifacts, DAG runs and outbox events,
bulk-inserted over generate_series (every value a hash of the row's id, bench/console_seed's
pg_temp.u); and the bench's own copy of job_history partitioned by day on `at`, which is
not part of the product (no migration creates it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from bench import console_seed as cs

TENANTS = ("acme", "globex")
JOB_TYPE, QUEUE = "bench.retention", "bench-retention"
RUN_BLOCK, RUN_SIZE = 1000, 5  # a run of 5 jobs (its ids first) per 1,000 job ids
DEAD_SHARE, CANCEL_SHARE, RETRY_SHARE, RUN_FAIL_SHARE = 0.02, 0.01, 0.25, 0.10
BACKOFF_S = 5.0
#: The history table's copy, partitioned by day, and where rows that must be kept go before
#: their day's partition is dropped.
PART, KEPT = "job_history_p", "job_history_kept"

RUNS_SQL = """
INSERT INTO runs (id, tenant_id, kind, name, created_by, created_at, state, jobs_total, jobs_live, started_at,
                  finished_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT r, (CAST(:tenant_ids AS bigint[]))[1 + (pg_temp.u(-r, 1) >= 0.7)::int], 'adhoc', 'nightly-etl', 'api:bench',
       c.at,
       CASE WHEN pg_temp.u(r, 51) < :run_fail THEN 'failed' ELSE 'succeeded' END, :run_size, 0, c.at,
       c.at + interval '60 seconds', c.at + interval '60 seconds'
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS r
CROSS JOIN LATERAL (SELECT CAST(:t0 AS timestamptz) + make_interval(secs => :span_s * ((r - 1) * :rb + 0.5) / :n)
                    AS at) AS c"""

#: Runs: every job of the run is created with its first id and ends within 60 s; a failed
#: run has a dead-lettered job (kept with its run). Plain jobs: 2% dead letters, 1% canceled,
#: the rest succeeded, a quarter of them after a retry.
JOBS_SQL = """
WITH b AS (
    SELECT i AS id, (i - 1) / :rb + 1 AS run_no, (i - 1) % :rb AS pos, pg_temp.u(i, 4) AS u4,
           0.05 + 2 * pg_temp.u(i, 6) AS d
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
), c AS (
    SELECT b.*, b.pos < :run_size AS in_run,
           CAST(:t0 AS timestamptz) + make_interval(secs => CASE WHEN b.pos < :run_size
               THEN :span_s * (b.id - b.pos - 0.5) / :n + 10 * b.pos ELSE :span_s * (b.id - 0.5) / :n END) AS created_at
    FROM b
), s AS (
    SELECT c.*, CASE
        WHEN c.in_run THEN CASE WHEN c.pos = 1 AND pg_temp.u(c.run_no, 51) < :run_fail THEN 'dead_lettered'
                           ELSE 'succeeded' END
        WHEN c.u4 < :dead THEN 'dead_lettered' WHEN c.u4 < :dead + :cancel THEN 'canceled' ELSE 'succeeded' END
        AS state
    FROM c
), a AS (
    SELECT s.*, CASE s.state WHEN 'succeeded' THEN 1 + (pg_temp.u(s.id, 5) < :retry)::int WHEN 'dead_lettered' THEN 3
                ELSE 0 END AS attempt
    FROM s
)
INSERT INTO jobs (id, tenant_id, run_id, job_type, queue, payload, payload_digest, state, attempt, max_attempts,
                  error_class, last_error, error_fingerprint, rung_at, created_at, updated_at, started_at, finished_at)
SELECT a.id,
       CASE WHEN a.in_run THEN r.tenant_id
            ELSE (CAST(:tenant_ids AS bigint[]))[1 + (pg_temp.u(a.id, 1) >= 0.7)::int] END,
       CASE WHEN a.in_run THEN a.run_no END, :job_type, :queue, jsonb_build_object('item', a.id),
       md5(a.id::text) || md5((-a.id)::text), a.state, a.attempt, 3,
       CASE WHEN a.state = 'dead_lettered' THEN 'http_5xx' END,
       CASE WHEN a.state = 'dead_lettered' THEN 'upstream returned 503 for page ' || a.id % 97 END,
       CASE WHEN a.state = 'dead_lettered' THEN :fingerprint END, a.created_at, a.created_at, f.finished_at,
       CASE WHEN a.attempt > 0 THEN a.created_at + interval '0.5 seconds' END, f.finished_at
FROM a LEFT JOIN runs AS r ON a.in_run AND r.id = a.run_no
CROSS JOIN LATERAL (SELECT CASE WHEN a.attempt = 0 THEN a.created_at + interval '1 second'
    ELSE a.created_at + make_interval(secs => 0.5 + (a.attempt - 1) * (a.d + :backoff) + a.d) END AS finished_at) AS f
ORDER BY a.id"""

#: A job's transitions from its row: submit; cancel; each attempt's claim, ack and outcome
#: (a retryable failure and its due, or the last attempt's success or final failure). Each
#: row carries its job's tenant, type and run, as the ledger's writers write them (ADR 0023).
HISTORY_SQL = """
WITH j AS (
    SELECT j.*, extract(epoch FROM j.finished_at - j.started_at) - (j.attempt - 1) * :backoff AS d0
    FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi
), k AS (
    SELECT j.*, k.k, j.started_at + make_interval(secs => (k.k - 1) * (:backoff + (j.d0 / j.attempt))) AS s,
           k.k = j.attempt AS last
    FROM j CROSS JOIN LATERAL generate_series(1, j.attempt) AS k(k)
)
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt, error_class, fingerprint, message,
                         tenant_id, job_type, run_id)
SELECT job_id, f, e, t, at, actor, attempt, cls, fp, msg, tid, jt, rid FROM (
    SELECT j.id AS job_id, 0 AS n, NULL AS f, 'submit' AS e, 'queued' AS t, j.created_at AS at, 'api:bench' AS actor,
           0 AS attempt, NULL AS cls, NULL AS fp, NULL AS msg, j.tenant_id AS tid, j.job_type AS jt, j.run_id AS rid
    FROM j
    UNION ALL
    SELECT j.id, 1, 'queued', 'cancel', 'canceled', j.finished_at, 'local:bench', 0, NULL, NULL, NULL,
           j.tenant_id, j.job_type, j.run_id
    FROM j WHERE j.state = 'canceled'
    UNION ALL
    SELECT k.id, 10 * k.k + x.n, x.f, x.e, x.t, k.s + make_interval(secs => x.o), x.a, k.k,
           CASE WHEN x.failed THEN 'http_5xx' END, CASE WHEN x.failed THEN :fingerprint END,
           CASE WHEN x.failed THEN 'upstream returned 503 for page ' || k.id % 97 END,
           k.tenant_id, k.job_type, k.run_id
    FROM k CROSS JOIN LATERAL (VALUES
        (1, 'queued', 'claim', 'leased', -0.005, 'worker:bench-1', false, true),
        (2, 'leased', 'ack', 'running', 0.0, 'worker:bench-1', false, true),
        (3, 'running', CASE WHEN NOT k.last THEN 'fail_retryable' WHEN k.state = 'succeeded' THEN 'succeed'
                       ELSE 'fail_final' END,
            CASE WHEN NOT k.last THEN 'retrying' ELSE k.state END, k.d0 / k.attempt, 'worker:bench-1',
            NOT k.last OR k.state = 'dead_lettered', true),
        (4, 'retrying', 'due', 'queued', k.d0 / k.attempt + :backoff - 0.01, 'scheduler', false, NOT k.last)
    ) AS x(n, f, e, t, o, a, failed, keep)
    WHERE x.keep
) AS h ORDER BY job_id, n"""

LOGS_SQL = """
INSERT INTO job_logs (job_id, attempt, at, level, message, seq)
SELECT j.id, j.attempt, j.started_at + make_interval(secs => i * 0.001), 'info',
       (ARRAY['started page ' || (j.id % 97), 'fetched ' || (j.id % 500) || ' rows'])[i], i
FROM jobs AS j CROSS JOIN generate_series(1, 2) AS i
WHERE j.id BETWEEN :lo AND :hi AND j.started_at IS NOT NULL AND pg_temp.u(j.id, 18) < 0.25"""

ARTIFACTS_SQL = """
INSERT INTO artifacts (job_id, tenant_id, attempt, name, media_type, sha256, size_bytes, data, created_at)
SELECT j.id, j.tenant_id, j.attempt, 'report-' || j.id || '.csv', 'text/csv', md5(j.id::text) || md5('a' || j.id), 256,
       decode(repeat('2c', 256), 'hex'), j.finished_at
FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi AND j.state = 'succeeded' AND pg_temp.u(j.id, 19) < 0.01"""

RUN_JOBS_SQL = """
INSERT INTO run_jobs (job_id, run_id, key, trigger_rule)
SELECT j.id, j.run_id, 'step-' || (j.id - (j.run_id - 1) * :rb), 'all_success'
FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi AND j.run_id IS NOT NULL"""

#: Identities go on after the ids inserted; a recent job replays an old one now and then (the
#: old one is kept while its replay is); an outbox event per 50 jobs.
FINISH_SQL = """
SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs));
SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs));
UPDATE jobs AS r SET replay_of = r.id - :n / 2 FROM jobs AS o
WHERE r.id % 997 = 0 AND r.id > :n / 2 AND r.run_id IS NULL AND o.id = r.id - :n / 2 AND o.run_id IS NULL;
INSERT INTO events (at, tenant_id, kind, payload, published_at)
SELECT e.at, (CAST(:tenant_ids AS bigint[]))[1], 'jobs.submitted', jsonb_build_object('count', 50, 'first_id', i * 50),
       e.at + interval '50 milliseconds'
FROM generate_series(1, CAST(:n AS bigint) / 50) AS i
CROSS JOIN LATERAL (SELECT CAST(:t0 AS timestamptz) + make_interval(secs => :span_s * i * 50 / :n) AS at) AS e"""


def seed(engine: Any, n: int, days: int, say: Callable[[str], None]) -> dict[str, float]:
    """Fill a migrated, empty ledger; returns the seconds of each step. The large indexes and
    foreign keys of jobs and job_history are dropped while they load and created again from
    their own definitions (bench/console_seed.drop_bulk_constraints), then VACUUM ANALYZE and
    the scheduler's rollup step to the end (as it would have run while the ledger filled)."""
    import time

    import sqlalchemy as sa

    from core import control
    from core.domain import fingerprints
    from core.domain.jobtypes import JobTypeRow
    from core.ledger import jobs as ledger_jobs
    from core.ledger import rollups

    steps: dict[str, float] = {}
    control.register_job_types(engine, [JobTypeRow(JOB_TYPE, QUEUE, 3, 1.0, 60.0, 60.0, 10.0)])
    now = dt.datetime.now(dt.UTC)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(cs.SESSION_SQL))
        conn.execute(sa.text(cs.U_FN))
        tenants = ledger_jobs.ensure_tenants(conn, list(TENANTS))
        p: dict[str, Any] = {
            "n": n,
            "rb": RUN_BLOCK,
            "run_size": RUN_SIZE,
            "run_fail": RUN_FAIL_SHARE,
            "dead": DEAD_SHARE,
            "cancel": CANCEL_SHARE,
            "retry": RETRY_SHARE,
            "backoff": BACKOFF_S,
            "t0": now - dt.timedelta(days=days),
            "span_s": days * 86400 - 600.0,  # the youngest job is 10 minutes old
            "tenant_ids": [tenants[t] for t in TENANTS],
            "job_type": JOB_TYPE,
            "queue": QUEUE,
            "fingerprint": fingerprints.fingerprint("http_5xx", "upstream returned 503 for page 17"),
        }
        rebuild = cs.drop_bulk_constraints(conn)
        t = time.monotonic()
        bar = cs.Progress("runs, jobs", n)
        conn.execute(sa.text(RUNS_SQL), {**p, "lo": 1, "hi": (n - 1) // RUN_BLOCK + 1})
        for lo, hi in cs.chunks(1, n, 100_000):
            conn.execute(sa.text(JOBS_SQL), {**p, "lo": lo, "hi": hi})
            bar.advance(hi - lo + 1)
        steps["jobs"] = time.monotonic() - t
        t = time.monotonic()
        bar = cs.Progress("history, logs, artifacts", n)
        for lo, hi in cs.chunks(1, n, 50_000):
            for sql in (HISTORY_SQL, LOGS_SQL, ARTIFACTS_SQL, RUN_JOBS_SQL):
                conn.execute(sa.text(sql), {**p, "lo": lo, "hi": hi})
            bar.advance(hi - lo + 1)
        cs.script(conn, FINISH_SQL, p)
        steps["history"] = time.monotonic() - t
        t = time.monotonic()
        bar = cs.Progress("indexes and keys", len(rebuild))
        for ddl in rebuild:
            conn.execute(sa.text(ddl))
            bar.advance()
        steps["indexes"] = time.monotonic() - t
        t = time.monotonic()
        say("VACUUM ANALYZE ...")
        conn.execute(sa.text("VACUUM (ANALYZE)"))
        steps["vacuum"] = time.monotonic() - t
    t = time.monotonic()
    say("rollup step (the scheduler's, to the end) ...")
    rollups.roll_up(engine)
    steps["rollup"] = time.monotonic() - t
    return steps


def partition(engine: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """Build PART: job_history's columns, checks, foreign key and indexes, partitioned by range
    of `at`, one partition a UTC day from the oldest row's day to the day after tomorrow
    (where the hot loop's rows go), filled with every row of job_history (ids kept). The
    primary key is (id, at): a partitioned table's unique keys must hold its partition key.
    Also KEPT, a plain table of the same columns for the rows a dropped day must keep.
    Returns the partitions' count, the rows and the fill's seconds."""
    import time

    import sqlalchemy as sa

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(cs.SESSION_SQL))
        lo, hi, rows = conn.execute(sa.text("SELECT min(at), max(id), count(*) FROM job_history")).one()
        first = lo.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        last = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=3)
        ddl = [
            f"CREATE SEQUENCE {PART}_id_seq START {int(hi) + 1_000_000}",
            f"CREATE TABLE {PART} (LIKE job_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (at)",
            f"ALTER TABLE {PART} ALTER COLUMN id SET DEFAULT nextval('{PART}_id_seq')",
            f"ALTER TABLE {PART} ADD CONSTRAINT {PART}_pkey PRIMARY KEY (id, at)",
            f"CREATE TABLE {KEPT} (LIKE job_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
        ]
        for name, definition in conn.execute(sa.text(FK_SQL)).all():
            ddl.append(f"ALTER TABLE {PART} ADD CONSTRAINT {name.replace('job_history', PART)} {definition}")
        for name, definition in conn.execute(sa.text(INDEX_SQL)).all():
            ddl.append(definition.replace(f"INDEX {name} ON public.job_history", f"INDEX {name}_p ON public.{PART}"))
        day = first
        while day < last:
            nxt = day + dt.timedelta(days=1)
            ddl.append(
                f"CREATE TABLE {PART}_{day:%Y%m%d} PARTITION OF {PART} FOR VALUES FROM ('{day.isoformat()}') "
                f"TO ('{nxt.isoformat()}')"
            )
            day = nxt
        for statement in ddl:
            conn.execute(sa.text(statement))
        t = time.monotonic()
        bar = cs.Progress(f"{PART} (by day)", int(rows))
        top = int(hi)
        for a, b in cs.chunks(1, top, 500_000):
            got = conn.execute(sa.text(f"INSERT INTO {PART} SELECT * FROM job_history WHERE id BETWEEN {a} AND {b}"))
            bar.advance(got.rowcount)
        fill_s = time.monotonic() - t
        say(f"VACUUM ANALYZE {PART} ...")
        conn.execute(sa.text(f"VACUUM (ANALYZE) {PART}, {KEPT}"))
    return {"partitions": (last - first).days, "rows": int(rows), "fill_s": fill_s}


FK_SQL = """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'job_history'::regclass AND contype = 'f'"""
INDEX_SQL = """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid WHERE i.indrelid = 'job_history'::regclass AND NOT i.indisprimary"""
