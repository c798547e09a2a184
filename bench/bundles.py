"""Audit bundles on a big tenant: export, verify, import and export again, timed.

    python bench/bundles.py [--jobs 1000000] [--keep] [--profile] [--database-url URL]

In a scratch database (`orch_bench_bundles_*`, dropped on exit, on Ctrl-C and on SIGTERM
unless --keep) on the server of --database-url (default ORCH_DATABASE_URL, else the local
postgres database), one tenant, acme, gets --jobs jobs created evenly over the last 20 days,
5 history rows each on average: even jobs submit, claim, ack, succeed; odd jobs, on a
rate-limited source, are denied a token first (submit, deny, due, claim, ack, then succeed
or, for 2% of all jobs, fail_final). Every tenth payload holds an `api_token` and the dead
letters' errors a `token=...`, so redaction has work; a tenth of the jobs have a result.
Sources, pauses and resumes go through core.control (a real audit chain and rate changes);
the bulk is INSERT ... SELECT over generate_series (jobs 100,000 a statement, history 1,000
jobs a statement, whose rows the outbox trigger announces in events as in production), with
the big indexes and the foreign keys of jobs and job_history dropped and created again
afterwards (which validates every row, the history's transitions included).

Then, each in a child process of its own (this script's hidden `_child`), so that each peak
RSS is its own (VmHWM, and the sampled sum over any worker processes the call spawns):
`export_bundle` of the tenant up to the end of the seeding, `verify_bundle` of it,
`import_bundle` into a second fresh scratch database, and `export_bundle` of the same range
from there, whose sha256 must be the first one's. The floor: the same jobs (with results)
and history as plain text `COPY ... TO STDOUT` through psycopg, before and after the export
(the faster counts); the export's own two statements as COPY are timed too. --profile runs
the export and the verify under cProfile and prints their top functions.

Human lines on stdout, progress on stderr; the last line is JSON {"jobs", "history",
"seed_s", "export_1m_s", "verify_1m_s", "import_s", "reexport_identical", "export_peak_rss_mb",
"verify_peak_rss_mb", "peak_rss_mb", "bundle_bytes", "copy_s", "export_over_copy", "targets",
...}; the keys say 1m whatever --jobs is (`jobs` says how many).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import console_seed as cs  # noqa: E402 - needs ROOT on sys.path when run as a script
from bench import throughput  # noqa: E402

TENANT = "acme"
DAYS = 20
YOUNGEST_S = 300.0
JOB_CHUNK, HISTORY_CHUNK = 100_000, 1_000
#: figure -> (target, True when lower is better)
TARGETS: dict[str, tuple[Any, bool]] = {
    "export_1m_s": (90.0, True),
    "verify_1m_s": (60.0, True),
    "peak_rss_mb": (500.0, True),
    "reexport_identical": (True, False),
}
BULK = {
    "jobs": ("jobs_tenant_state_idx", "jobs_finished_idx", "jobs_prunable_idx"),
    "job_history": ("job_history_job_idx",),
}
JOB_TYPES = (("bench.fetch", "bench-ingest"), ("bench.report", "bench-report"))
DEAD_CLASS = "auth"
DEAD_MSG = "401 Unauthorized from api.acme.example: token=abc123 expired"
WHY = "bench: bundles"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


# -- the scratch databases ------------------------------------------------------------------


# -- seeding -------------------------------------------------------------------------------

JOBS_SQL = """
INSERT INTO jobs (id, tenant_id, source_id, job_type, queue, priority, payload, payload_digest, idempotency_key,
    state, attempt, max_attempts, error_class, last_error, error_fingerprint, rung_at, created_at, updated_at,
    started_at, finished_at)
SELECT i, :tid, CASE WHEN v.odd THEN :src END, CASE WHEN v.odd THEN 'bench.fetch' ELSE 'bench.report' END,
    CASE WHEN v.odd THEN 'bench-ingest' ELSE 'bench-report' END, CASE WHEN i % 20 = 7 THEN 10 ELSE 0 END,
    CASE WHEN i % 10 = 0 THEN jsonb_build_object('api_token', 'x', 'n', i)
         ELSE jsonb_build_object('n', i, 'page', i % 97) END,
    md5(i::text) || md5((-i)::text), CASE WHEN i % 20 = 3 THEN 'key-' || i END,
    CASE WHEN v.dead THEN 'dead_lettered' ELSE 'succeeded' END, 1, 3,
    CASE WHEN v.dead THEN :cls END, CASE WHEN v.dead THEN :msg END, CASE WHEN v.dead THEN :fp END,
    v.c, v.c, f.f, s.s, f.f
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
CROSS JOIN LATERAL (SELECT i % 2 = 1 AS odd, i % 50 = 1 AS dead,
                           CAST(:t0 AS timestamptz) + make_interval(secs => :span_s * (i - 0.5) / :n) AS c) AS v
CROSS JOIN LATERAL (SELECT v.c + make_interval(secs => CASE WHEN v.odd THEN 1.505 ELSE 0.015 END) AS s) AS s
CROSS JOIN LATERAL (SELECT s.s + make_interval(secs => 0.05 + (i % 1000) / 100.0) AS f) AS f
ORDER BY i"""

#: A job's transitions, from its row: submit; a denied token and its release (sourced jobs);
#: claim, ack and the outcome of its one attempt.
HISTORY_SQL = """
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt, error_class, fingerprint,
                         message, wait_reason)
SELECT j.id, x.f, x.e, x.t, x.at, x.a, x.r, x.att, x.cls, x.fp, x.msg, x.wr
FROM jobs AS j
CROSS JOIN LATERAL (SELECT 'worker:bench-worker-' || (j.id % 4 + 1) AS w, j.source_id IS NOT NULL AS denied) AS k
CROSS JOIN LATERAL (VALUES
    (0, CAST(NULL AS text), 'submit', 'queued', j.created_at, 'api:bench', CAST(NULL AS text), 0, CAST(NULL AS text),
        CAST(NULL AS text), CAST(NULL AS text), CAST(NULL AS text), true),
    (1, 'queued', 'deny', 'throttled', j.created_at + interval '1 millisecond', 'worker:claim',
        'rate_limited: no token', 0, NULL, NULL, NULL, 'rate_limited', k.denied),
    (2, 'throttled', 'due', 'queued', j.created_at + interval '1 second', 'scheduler', NULL, 0, NULL, NULL, NULL,
        NULL, k.denied),
    (3, 'queued', 'claim', 'leased', j.started_at - interval '5 milliseconds', k.w, NULL, 1, NULL, NULL, NULL, NULL,
        true),
    (4, 'leased', 'ack', 'running', j.started_at, k.w, NULL, 1, NULL, NULL, NULL, NULL, true),
    (5, 'running', CASE WHEN j.state = 'dead_lettered' THEN 'fail_final' ELSE 'succeed' END, j.state, j.finished_at,
        k.w, NULL, 1, j.error_class, j.error_fingerprint, j.last_error, NULL, true)
) AS x(n, f, e, t, at, a, r, att, cls, fp, msg, wr, keep)
WHERE j.id BETWEEN :lo AND :hi AND x.keep
ORDER BY j.id, x.n"""

RESULTS_SQL = """
INSERT INTO job_results (job_id, tenant_id, result, size_bytes, created_at)
SELECT j.id, j.tenant_id, jsonb_build_object('rows', j.id % 1000), 14, j.finished_at
FROM jobs AS j WHERE j.id BETWEEN :lo AND :hi AND j.id % 10 = 5 AND j.state = 'succeeded'"""


def configure(engine: Any) -> tuple[int, int]:
    """The tenant, its job types, two sources and a run of pauses and resumes, all through
    core.control (audited). Returns (tenant id, the rate-limited source's id)."""
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import local_principal
    from core.domain.jobtypes import JobTypeRow

    p = local_principal("bench")
    control.register_job_types(
        engine, [JobTypeRow(name, queue, 3, 2.0, 300.0, 60.0, 10.0) for name, queue in JOB_TYPES]
    )
    control.add_source(engine, p, tenant=TENANT, name="feed-a", host="api.acme.example", rate=50, burst=100, reason=WHY)
    control.add_source(engine, p, tenant=TENANT, name="feed-b", host="cdn.partner.example", rate=20, reason=WHY)
    for i in range(10):
        scope: dict[str, Any] = {"source": "feed-a"} if i % 2 == 0 else {"job_type": "bench.report"}
        control.pause(engine, p, tenant=TENANT, reason=f"bench: maintenance window {i}", ticket=f"OPS-{i}", **scope)
        control.resume(engine, p, tenant=TENANT, reason=f"bench: maintenance {i} over", **scope)
    with engine.connect() as conn:
        tid = conn.execute(sa.text("SELECT id FROM tenants WHERE name = :t"), {"t": TENANT}).scalar_one()
        src = conn.execute(sa.text("SELECT id FROM sources WHERE tenant_id = :t AND name = 'feed-a'"), {"t": tid})
        return int(tid), int(src.scalar_one())


def seed(engine: Any, n: int) -> tuple[dict[str, float], dict[str, int]]:
    """n jobs of acme and their history (configure first). Returns the seconds of each step
    and the counts of what is there (COUNTS_SQL)."""
    import sqlalchemy as sa

    from core.domain import fingerprints

    tid, src = configure(engine)
    now = dt.datetime.now(dt.UTC)
    p = {"tid": tid, "src": src, "n": n, "t0": now - dt.timedelta(days=DAYS), "span_s": DAYS * 86400 - YOUNGEST_S}
    p.update(cls=DEAD_CLASS, msg=DEAD_MSG, fp=fingerprints.fingerprint(DEAD_CLASS, DEAD_MSG))
    steps: dict[str, float] = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(cs.SESSION_SQL))
        names = [x for names in BULK.values() for x in names]
        indexes = conn.execute(sa.text(cs.INDEX_DEFS_SQL), {"names": names}).all()
        keys = conn.execute(sa.text(cs.KEY_DEFS_SQL), {"tables": list(BULK)}).all()
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        for table, name, _ in keys:
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        rebuild = [d for _, d in indexes] + [f'ALTER TABLE {t} ADD CONSTRAINT "{k}" {d}' for t, k, d in keys]
        t = time.monotonic()
        bar = cs.Progress("jobs", n)
        for lo, hi in cs.chunks(1, n, JOB_CHUNK):
            conn.execute(sa.text(JOBS_SQL), {**p, "lo": lo, "hi": hi})
            bar.advance(hi - lo + 1)
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs))"))
        steps["jobs"], t = time.monotonic() - t, time.monotonic()
        bar = cs.Progress("history, results", n)
        for lo, hi in cs.chunks(1, n, HISTORY_CHUNK):
            conn.execute(sa.text(HISTORY_SQL), {"lo": lo, "hi": hi})
            conn.execute(sa.text(RESULTS_SQL), {"lo": lo, "hi": hi})
            bar.advance(hi - lo + 1)
        steps["history"], t = time.monotonic() - t, time.monotonic()
        bar = cs.Progress("indexes and keys", len(rebuild))
        for ddl in rebuild:
            conn.execute(sa.text(ddl))
            bar.advance()
        steps["indexes"], t = time.monotonic() - t, time.monotonic()
        say("VACUUM ANALYZE ...")
        conn.execute(sa.text("VACUUM (ANALYZE)"))
        steps["vacuum"] = time.monotonic() - t
        row = conn.execute(sa.text(COUNTS_SQL), {"t": tid, "n": TENANT}).one()
    return steps, dict(zip(COUNT_KEYS, map(int, row), strict=True))


COUNTS_SQL = """SELECT (SELECT count(*) FROM jobs WHERE tenant_id = :t),
    (SELECT count(*) FROM job_history AS h JOIN jobs AS j ON j.id = h.job_id WHERE j.tenant_id = :t),
    (SELECT count(*) FROM events WHERE tenant_id = :t),
    (SELECT coalesce(sum(octet_length(payload::text)), 0) / 1048576 FROM events WHERE tenant_id = :t),
    (SELECT count(*) FROM audit_log WHERE chain = :n),
    (SELECT count(*) FROM throttles WHERE tenant_id = :t), pg_database_size(current_database())"""
COUNT_KEYS = ("jobs", "history", "events", "events_mb", "audit_rows", "throttles", "db_bytes")


# -- the floor: the same rows as plain COPY -------------------------------------------------

#: The rows of the export's two big files, plain columns: the bench's own SQL, so the floor
#: stays put while the export's statements change.
PLAIN_SQL = (
    "SELECT j.*, r.result FROM jobs AS j LEFT JOIN job_results AS r ON r.job_id = j.id"
    " WHERE j.tenant_id = {tid} AND j.created_at < {to} ORDER BY j.id",
    "SELECT h.* FROM jobs AS j JOIN job_history AS h ON h.job_id = j.id"
    " WHERE j.tenant_id = {tid} AND j.created_at < {to} ORDER BY h.job_id, h.id",
)


def copy_floor(url: str, range_to: dt.datetime, export_sql: bool = False) -> tuple[float, int]:
    """The range's jobs (with results) and history as text COPY TO STDOUT through psycopg,
    every byte read and dropped; with export_sql, the export's own bundle_jobs and
    bundle_history instead. Returns (seconds, bytes)."""
    import sqlalchemy as sa
    from psycopg import sql

    from core.ledger import db
    from core.ledger.statements import stmt

    engine = db.create_engine(url, pool_size=1, application_name="bench-bundles-copy")
    try:
        with engine.connect() as conn:
            tid = conn.execute(sa.text("SELECT id FROM tenants WHERE name = :n"), {"n": TENANT}).scalar_one()
            raw = conn.connection.driver_connection
            assert raw is not None
            values = {"tenant_id": str(int(tid)), "range_from": "NULL", "range_to": f"'{range_to.isoformat()}'"}
            bodies = [x.format(tid=values["tenant_id"], to=values["range_to"]) for x in PLAIN_SQL]
            if export_sql:
                sub = re.compile(r":(tenant_id|range_from|range_to)\b")
                bodies = [sub.sub(lambda m: values[m[1]], stmt(n).text) for n in ("bundle_jobs", "bundle_history")]
            size, t = 0, time.perf_counter()
            with raw.cursor() as cur:
                for body in bodies:
                    with cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(sql.SQL(body))) as copy:
                        for data in copy:
                            size += len(data)
            seconds = time.perf_counter() - t
            raw.rollback()
    finally:
        engine.dispose()
    return seconds, size


# -- the timed calls, each in a child process -----------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tree_rss_mb(pid: int) -> tuple[float, int]:
    """VmRSS summed over `pid` and every process under it (pages they share count in each,
    so this errs high), and how many processes that was."""
    total, n, todo = 0.0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # it ended meanwhile
            continue
        rss = [int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")]
        total, n = total + (rss[0] / 1024 if rss else 0.0), n + 1
    return total, n


class TreeRss(threading.Thread):
    """Samples _tree_rss_mb of this process every 100 ms: a call that spawns workers (the
    verify's line checks) is measured with them."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb, self.processes, self.done = 0.0, 1, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            mb, n = _tree_rss_mb(os.getpid())
            self.peak_mb, self.processes = max(self.peak_mb, mb), max(self.processes, n)


def child(spec: dict[str, Any]) -> None:
    """One export, verify or import; prints its figures as JSON on the last line."""
    import cProfile
    import resource

    from core.control import bundles
    from core.domain import bundle
    from core.domain.auth import local_principal
    from core.ledger import db

    kind, path = spec["kind"], Path(spec["bundle"])
    engine = db.create_engine(spec["url"], pool_size=2, application_name="bench-bundles") if spec.get("url") else None
    principal = local_principal("bench")
    t0, shown, ends = time.monotonic(), {"": 0.0}, {}

    def progress(stage: str, n: int) -> None:
        now = ends[stage] = time.monotonic()
        if stage not in shown or now - shown[stage] >= 5:
            shown[stage] = now
            say(f"  {kind}: {stage} {n:,} ({now - t0:.1f} s)")

    rss_before = _status_mb("VmRSS")
    sampler = TreeRss()
    sampler.start()
    prof = cProfile.Profile() if spec.get("profile") else None
    result: dict[str, Any] = {}
    t, m0 = time.perf_counter(), time.monotonic()
    if prof is not None:
        prof.enable()
    try:
        if kind == "export":
            assert engine is not None
            key = bundle.load_private_key(spec["key"])
            to = dt.datetime.fromisoformat(spec["to"])
            e = bundles.export_bundle(
                engine, principal, tenant=TENANT, out=path, key=key, range_to=to, progress=progress
            )
            result = {"sha256": e.sha256, "lines": e.lines, "size": e.size}
        elif kind == "verify":
            r = bundles.verify_bundle(path, [bundle.load_public_key(spec["pub"])], progress=progress)
            result = {"ok": r.ok, "failure": r.failure, "steps": [f"{s.name}: {s.detail}" for s in r.steps]}
        elif kind == "import":
            assert engine is not None
            imp = bundles.import_bundle(engine, principal, path=path, keys=[bundle.load_public_key(spec["pub"])])
            result = {"rows": imp.rows}
    except Exception as exc:  # reported, not raised: the run goes on and says what failed
        result = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"}
    seconds, m1 = time.perf_counter() - t, time.monotonic()
    sampler.done.set()
    if prof is not None:
        prof.disable()
        prof.dump_stats(spec["profile"])
    if engine is not None:
        engine.dispose()
    if kind == "export" and "error" not in result:
        # Each record file from the end of the one before; "archive": the replay script,
        # the tar.gz of the spooled files, the rename and the export's audit row.
        from core.domain.bundle_archive import ORDER

        stages, prev = {}, m0
        for name in ORDER:
            stages[name], prev = round(ends.get(name, prev) - prev, 2), ends.get(name, prev)
        result["stages_s"] = {**stages, "archive": round(m1 - prev, 2)}
    sampler.join()
    hwm = _status_mb("VmHWM")
    figures = {
        "seconds": seconds,
        "peak_rss_mb": max(hwm, sampler.peak_mb),  # this process and its workers, if any
        "self_peak_rss_mb": hwm,
        "workers_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # KiB on Linux
        "processes": sampler.processes,
        "rss_before_mb": rss_before,
    }
    print(json.dumps({**result, **figures}))


def run_child(**spec: Any) -> dict[str, Any]:
    """This script's `_child` with `spec`; its JSON line, or {"error": ...} if it had none."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", json.dumps(spec)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=throughput._parent_death_signal())
    lines = done.stdout.strip().splitlines()
    try:
        got: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"the {spec['kind']} process exited with status {done.returncode} and no figures"}
    if "error" in got:
        say(f"  {spec['kind']} FAILED: {got['error']}")
    return got


# -- the run -------------------------------------------------------------------------------


def measure(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from core.domain import bundle
    from core.ledger import db

    key = bundle.new_key()
    key_path, pub_path = work / "signing.key", work / "signing.pub"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(bundle.private_pem(key))
    pub_path.write_bytes(bundle.public_pem(key.public_key()))
    stamp = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.gettempdir())
    prof = {k: str(tmp / f"orch-bench-bundles-{stamp}-{k}.prof") if a.profile else None for k in ("export", "verify")}
    with throughput.scratch_database(a.database_url, "orch_bench_bundles", keep=a.keep) as src_url:
        say(f"seeding {a.jobs:,} jobs of {TENANT} ...")
        t = time.monotonic()
        engine = db.create_engine(src_url, pool_size=2, application_name="bench-bundles-seed")
        try:
            steps, c = seed(engine, a.jobs)
        finally:
            engine.dispose()
        seed_s = time.monotonic() - t
        range_to = dt.datetime.now(dt.UTC)
        out(
            f"seeded {c['jobs']:,} jobs, {c['history']:,} history rows, {c['events']:,} events, "
            f"{c['audit_rows']} audit rows, {c['throttles']} rate changes of {TENANT} in {seed_s:.1f} s "
            f"({', '.join(f'{k} {v:.1f} s' for k, v in steps.items())}; database {c['db_bytes'] / 2**20:,.0f} MB)"
        )
        say("COPY floor (before the export) ...")
        copies = [copy_floor(src_url, range_to)]
        first, second = work / "bundle.tar.gz", work / "bundle-again.tar.gz"
        say(f"export to {first} ...")
        to = range_to.isoformat()
        exp = run_child(kind="export", url=src_url, bundle=str(first), key=str(key_path), to=to, profile=prof["export"])
        say("COPY floor (after the export), then COPY of the export's own SQL ...")
        copies.append(copy_floor(src_url, range_to))
        own_sql = copy_floor(src_url, range_to, export_sql=True)
        skipped: dict[str, Any] = {"error": "not run: the export failed"}
        ver, imp, again, after = skipped, skipped, skipped, {}
        if "error" not in exp:
            say("verify ...")
            ver = run_child(kind="verify", bundle=str(first), pub=str(pub_path), profile=prof["verify"])
            with throughput.scratch_database(a.database_url, "orch_bench_bundles", keep=a.keep) as dst_url:
                say("import into a second scratch database ...")
                imp = run_child(kind="import", url=dst_url, bundle=str(first), pub=str(pub_path))
                again = {"error": "not run: the import failed"}
                if "error" not in imp:
                    after = after_import(dst_url)
                    say("export again from the imported ledger ...")
                    again = run_child(kind="export", url=dst_url, bundle=str(second), key=str(key_path), to=to)
    copy_s, copy_bytes = min(copies)
    runs = {"export": exp, "verify": ver, "import": imp, "reexport": again}

    def fig(x: dict[str, Any], key: str, nd: int = 2) -> Any:
        return None if "error" in x else round(x[key], nd)

    res = {
        **{k: c[k] for k in ("jobs", "history", "events", "events_mb", "audit_rows")},
        "seed_s": round(seed_s, 1),
        "seed_steps_s": {k: round(v, 1) for k, v in steps.items()},
        "export_1m_s": fig(exp, "seconds"),
        "verify_1m_s": fig(ver, "seconds"),
        "verify_ok": ver.get("ok", False),
        "import_s": fig(imp, "seconds"),
        "reexport_s": fig(again, "seconds"),
        "reexport_identical": None if "error" in again else exp["sha256"] == again["sha256"],
        **{f"{k}_peak_rss_mb": fig(x, "peak_rss_mb", 1) for k, x in (("export", exp), ("verify", ver))},
        **{f"{k}_peak_rss_mb": fig(x, "peak_rss_mb", 1) for k, x in (("import", imp), ("reexport", again))},
        "child_start_rss_mb": round(max(x.get("rss_before_mb", 0) for x in (exp, ver, imp, again)), 1),
        "bundle_bytes": exp.get("size"),
        "lines": exp.get("lines"),
        "export_stages_s": exp.get("stages_s"),
        "copy_s": round(copy_s, 2),
        "copy_runs_s": [round(s, 2) for s, _ in copies],
        "copy_bytes": copy_bytes,
        "export_over_copy": None if "error" in exp else round(exp["seconds"] / copy_s, 2),
        "copy_export_sql_s": round(own_sql[0], 2),
        "copy_export_sql_bytes": own_sql[1],
        "verify_processes": ver.get("processes"),
        "verify_self_peak_rss_mb": fig(ver, "self_peak_rss_mb", 1),
        **after,
        "errors": {k: x["error"] for k, x in runs.items() if not x.get("error", "not run").startswith("not run")},
        "range_to": to,
    }
    rss = [v for v in (res["export_peak_rss_mb"], res["verify_peak_rss_mb"]) if v is not None]
    res["peak_rss_mb"] = max(rss) if len(rss) == 2 else None
    res["targets"] = {
        k: {"target": v, "value": res[k], "met": res[k] is not None and ((res[k] <= v) if lower else (res[k] == v))}
        for k, (v, lower) in TARGETS.items()
    }
    report(res, runs, prof)
    return res


def after_import(url: str) -> dict[str, Any]:
    """VACUUM ANALYZE of the imported ledger (autovacuum would, in service) and a look for
    secrets that left unmasked."""
    import sqlalchemy as sa

    t = time.monotonic()
    engine = sa.create_engine(sa.make_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM (ANALYZE)"))
            leaked = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE payload->>'api_token' = 'x'")).scalar_one()
    finally:
        engine.dispose()
    return {"import_vacuum_s": round(time.monotonic() - t, 1), "unmasked_after_import": int(leaked)}


def report(res: dict[str, Any], runs: dict[str, dict[str, Any]], prof: dict[str, str | None]) -> None:
    import pstats

    mb, exp, ver, imp, again = 2**20, runs["export"], runs["verify"], runs["import"], runs["reexport"]

    def head(name: str, x: dict[str, Any]) -> str:
        if "error" in x:
            return f"{name:<10} FAILED: {x['error']}"
        procs = "" if x["processes"] == 1 else f" ({x['processes']} processes; this one {x['self_peak_rss_mb']:.0f} MB)"
        return f"{name:<10} {x['seconds']:8.1f} s  peak RSS {x['peak_rss_mb']:6.1f} MB{procs}"

    out(head("export", exp) + ("" if "error" in exp else f"  bundle {exp['size'] / mb:,.1f} MB"))
    if "error" not in exp:
        out("           lines: " + ", ".join(f"{k} {v:,}" for k, v in exp["lines"].items() if v))
        out("           seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in exp["stages_s"].items() if v >= 0.05))
        out(
            f"COPY floor {res['copy_s']:8.1f} s  (the jobs with results and the history, plain columns, text COPY, "
            f"{res['copy_bytes'] / mb:,.0f} MB; runs {', '.join(f'{s:.1f}' for s in res['copy_runs_s'])} s)  "
            f"export / COPY {res['export_over_copy']:.2f}x"
        )
        out(
            f"           the export's own bundle_jobs + bundle_history as COPY: {res['copy_export_sql_s']:.1f} s, "
            f"{res['copy_export_sql_bytes'] / mb:,.0f} MB"
        )
    out(head("verify", ver) + ("" if "error" in ver else f"  ok: {ver['ok']}"))
    for step in ver.get("steps", []):
        out(f"           {step}")
    if ver.get("failure"):
        out(f"           FAILED: {ver['failure']}")
    out(head("import", imp) + ("" if "error" in imp else f"  rows: {imp['rows']}"))
    if "import_vacuum_s" in res:
        out(f"           then VACUUM ANALYZE {res['import_vacuum_s']:.1f} s; payloads with the api_token unmasked "
            f"after import: {res['unmasked_after_import']}")  # fmt: skip
    same = res["reexport_identical"]
    out(head("re-export", again) + ("" if same is None else f"  sha256 {'identical' if same else 'DIFFERENT'}"))
    out(f"(a child process holds {res['child_start_rss_mb']:.0f} MB before the call: interpreter and imports)")
    out()
    out(f"{'figure':<20} {'value':>12} {'target':>10}  met ({res['jobs']:,} jobs)")
    for k, t in res["targets"].items():
        out(f"{k:<20} {t['value']!s:>12} {t['target']!s:>10}  {'yes' if t['met'] else 'NO'}")
    for kind, path in prof.items():
        if path is not None and Path(path).is_file():
            out(f"\nprofile of the {kind}, top functions by own time:")
            pstats.Stats(path, stream=sys.stdout).sort_stats("tottime").print_stats(25)
            sys.stdout.flush()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases and the bundles")
    ap.add_argument("--profile", action="store_true", help="run the export and the verify under cProfile")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("ORCH_DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="any database on the server (the scratch databases are created beside it)",
    )
    a = ap.parse_args()
    if a.jobs < 100:
        ap.error("--jobs must be at least 100")
    throughput.exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="orch-bench-bundles-"))
    try:
        res = measure(a, work)
    finally:
        if a.keep:
            say(f"kept the bundles in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
