"""The ledger bench/console.py times (see bench/README.md): N jobs over the last 20 days with
their history, runs, schedules, backfills, watermarks, counters and samples. Configuration
rows go through core.control; the bulk is INSERT ... SELECT over generate_series in chunks,
every value a deterministic function of its row's id (pg_temp.u(id, seed), a hash in [0, 1)),
so a job's history is derived from its row alone. The big tables load without their large
secondary indexes and foreign keys, which are created again from their own definitions at
the end (every row validated at once).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

DAYS = 20
#: The youngest job is this old: every finished job's attempts fit before now.
YOUNGEST_S = 300.0
BACKOFF_S = 5.0
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
TENANT_SHARE = (0.30, 0.20, 0.14, 0.11, 0.09, 0.07, 0.05, 0.04)
#: (name, queue, max_attempts, share, takes a source)
JOB_TYPES = (
    ("bench.fetch", "bench-ingest", 5, 0.30, True),
    ("bench.sync", "bench-ingest", 5, 0.15, True),
    ("bench.transform", "bench-transform", 3, 0.20, False),
    ("bench.load", "bench-transform", 3, 0.15, False),
    ("bench.report", "bench-report", 3, 0.10, False),
    ("bench.notify", "bench-report", 3, 0.10, False),
)
#: Four sources per tenant: two on the tenant's own API (one bucket), two on shared hosts.
SOURCES = (
    ("feed-a", "api.{t}.example", 50.0),
    ("feed-b", "api.{t}.example", 50.0),
    ("feed-c", "cdn.partner.example", 20.0),
    ("feed-d", "files.vendor.example", 5.0),
)
#: Error clusters (class, message; {n} varies per job and normalises away). Transient ones
#: are what retried-then-succeeded attempts fail with.
CLUSTERS = (
    ("http_5xx", "upstream returned 503 Service Unavailable for https://api.partner.example/v2/items?page={n}"),
    ("timeout", "read timed out after 30 s fetching batch {n}"),
    ("lease_expired", "lease expired: worker bench-worker-{n} stopped heartbeating"),
    ("http_4xx", "upstream returned 404 Not Found for /orders/{n}"),
    ("bad_payload", "KeyError: 'customer_id' in record {n}"),
    ("db_error", "deadlock detected while loading partition {n}"),
    ("connection_error", "connection reset by peer after {n} bytes"),
    ("validation", "schema validation failed: field amount must be >= 0, got -{n}"),
    ("http_5xx", "upstream returned 502 Bad Gateway for https://feeds.example.net/export/{n}.csv"),
    ("timeout", "connect timeout after 10 s to warehouse shard {n}"),
    ("bad_result", "handler returned a result of {n} bytes, over the limit"),
    ("auth", "401 Unauthorized: token expired {n} s ago"),
)
TRANSIENT = (1, 2, 3, 7, 10)  # 1-based indexes into CLUSTERS
DEAD_SHARE, CANCEL_SHARE, RUN_FAIL_SHARE = 0.02, 0.015, 0.10
LIVE_JOBS, LIVE_SHARE = 5000, 0.6
RUN_BLOCK = 500  # one run of 4..16 jobs per 500 job ids
SCHEDULES = (("q", "*/15 * * * *", 15), ("h", "0 * * * *", 85), ("d", "30 2 * * *", 200))
#: Large indexes dropped while their table loads (partial ones on small subsets stay).
BULK_INDEXES = {
    "jobs": ("jobs_tenant_state_idx", "jobs_finished_idx", "jobs_prunable_idx"),
    "job_history": ("job_history_job_idx",),
    "queue_depth_samples": ("queue_depth_samples_at_idx",),
    "watermark_samples": ("watermark_samples_at_idx",),
}

U_FN = """CREATE FUNCTION pg_temp.u(i bigint, s bigint) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(i, s) & 4503599627370495)::float8 / 4503599627370496.0 $$"""


def u(x: str, seed: int) -> str:
    return f"pg_temp.u({x}, {seed})"


def deny_flag(j: str, lo: float, hi: float) -> str:
    """A plain sourced job that ran was denied a token once (deny/due), or sent back by an
    upstream 429 once (throttle/due): the same test in the jobs and the history statement."""
    return (
        f"({j}.run_id IS NULL AND {j}.source_id IS NOT NULL AND {j}.attempt >= 1 AND {j}.state <> 'leased'"
        f" AND {u(j + '.id', 12)} >= {lo} AND {u(j + '.id', 12)} < {hi})"
    )


def cluster(x: str, seed: int, transient: bool) -> str:
    """1-based index into CLUSTERS: skewed over all of them, or one of the transient ones."""
    if transient:
        return f"(CAST(:transient AS int[]))[1 + floor({u(x, seed)} * {len(TRANSIENT)})::int]"
    return f"(1 + floor({len(CLUSTERS)} * power({u(x, seed)}, 2.2))::int)"


PLAIN_D = f"0.02 * power(1000, {u('{j}.id', 6)})"
RUN_D = f"0.05 * power(100, {u('({j}.id - 1) / :rb + 1', 52)})"

JOBS_SQL = f"""
WITH b AS (
    SELECT i AS id, (i - 1) / :rb + 1 AS run_no, ((i - 1) / :rb) * :rb + 1 AS first,
           4 + floor({u("(i - 1) / :rb + 1", 50)} * 13)::int AS m
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
), c AS (
    SELECT b.*, b.id - b.first AS pos, (b.id - b.first < b.m AND b.run_no <= :runs) AS in_run FROM b
), r AS (
    SELECT c.*,
        CASE WHEN NOT c.in_run THEN NULL WHEN c.pos = 0 THEN 0 WHEN c.pos = c.m - 1 THEN 2 ELSE 1 END AS role,
        c.in_run AND c.first > :live_from AS run_live,
        c.in_run AND c.first <= :live_from AND {u("c.run_no", 51)} < {RUN_FAIL_SHARE} AS run_failed,
        NOT c.in_run AND c.id > :live_from AND {u("c.id", 3)} < {LIVE_SHARE} AS live,
        width_bucket({u("CASE WHEN c.in_run THEN -c.run_no ELSE c.id END", 1)}, CAST(:tenant_edges AS float8[])) AS tk,
        width_bucket({u("c.id", 2)}, CAST(:type_edges AS float8[])) AS jk,
        CAST(:t0 AS timestamptz) + make_interval(secs => :span_s * ((CASE WHEN c.in_run THEN c.first ELSE c.id END)
                                                               - 0.5) / :n) AS created_at,
        CASE WHEN c.in_run THEN {RUN_D.format(j="c")} ELSE {PLAIN_D.format(j="c")} END AS d,
        {u("c.id", 4)} AS u4
    FROM c
), s AS (
    SELECT r.*, (CAST(:type_sourced AS boolean[]))[r.jk] AS sourced, (CAST(:type_max AS int[]))[r.jk] AS max_attempts,
        CASE
            WHEN r.run_live THEN CASE r.role WHEN 0 THEN 'succeeded' WHEN 2 THEN 'pending'
                                 ELSE (ARRAY['succeeded', 'running', 'queued'])[1 + floor(r.u4 * 3)::int] END
            WHEN r.run_failed THEN CASE WHEN r.pos = 1 THEN 'dead_lettered' WHEN r.role = 2 THEN 'upstream_failed'
                                   ELSE 'succeeded' END
            WHEN r.in_run THEN 'succeeded'
            WHEN r.live THEN CASE WHEN r.u4 < 0.45 THEN 'queued' WHEN r.u4 < 0.57 THEN 'running'
                                  WHEN r.u4 < 0.60 THEN 'leased' WHEN r.u4 < 0.72 THEN 'retrying' ELSE 'throttled' END
            WHEN r.u4 < {DEAD_SHARE} THEN 'dead_lettered'
            WHEN r.u4 < {DEAD_SHARE + CANCEL_SHARE} THEN 'canceled'
            ELSE 'succeeded' END AS state
    FROM r
), a AS (
    SELECT s.*,
        CASE s.state WHEN 'succeeded' THEN 1 + ({u("s.id", 5)} < 0.15)::int + ({u("s.id", 5)} < 0.04)::int
            WHEN 'dead_lettered' THEN s.max_attempts WHEN 'running' THEN 1 WHEN 'leased' THEN 1 WHEN 'retrying' THEN 1
            ELSE 0 END AS attempt,
        CASE WHEN s.sourced THEN (CAST(:source_ids AS bigint[]))[(s.tk - 1) * 4 + 1 + floor({u("s.id", 8)} * 4)::int]
            END AS source_id,
        CASE WHEN s.in_run THEN s.run_no END AS run_id
    FROM s
), w AS (
    SELECT a.*,
        CASE WHEN a.in_run THEN 0.5 + a.role * (5 * (a.d + {BACKOFF_S}) + 1)
             ELSE 0.01 + 2 * {u("a.id", 11)} + 1.5 * {deny_flag("a", 0, 0.20)}::int
                  + 2 * {deny_flag("a", 0.20, 0.22)}::int END AS w,
        CASE WHEN a.state = 'dead_lettered' THEN {cluster("a.id", 9, False)}
             WHEN a.state = 'retrying' THEN {cluster("a.id", 10, True)} END AS ck,
        CASE WHEN a.state <> 'throttled' THEN NULL
             WHEN a.sourced THEN CASE WHEN {u("a.id", 13)} < 0.8 THEN 'rate_limited' ELSE 'circuit_open' END
             WHEN {u("a.id", 13)} < 0.5 THEN 'quota' WHEN {u("a.id", 13)} < 0.8 THEN 'paused'
             WHEN {u("a.id", 13)} < 0.9 THEN 'blackout' ELSE 'backpressure' END AS wait_reason
    FROM a
), t AS (
    SELECT w.*, CASE WHEN w.attempt >= 1 AND w.state <> 'leased'
                     THEN w.created_at + make_interval(secs => w.w + (w.attempt - 1) * (w.d + {BACKOFF_S})) END
                AS started_at
    FROM w
)
INSERT INTO jobs (id, tenant_id, source_id, run_id, job_type, queue, priority, payload, payload_digest,
    idempotency_key, state, wait_reason, not_before, attempt, max_attempts, lease_id, lease_owner, lease_expires_at,
    heartbeat_at, progress, error_class, last_error, error_fingerprint, rung_at, created_at, updated_at, started_at,
    finished_at)
SELECT t.id, (CAST(:tenant_ids AS bigint[]))[t.tk], t.source_id, t.run_id, (CAST(:type_names AS text[]))[t.jk],
    (CAST(:type_queues AS text[]))[t.jk], CASE WHEN {u("t.id", 16)} < 0.05 THEN 10 ELSE 0 END,
    jsonb_build_object('item', t.id, 'page', t.id % 97), md5(t.id::text) || md5((-t.id)::text),
    CASE WHEN {u("t.id", 17)} < 0.05 THEN 'key-' || t.id END, t.state, t.wait_reason,
    CASE t.state WHEN 'retrying' THEN now() + make_interval(secs => 5 + 300 * {u("t.id", 14)})
                 WHEN 'throttled' THEN CASE WHEN t.wait_reason = 'backpressure' THEN now() + interval '10 years'
                                            ELSE now() + make_interval(secs => 1 + 60 * {u("t.id", 14)}) END END,
    t.attempt, t.max_attempts,
    CASE WHEN t.state IN ('leased', 'running') THEN md5(t.id::text)::uuid END,
    CASE WHEN t.state IN ('leased', 'running') THEN 'bench-worker-' || (t.id % 4 + 1) END,
    CASE WHEN t.state IN ('leased', 'running') THEN now() + interval '60 seconds' END,
    CASE WHEN t.state = 'running' THEN now() - make_interval(secs => 5 * {u("t.id", 15)}) END,
    CASE WHEN t.state = 'running' THEN round({u("t.id", 15)}::numeric, 2)::real END,
    (CAST(:cl_class AS text[]))[t.ck], replace((CAST(:cl_msg AS text[]))[t.ck], '{{n}}', (t.id % 997)::text),
    (CAST(:cl_fp AS text[]))[t.ck], CASE WHEN t.state <> 'pending' THEN t.created_at END, t.created_at,
    coalesce(f.finished_at, t.started_at, t.created_at), t.started_at, f.finished_at
FROM t CROSS JOIN LATERAL (SELECT CASE
    WHEN t.state IN ('succeeded', 'dead_lettered') THEN t.started_at + make_interval(secs => t.d)
    WHEN t.state = 'canceled' THEN t.created_at + make_interval(secs => t.w)
    WHEN t.state = 'upstream_failed' THEN t.created_at + make_interval(secs => 2 * (5 * (t.d + {BACKOFF_S}) + 1))
    END AS finished_at) AS f
ORDER BY t.id"""

#: A job's transitions, from its row: submit; a denied token (deny, due) or an upstream 429
#: (claim, ack, throttle, due) before its first attempt; its parents ending (run jobs); each
#: attempt (claim, ack, then a failure and due, or its outcome); cancel; a live wait. Each
#: row carries its job's tenant, type and run, as the ledger's writers write them (ADR 0023).
HISTORY_SQL = f"""
WITH j AS (
    SELECT j.*, CASE WHEN j.run_id IS NULL THEN NULL WHEN j.id = (j.run_id - 1) * :rb + 1 THEN 0
                     WHEN j.id = (j.run_id - 1) * :rb + 4 + floor({u("j.run_id", 50)} * 13)::int THEN 2
                     ELSE 1 END AS role,
        {deny_flag("j", 0, 0.20)} AS deny, {deny_flag("j", 0.20, 0.22)} AS f429,
        coalesce(extract(epoch FROM j.finished_at - j.started_at)::float8,
                 CASE WHEN j.run_id IS NULL THEN {PLAIN_D.format(j="j")} ELSE {RUN_D.format(j="j")} END) AS d,
        CASE WHEN j.state IN ('succeeded', 'dead_lettered') THEN j.attempt WHEN j.attempt >= 1 THEN 1 ELSE 0 END AS k_n,
        'worker:bench-worker-' || (j.id % 4 + 1) AS worker
    FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi
)
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt, error_class, fingerprint,
                         message, wait_reason, tenant_id, job_type, run_id)
SELECT j.id, h.from_state, h.event, h.to_state, h.at, h.actor, h.reason, h.attempt, h.error_class, h.fingerprint,
       h.message, h.wait_reason, j.tenant_id, j.job_type, j.run_id
FROM j CROSS JOIN LATERAL (
    SELECT 0 AS n, NULL AS from_state, 'submit' AS event,
           CASE WHEN j.role > 0 THEN 'pending' WHEN j.wait_reason = 'backpressure' THEN 'throttled' ELSE 'queued' END
               AS to_state, j.created_at AS at, 'api:bench' AS actor, NULL AS reason, 0 AS attempt,
           NULL AS error_class, NULL AS fingerprint, NULL AS message,
           CASE WHEN j.wait_reason = 'backpressure' THEN 'backpressure' END AS wait_reason
    UNION ALL
    SELECT x.n, x.f, x.e, x.t, j.created_at + make_interval(secs => x.o), x.a, x.r, 0, NULL, NULL, NULL, x.wr
    FROM (VALUES (1, 'queued', 'deny', 'throttled', 0.001, 'worker:claim', 'rate_limited: no token', 'rate_limited'),
                 (2, 'throttled', 'due', 'queued', 1.0, 'scheduler', NULL, NULL)) AS x(n, f, e, t, o, a, r, wr)
    WHERE j.deny
    UNION ALL
    SELECT 3, 'pending', CASE WHEN j.state = 'upstream_failed' THEN 'parent_failed' ELSE 'deps_met' END,
           CASE WHEN j.state = 'upstream_failed' THEN 'upstream_failed' ELSE 'queued' END,
           CASE WHEN j.state = 'upstream_failed' THEN j.finished_at WHEN j.started_at IS NULL
                THEN j.created_at + interval '52 seconds'
                ELSE j.started_at - make_interval(secs => (j.attempt - 1) * (j.d + {BACKOFF_S}) + 0.01) END,
           'dag', NULL, 0, NULL, NULL, NULL, NULL
    WHERE j.role > 0 AND j.state <> 'pending'
    UNION ALL
    SELECT 4 + x.n, x.f, x.e, x.t,
           j.started_at - make_interval(secs => (j.attempt - 1) * (j.d + {BACKOFF_S}) + x.o),
           CASE WHEN x.n = 3 THEN 'scheduler' ELSE j.worker END,
           CASE WHEN x.n = 2 THEN 'upstream 429, Retry-After 1' END, 1, NULL, NULL, NULL,
           CASE WHEN x.n = 2 THEN 'rate_limited' END
    FROM (VALUES (0, 'queued', 'claim', 'leased', 1.5), (1, 'leased', 'ack', 'running', 1.49),
                 (2, 'running', 'throttle', 'throttled', 1.4), (3, 'throttled', 'due', 'queued', 0.4))
         AS x(n, f, e, t, o)
    WHERE j.f429
    UNION ALL
    SELECT 10 + 10 * k.k + x.n, x.f, x.e, x.t, x.at, x.a, NULL, k.k, x.cls, x.fp, x.msg, NULL
    FROM generate_series(1, j.k_n) AS k(k)
    CROSS JOIN LATERAL (SELECT
        CASE WHEN j.state = 'leased' THEN j.created_at + make_interval(secs => 0.01 + 2 * {u("j.id", 11)})
             ELSE j.started_at - make_interval(secs => (j.attempt - k.k) * (j.d + {BACKOFF_S})) END AS s,
        k.k < j.attempt OR j.state IN ('retrying', 'dead_lettered') AS failed,
        CASE WHEN j.state = 'dead_lettered' OR (j.state = 'retrying' AND k.k = j.k_n) THEN NULL
             ELSE {cluster("j.id * 8 + k.k", 10, True)} END AS tc) AS p
    CROSS JOIN LATERAL (SELECT coalesce((CAST(:cl_class AS text[]))[p.tc], j.error_class) AS cls,
        coalesce((CAST(:cl_fp AS text[]))[p.tc], j.error_fingerprint) AS fp,
        coalesce(replace((CAST(:cl_msg AS text[]))[p.tc], '{{n}}', (j.id % 997)::text), j.last_error) AS msg) AS e
    CROSS JOIN LATERAL (VALUES
        (1, 'queued', 'claim', 'leased', p.s - interval '5 milliseconds', j.worker, NULL, NULL, NULL, true),
        (2, 'leased', 'ack', 'running', p.s, j.worker, NULL, NULL, NULL, j.state <> 'leased'),
        (3, 'running', CASE WHEN NOT p.failed THEN 'succeed' WHEN e.cls = 'lease_expired' THEN 'lease_expired'
                            WHEN k.k < j.attempt OR j.state = 'retrying' THEN 'fail_retryable' ELSE 'fail_final' END,
            CASE WHEN NOT p.failed THEN 'succeeded' WHEN k.k < j.attempt OR j.state = 'retrying' THEN 'retrying'
                 ELSE 'dead_lettered' END,
            p.s + make_interval(secs => j.d), CASE WHEN e.cls = 'lease_expired' THEN 'scheduler' ELSE j.worker END,
            CASE WHEN p.failed THEN e.cls END, CASE WHEN p.failed THEN e.fp END, CASE WHEN p.failed THEN e.msg END,
            j.state NOT IN ('leased', 'running')),
        (4, 'retrying', 'due', 'queued', p.s + make_interval(secs => j.d + {BACKOFF_S} - 0.01), 'scheduler',
            NULL, NULL, NULL, k.k < j.k_n)
    ) AS x(n, f, e, t, at, a, cls, fp, msg, keep)
    WHERE x.keep
    UNION ALL
    SELECT 90, 'queued',
           CASE WHEN j.state = 'canceled' THEN 'cancel' ELSE 'deny' END, j.state,
           coalesce(j.finished_at, j.created_at + interval '10 milliseconds'),
           CASE WHEN j.state = 'canceled' THEN 'local:bench' ELSE 'worker:claim' END,
           CASE WHEN j.state = 'canceled' THEN 'canceled by an operator' ELSE j.wait_reason || ': held back' END,
           0, NULL, NULL, NULL, j.wait_reason
    WHERE j.state = 'canceled' OR (j.state = 'throttled' AND j.wait_reason <> 'backpressure')
) AS h
ORDER BY j.id, h.n"""

LOGS_SQL = """
INSERT INTO job_logs (job_id, attempt, at, level, message, seq)
SELECT j.id, j.attempt, j.started_at + make_interval(secs => i * 0.001), CASE WHEN i = 3 THEN 'warning' ELSE 'info' END,
       (ARRAY['started page ' || (j.id % 97), 'fetched ' || (j.id % 500) || ' rows', 'slow upstream: 1.2 s'])[i], i
FROM jobs AS j CROSS JOIN generate_series(1, 3) AS i
WHERE j.id BETWEEN :lo AND :hi AND j.started_at IS NOT NULL AND pg_temp.u(j.id, 18) < 0.10"""
ARTIFACTS_SQL = """
INSERT INTO artifacts (job_id, tenant_id, attempt, name, media_type, sha256, size_bytes, data, created_at)
SELECT j.id, j.tenant_id, j.attempt, 'report-' || j.id || '.csv', 'text/csv', md5(j.id::text) || md5('a' || j.id), 256,
       decode(repeat('2c', 256), 'hex'), j.finished_at
FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi AND j.state = 'succeeded' AND pg_temp.u(j.id, 19) < 0.01"""
RESULTS_SQL = """
INSERT INTO job_results (job_id, tenant_id, result, size_bytes, created_at)
SELECT j.id, j.tenant_id, jsonb_build_object('rows', j.id % 1000), 13, j.finished_at
FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi AND j.run_id IS NOT NULL AND j.state = 'succeeded'"""

RUNS_SQL = """
INSERT INTO runs (id, tenant_id, kind, name, params, created_by, created_at, state, attempt, spec_digest, jobs_total,
                  jobs_live, max_jobs, started_at, finished_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT r, min(j.tenant_id), 'adhoc', (CAST(:names AS text[]))[(1 + r % 6)::int], '{}', 'api:bench', min(j.created_at),
       CASE WHEN bool_or(j.finished_at IS NULL) THEN 'running' WHEN bool_or(j.state = 'dead_lettered') THEN 'failed'
            ELSE 'succeeded' END, 1, md5(r::text) || md5((-r)::text), count(*),
       count(*) FILTER (WHERE j.finished_at IS NULL), 10000, min(j.created_at),
       CASE WHEN NOT bool_or(j.finished_at IS NULL) THEN max(j.finished_at) END,
       coalesce(max(j.finished_at), min(j.created_at))
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS r
JOIN jobs AS j ON j.id BETWEEN (r - 1) * :rb + 1 AND (r - 1) * :rb + 4 + floor(pg_temp.u(r, 50) * 13)::int
GROUP BY r"""
RUN_JOBS_SQL = """
WITH k AS (
    SELECT j.id, j.run_id, j.state, j.id - (j.run_id - 1) * :rb - 1 AS pos, r.jobs_total AS m,
           (SELECT p.state FROM jobs AS p WHERE p.id = (j.run_id - 1) * :rb + 1) AS root_state
    FROM runs AS r JOIN jobs AS j ON j.run_id = r.id WHERE r.id BETWEEN :lo AND :hi
), mid AS (
    SELECT run_id, count(*) FILTER (WHERE state = 'succeeded') AS ok,
           count(*) FILTER (WHERE state = 'dead_lettered') AS bad
    FROM k WHERE pos BETWEEN 1 AND m - 2 GROUP BY run_id
), ins AS (
    INSERT INTO run_jobs (job_id, run_id, key, trigger_rule, deps_total, deps_ok, deps_failed)
    SELECT k.id, k.run_id, CASE WHEN k.pos = 0 THEN 'extract' WHEN k.pos = k.m - 1 THEN 'publish'
                               ELSE 'shard-' || lpad(k.pos::text, 2, '0') END, 'all_success',
           CASE WHEN k.pos = 0 THEN 0 WHEN k.pos = k.m - 1 THEN k.m - 2 ELSE 1 END,
           CASE WHEN k.pos = 0 THEN 0 WHEN k.pos = k.m - 1 THEN mid.ok ELSE (k.root_state = 'succeeded')::int END,
           CASE WHEN k.pos = k.m - 1 THEN mid.bad ELSE 0 END
    FROM k JOIN mid USING (run_id)
)
INSERT INTO dag_edges (parent_id, child_id, run_id)
SELECT CASE WHEN k.pos = k.m - 1 THEN c.id ELSE k.id - k.pos END, CASE WHEN k.pos = k.m - 1 THEN k.id ELSE k.id END,
       k.run_id
FROM k LEFT JOIN k AS c ON k.pos = k.m - 1 AND c.run_id = k.run_id AND c.pos BETWEEN 1 AND c.m - 2
WHERE k.pos > 0"""

#: The identities go on after the ids inserted; a few dead letters were replayed (a later
#: plain job of the tenant points back at each);
#: the outbox: a submit announcement per 50 jobs and a run.state event per run that ended.
EVENTS_SQL = """
SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs));
SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs));
UPDATE jobs AS r SET replay_of = d.id FROM jobs AS d
WHERE d.state = 'dead_lettered' AND d.run_id IS NULL AND d.id % 50 = 0 AND r.id = d.id + 977
  AND r.run_id IS NULL AND r.state = 'succeeded' AND r.tenant_id = d.tenant_id;
INSERT INTO events (at, tenant_id, kind, payload, published_at)
SELECT e.at, (CAST(:tenant_ids AS bigint[]))[(1 + i % 8)::int], 'jobs.submitted',
       jsonb_build_object('count', 50, 'first_id', (i - 1) * 50 + 1, 'last_id', i * 50, 'actor', 'api:bench'),
       CASE WHEN i <= :n - 20 THEN e.at + interval '50 milliseconds' END
FROM generate_series(1, CAST(:n AS bigint)) AS i
CROSS JOIN LATERAL (SELECT CAST(:t0 AS timestamptz) + make_interval(secs => :span_s * (i - 0.5) / :n) AS at) AS e;
INSERT INTO events (at, tenant_id, kind, payload, published_at)
SELECT finished_at, tenant_id, 'run.state', jsonb_build_object('run_id', id, 'name', name, 'state', state,
       'from_state', 'running', 'attempt', 1, 'actor', 'dag'), finished_at + interval '50 milliseconds'
FROM runs WHERE state <> 'running'"""


# -- configuration, through core.control as an operator writes it --------------------------

WHY = "bench: console ledger"
AUDIT_ROWS = 2000


def configure(engine: Any) -> tuple[dict[str, int], list[int]]:
    """Job types, tenants, sources with their buckets, quotas, a backlog limit, pauses,
    blackouts (all audited), then in SQL: circuits in every state, buckets slowed down, 20
    days of rate changes, the last hour's quota starts, and AUDIT_ROWS operator actions
    appended to the audit chains. Returns {tenant: id} and the sources' ids, 4 per tenant
    in TENANTS order."""
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import Scope, local_principal
    from core.domain.jobtypes import JobTypeRow
    from core.ledger import audit

    p = local_principal("bench")
    control.register_job_types(engine, [JobTypeRow(n, q, a, 2.0, 300.0, 60.0, 10.0) for n, q, a, _, _ in JOB_TYPES])
    for t in TENANTS:
        for name, host, rate in SOURCES:
            control.add_source(
                engine, p, tenant=t, name=name, host=host.format(t=t), rate=rate, burst=2 * rate, reason=WHY
            )
    control.set_quota(engine, p, tenant="acme", job_type="bench.fetch", max_active=50, max_per_hour=200_000, reason=WHY)
    control.set_quota(engine, p, tenant="globex", job_type="bench.transform", max_active=20, reason=WHY)
    control.set_backlog_limit(engine, p, tenant="wonka", limit=5000, policy="defer", reason=WHY)
    control.pause(engine, p, tenant="initech", source="feed-c", reason="bench: upstream migration")
    control.pause(engine, p, tenant="umbrella", job_type="bench.report", reason="bench: report freeze")
    control.add_blackout(engine, p, tenant="hooli", cron_expr="0 3 * * *", duration_s=1800, reason="bench: backups")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    control.add_blackout(
        engine, p, tenant="stark", source="feed-d", starts_at=soon, ends_at=soon + dt.timedelta(hours=2), reason=WHY
    )
    with engine.begin() as conn:
        conn.execute(sa.text(FLOW_SQL))
        tenants = {str(n): int(i) for n, i in conn.execute(sa.text("SELECT name, id FROM tenants"))}
        ids = {(int(t), str(n)): int(i) for t, n, i in conn.execute(sa.text("SELECT tenant_id, name, id FROM sources"))}
        for i in range(AUDIT_ROWS):  # operator actions over the 20 days, on every tenant's chain
            action = AUDIT_ACTIONS[i % len(AUDIT_ACTIONS)]
            tenant = TENANTS[i % len(TENANTS)]
            what = (f"user:ops-{i % 5}", [Scope.OPERATE.value], action, f"job {1000 + 37 * i}", tenant)
            audit.append(conn, audit.AuditEntry(*what, "bench: on call", f"OPS-{i % 50}", {"n": i}))
    sources = [ids[(tenants[t], name)] for t in TENANTS for name, _, _ in SOURCES]
    return tenants, sources


AUDIT_ACTIONS = ("cancel", "retry", "replay", "pause", "resume", "throttle", "schedule.trigger")
FLOW_SQL = """
UPDATE sources SET circuit_window = CASE WHEN id % 3 = 0 THEN repeat('0', 17) || '101' ELSE repeat('0', 20) END;
UPDATE sources AS s SET circuit_state = 'open', circuit_since = now() - interval '2 minutes', circuit_window = '',
       circuit_until = now() + interval '28 seconds', opened_total = 3
FROM tenants AS t WHERE t.id = s.tenant_id AND t.name = 'globex' AND s.name = 'feed-d';
UPDATE sources AS s SET circuit_state = 'half_open', circuit_since = now() - interval '5 seconds', circuit_window = '',
       circuit_until = now() + interval '30 seconds', circuit_probes = 1, opened_total = 1
FROM tenants AS t WHERE t.id = s.tenant_id AND t.name = 'hooli' AND s.name = 'feed-c';
INSERT INTO throttles (at, bucket_id, tenant_id, old_rate, new_rate, reason, actor)
SELECT now() - make_interval(secs => 1728000 * (1 - (k - random()) / 160.0)), b.id, b.tenant_id,
       CASE WHEN k % 2 = 1 THEN b.base_rate ELSE b.base_rate / 2 END,
       CASE WHEN k % 2 = 1 THEN b.base_rate / 2 ELSE b.base_rate END,
       CASE WHEN k % 2 = 1 THEN 'upstream 429: rate halved, bucket blocked for 1.00s' ELSE 'successes: rate raised' END,
       CASE WHEN k % 2 = 1 THEN 'worker:bench-worker-1' ELSE 'aimd' END
FROM buckets AS b CROSS JOIN generate_series(1, 160) AS k;
UPDATE buckets SET rate = base_rate / 2, ceiling = base_rate * 0.6, ceiling_at = now() - interval '1 minute',
       decreased_at = now() + interval '1 second', updated_at = now() + interval '1 second', tokens = 0
WHERE id % 5 = 0;
UPDATE buckets SET denied_total = (id * 7919) % 50000, upstream_429_total = (id * 104729) % 3000;
INSERT INTO quota_starts (quota_id, minute, starts)
SELECT q.id, date_trunc('minute', now()) - make_interval(mins => m), 20 + m % 7
FROM quotas AS q CROSS JOIN generate_series(0, 60) AS m WHERE q.max_per_hour IS NOT NULL"""


class Progress:
    """A progress bar on stderr: one line redrawn on a terminal, a line per tenth otherwise."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.done, self.t0, self.shown = name, max(1, total), 0, time.monotonic(), -1
        self.tty = sys.stderr.isatty()
        self.advance(0)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        frac, el = self.done / self.total, time.monotonic() - self.t0
        if not self.tty and int(frac * 10) == self.shown:
            return
        self.shown = int(frac * 10)
        eta = f"eta {el / frac - el:5.0f}s" if 0 < frac < 1 else ""
        bar = "#" * int(frac * 30)
        line = f"{self.name:<26} [{bar:<30}] {frac:4.0%} {self.done:>11,}/{self.total:<11,} {el:6.1f}s {eta}"
        end = "\n" if not self.tty or self.done >= self.total else ""
        sys.stderr.write(("\r" if self.tty else "") + line.ljust(100) + end)
        sys.stderr.flush()


def cuts(shares: tuple[float, ...]) -> list[float]:
    """Lower bounds of each share's bucket in [0, 1), for width_bucket."""
    return [float(sum(shares[:i])) for i in range(len(shares))]


def chunks(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + size - 1)) for a in range(lo, hi + 1, size)]


def seed(
    engine: Any, n: int, tenants: dict[str, int], sources: list[int], say: Callable[[str], None]
) -> dict[str, float]:
    """Fill the configured ledger (tenants, sources, job types: bench/console.py) with n jobs
    and the rest, on one connection. Returns the seconds each step took."""
    import sqlalchemy as sa

    steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        t = time.monotonic()
        yield
        steps[name] = time.monotonic() - t

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(SESSION_SQL))
        conn.execute(sa.text(U_FN))
        p = params(n, tenants, sources)
        rebuild = drop_bulk_constraints(conn)
        with step("jobs"):
            bar = Progress("jobs", n)
            for lo, hi in chunks(1, n, 100_000):
                conn.execute(sa.text(JOBS_SQL), {**p, "lo": lo, "hi": hi})
                bar.advance(hi - lo + 1)
        with step("history"):
            bar = Progress("history, logs, artifacts", n)
            for lo, hi in chunks(1, n, 50_000):
                for sql in (HISTORY_SQL, LOGS_SQL, ARTIFACTS_SQL, RESULTS_SQL):
                    conn.execute(sa.text(sql), {**p, "lo": lo, "hi": hi})
                bar.advance(hi - lo + 1)
        with step("runs"):
            bar = Progress("runs, jobs of runs, edges", p["runs"])
            for lo, hi in chunks(1, p["runs"], 5_000):
                for sql in (RUNS_SQL, RUN_JOBS_SQL):
                    conn.execute(sa.text(sql), {**p, "lo": lo, "hi": hi, "names": RUN_NAMES})
                bar.advance(hi - lo + 1)
            say("replays, events ...")
            script(conn, EVENTS_SQL, {**p, "n": max(1, n // 50)})
        with step("schedules"):
            from bench import console_seed_schedules

            console_seed_schedules.schedules(engine, conn, p, say)
        with step("counters"):
            say("counters, queue depth samples ...")
            script(conn, COUNTERS_SQL)
        with step("indexes"):
            bar = Progress("indexes and keys", len(rebuild))
            for ddl in rebuild:
                conn.execute(sa.text(ddl))
                bar.advance()
        with step("vacuum"):
            say("VACUUM ANALYZE ...")
            conn.execute(sa.text("VACUUM (ANALYZE)"))
    return steps


def params(n: int, tenants: dict[str, int], sources: list[int]) -> dict[str, Any]:
    from core.domain import fingerprints

    return {
        "n": n,
        "rb": RUN_BLOCK,
        "runs": n // RUN_BLOCK,
        "live_from": n - min(n // 4, math.ceil(LIVE_JOBS / LIVE_SHARE)),
        "t0": dt.datetime.now(dt.UTC) - dt.timedelta(days=DAYS),
        "span_s": DAYS * 86400 - YOUNGEST_S,
        "tenant_ids": [tenants[t] for t in TENANTS],
        "tenant_edges": cuts(TENANT_SHARE),
        "type_edges": cuts(tuple(t[3] for t in JOB_TYPES)),
        **{
            f"type_{k}": [t[i] for t in JOB_TYPES] for i, k in ((0, "names"), (1, "queues"), (2, "max"), (4, "sourced"))
        },
        "source_ids": sources,
        "cl_class": [c for c, _ in CLUSTERS],
        "cl_msg": [m for _, m in CLUSTERS],
        "cl_fp": [fingerprints.fingerprint(c, m.replace("{n}", "17")) for c, m in CLUSTERS],
        "transient": list(TRANSIENT),
    }


def drop_bulk_constraints(conn: Any) -> list[str]:
    """Drop the large indexes of BULK_INDEXES and every foreign key of their tables; return
    the DDL that creates them again from their own definitions (indexes first, then the keys,
    which validate every row)."""
    import sqlalchemy as sa

    names = [n for names in BULK_INDEXES.values() for n in names]
    indexes = conn.execute(sa.text(INDEX_DEFS_SQL), {"names": names}).all()
    keys = conn.execute(sa.text(KEY_DEFS_SQL), {"tables": list(BULK_INDEXES)}).all()
    for name, _ in indexes:
        conn.execute(sa.text(f'DROP INDEX "{name}"'))
    for table, name, _ in keys:
        conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    return [d for _, d in indexes] + [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in keys]


SESSION_SQL = """SET maintenance_work_mem = '1GB'; SET work_mem = '256MB'; SET synchronous_commit = off;
SET max_parallel_maintenance_workers = 2"""
INDEX_DEFS_SQL = """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid WHERE c.relname = ANY(:names)"""
KEY_DEFS_SQL = """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE contype = 'f' AND conrelid::regclass::text = ANY(:tables) ORDER BY 1, 2"""
RUN_NAMES = ["nightly-etl", "hourly-rollup", "customer-sync", "invoice-batch", "feed-refresh", "report-build"]

#: The running totals the ledger keeps (submit and run counters) and the scheduler's queue
#: depth samples: every 10 s over the 7 days it keeps, per tenant, queue and state present now,
#: wandering around today's depth and ending at it.
COUNTERS_SQL = """
INSERT INTO submit_counters (tenant_id, job_type, submitted)
SELECT tenant_id, job_type, count(*) FROM jobs GROUP BY 1, 2
ON CONFLICT (tenant_id, job_type) DO UPDATE SET submitted = EXCLUDED.submitted;
INSERT INTO run_counters (tenant_id, state, finished)
SELECT tenant_id, state, count(*) FROM runs WHERE state <> 'running' GROUP BY 1, 2
ON CONFLICT (tenant_id, state) DO UPDATE SET finished = EXCLUDED.finished;
WITH now_ AS (SELECT tenant_id, queue, state, count AS n, row_number() OVER () AS g
              FROM (SELECT tenant_id, queue, state, count(*) AS count FROM jobs
                    WHERE state IN ('queued', 'leased', 'running', 'retrying', 'throttled') GROUP BY 1, 2, 3) AS x)
INSERT INTO queue_depth_samples (at, tenant_id, queue, state, count)
SELECT date_trunc('second', now()) - make_interval(secs => 10 * k), q.tenant_id, q.queue, q.state,
       CASE WHEN k = 0 THEN q.n ELSE greatest(0, round(q.n * (0.6 + 0.5 * sin(k / 360.0 + q.g)
                                                        + 0.3 * pg_temp.u(k * 1000 + q.g, 40))))::bigint END
FROM now_ AS q CROSS JOIN generate_series(0, 7 * 8640 - 1) AS k"""


def script(conn: Any, sql: str, params: dict[str, Any] | None = None) -> None:
    """Run the statements of `sql` (separated by semicolons) one by one."""
    import sqlalchemy as sa

    for statement in sql.split(";"):
        conn.execute(sa.text(statement), params or {})
