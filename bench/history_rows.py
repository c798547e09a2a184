"""What a job_history row costs the server, by part: the transition guard (the CHECK of
migration 0016 against the foreign key it replaced) and the events trigger (ADR 0019), with
the bare insert as the floor, measured in one run (docs/adr/0021).

    python bench/history_rows.py [--rounds 3] [--seconds 12] [--clients 4]

In a fresh scratch database migrated to head, pgbench (`-M prepared`) runs a script of one
transaction with three 8-row inserts into job_history (claim, ack, succeed: the rows a
worker's statements write for 8 jobs) against 50,000 queued jobs, with
synchronous_commit=off as the workers run. The variants, alternated within every round so
drift on a noisy machine hits all alike:

- `check`: the ledger as migrated, the events trigger disabled (the guard as it is now);
- `foreign_key`: the CHECK swapped for the foreign key to job_transitions it replaced;
- `none`: no guard (the floor; not an option);
- `events`: the ledger as migrated, events trigger enabled (what a history row costs in all);
- `events_fk`: `events` with the outbox's foreign key to tenants put back (migration 0017
  dropped it);
- `events_lookup`: `events` with rows that do not carry their job's tenant, type and run,
  as writers before migration 0019 wrote them: the trigger looks each job up (ADR 0023).

The last line is JSON: transactions per second per variant (medians over rounds), and the
ratios check / foreign_key, none / check, events / check, events / events_fk and
events / events_lookup (medians of per-round ratios). Needs pgbench
on PATH; uses ORCH_DATABASE_URL's server (or the embedded one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The rows as the writers write them since migration 0019: each carries its job's tenant,
#: type and run (docs/adr/0023).
SCRIPT = """\\set j :lo + random(1, 49990)
BEGIN;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt, tenant_id, job_type, run_id)
  SELECT :j + g, 'queued', 'claim', 'leased', now(), 'bench', 1, :tenant, 'bench.hist', NULL
  FROM generate_series(1, 8) AS g;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt, tenant_id, job_type, run_id)
  SELECT :j + g, 'leased', 'ack', 'running', now(), 'bench', 1, :tenant, 'bench.hist', NULL
  FROM generate_series(1, 8) AS g;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt, tenant_id, job_type, run_id)
  SELECT :j + g, 'running', 'succeed', 'succeeded', now(), 'bench', 1, :tenant, 'bench.hist', NULL
  FROM generate_series(1, 8) AS g;
COMMIT;
"""
#: The same rows without the job's tenant, type and run, as writers before migration 0019
#: wrote them: the events trigger looks each job up (the `events_lookup` variant).
SCRIPT_BARE = """\\set j :lo + random(1, 49990)
BEGIN;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt)
  SELECT :j + g, 'queued', 'claim', 'leased', now(), 'bench', 1 FROM generate_series(1, 8) AS g;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt)
  SELECT :j + g, 'leased', 'ack', 'running', now(), 'bench', 1 FROM generate_series(1, 8) AS g;
INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, attempt)
  SELECT :j + g, 'running', 'succeed', 'succeeded', now(), 'bench', 1 FROM generate_series(1, 8) AS g;
COMMIT;
"""

VARIANTS = ("check", "foreign_key", "none", "events", "events_fk", "events_lookup")
EVENTS_FK = (
    "ALTER TABLE events ADD CONSTRAINT events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) NOT VALID"
)
FK = (
    "ALTER TABLE job_history ADD CONSTRAINT job_history_transition_fk FOREIGN KEY (from_state, event, to_state)"
    " REFERENCES job_transitions (from_state, event, to_state) NOT VALID"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    if a.rounds < 1 or a.seconds < 1 or a.clients < 1:
        print("--rounds, --seconds and --clients must be at least 1", file=sys.stderr)
        return 2
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        print("pgbench is not on PATH (Debian: apt-get install postgresql-client)", file=sys.stderr)
        return 2

    import sqlalchemy as sa

    from bench.throughput import resolve_urls, scratch_database

    db_url, _redis, embedded = resolve_urls()
    try:
        with scratch_database(db_url, "orch_bench_hist") as url:
            engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                check_def = conn.execute(
                    sa.text(
                        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                        " WHERE conrelid = 'job_history'::regclass AND conname = 'job_history_transition_valid'"
                    )
                ).scalar_one()
                conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('bench') ON CONFLICT DO NOTHING"))
                tenant = conn.execute(sa.text("SELECT id FROM tenants WHERE name = 'bench'")).scalar_one()
                lo = conn.execute(
                    sa.text(
                        "WITH ins AS (INSERT INTO jobs (tenant_id, job_type, queue, priority, payload, payload_digest,"
                        " state, max_attempts) SELECT (SELECT id FROM tenants WHERE name = 'bench'), 'bench.hist',"
                        " 'bench-hist', 0, '{}', repeat('0', 64), 'queued', 3 FROM generate_series(1, 50000)"
                        " RETURNING id) SELECT min(id) - 1 FROM ins"
                    )
                ).scalar_one()
                conn.execute(sa.text("VACUUM ANALYZE jobs"))

            def arrange(variant: str) -> None:
                with engine.connect() as conn:
                    conn.execute(sa.text("ALTER TABLE job_history DROP CONSTRAINT IF EXISTS job_history_transition_fk"))
                    conn.execute(
                        sa.text("ALTER TABLE job_history DROP CONSTRAINT IF EXISTS job_history_transition_valid")
                    )
                    if variant == "foreign_key":
                        conn.execute(sa.text(FK))
                    elif variant != "none":
                        conn.execute(
                            sa.text(
                                f"ALTER TABLE job_history ADD CONSTRAINT job_history_transition_valid {check_def}"
                                + ("" if "NOT VALID" in check_def else " NOT VALID")
                            )
                        )
                    conn.execute(sa.text("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_tenant_id_fkey"))
                    if variant == "events_fk":
                        conn.execute(sa.text(EVENTS_FK))
                    trigger = "ENABLE" if variant.startswith("events") else "DISABLE"
                    conn.execute(sa.text(f"ALTER TABLE job_history {trigger} TRIGGER job_history_events"))
                    conn.execute(sa.text("TRUNCATE job_history, events"))
                    conn.execute(sa.text("CHECKPOINT"))

            u = sa.make_url(url)
            env = dict(os.environ, PGOPTIONS="-c synchronous_commit=off")
            if u.password:
                env["PGPASSWORD"] = u.password
            tps: dict[str, list[float]] = {v: [] for v in VARIANTS}
            with tempfile.TemporaryDirectory(prefix="orch-bench-hist-") as tmp:
                carried, bare = Path(tmp) / "history.sql", Path(tmp) / "history_bare.sql"
                carried.write_text(SCRIPT)
                bare.write_text(SCRIPT_BARE)
                for r in range(1, a.rounds + 1):
                    order = VARIANTS if r % 2 else VARIANTS[::-1]
                    for variant in order:
                        arrange(variant)
                        cmd = [pgbench, "-n", "-M", "prepared", "-c", str(a.clients), "-j", str(min(a.clients, 2))]
                        script = bare if variant == "events_lookup" else carried
                        cmd += ["-T", str(a.seconds), "-D", f"lo={lo}", "-D", f"tenant={tenant}", "-f", str(script)]
                        cmd += ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]
                        cmd.append(u.database or "")
                        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                        m = re.search(r"tps = ([\d.]+)", out.stdout)
                        if out.returncode != 0 or m is None:
                            print(f"pgbench failed ({variant}): {(out.stderr or out.stdout).strip()[:300]}")
                            return 1
                        tps[variant].append(float(m.group(1)))
                        print(f"[{r}/{a.rounds}] {variant:<12} {float(m.group(1)):9,.0f} tps", flush=True)
            engine.dispose()
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]

    def ratio(x: str, y: str) -> float:
        return round(statistics.median(p / q for p, q in zip(tps[x], tps[y], strict=True)), 3)

    result = {
        "rows_per_transaction": 24,
        "tps": {v: round(statistics.median(t), 1) for v, t in tps.items()},
        "check_over_foreign_key": ratio("check", "foreign_key"),
        "none_over_check": ratio("none", "check"),
        "events_over_check": ratio("events", "check"),
        "events_over_events_fk": ratio("events", "events_fk"),
        "events_over_events_lookup": ratio("events", "events_lookup"),
    }
    print(
        f"check / foreign key {result['check_over_foreign_key']}, floor / check {result['none_over_check']},"
        f" with events / without {result['events_over_check']},"
        f" events without the outbox's tenant key / with it {result['events_over_events_fk']},"
        f" rows that carry their job / rows the trigger looks up {result['events_over_events_lookup']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
