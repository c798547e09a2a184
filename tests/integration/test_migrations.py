"""SQL that upgrades: a ledger built by earlier landed code (with jobs in it) and upgraded equals
a fresh ledger at head (schema, function bodies, reference rows); the functions in the
database are the newest .sql files; the rendered hot statements are the committed ones."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from core import control
from core.domain.auth import local_principal
from core.domain.jobtypes import JobTypeRow
from core.ledger import audit, db, sqlfiles, statements
from core.ledger import jobs as ledger_jobs
from tests.conftest import ROOT, Services

#: Earlier landed code whose migrations built ledgers that must upgrade to head: revision 0002
#: before it gained the submit counters, the first version of 0003, and the last commit
#: before the SQL moved into versioned files (0003 as edited since).
EARLIER_COMMITS = ("86e3c85", "2d77447", "2a7afc0")

SNAPSHOT_QUERIES = {
    "columns": """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                         pg_get_expr(d.adbin, d.adrelid), a.attidentity
                  FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
                  JOIN pg_namespace AS n ON n.oid = c.relnamespace
                  LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm') AND a.attnum > 0
                    AND NOT a.attisdropped
                  ORDER BY c.relname, a.attname""",
    "constraints": """SELECT c.relname, k.conname, pg_get_constraintdef(k.oid), k.convalidated
                      FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid
                      JOIN pg_namespace AS n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "indexes": """SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1""",
    "functions": """SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
                    FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "triggers": """SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger AS t
                   JOIN pg_class AS c ON c.oid = t.tgrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1""",
    "storage": """SELECT c.relname, c.relkind, c.reloptions FROM pg_class AS c
                  JOIN pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v', 'm') ORDER BY 1""",
    "job_transitions": "SELECT from_state, event, to_state FROM job_transitions ORDER BY 1, 2, 3",
    "revision": "SELECT version_num FROM alembic_version",
}


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a ledger's schema is made of, in a comparable form."""
    with engine.connect() as conn:
        return {
            name: [tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in conn.execute(sa.text(q))]
            for name, q in SNAPSHOT_QUERIES.items()
        }


@pytest.fixture
def make_database(services: Services) -> Iterator[Any]:
    """Empty databases of the test's own on the test server, dropped afterwards."""
    made: list[tuple[str, sa.Engine]] = []
    admin = sa.make_url(services.admin_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def make(label: str) -> sa.Engine:
        name = f"orch_mig_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = sa.make_url(services.admin_url).set(database=name).render_as_string(hide_password=False)
        engine = db.create_engine(url, application_name="orch-tests-migrations")
        made.append((name, engine))
        return engine

    yield make
    for name, engine in made:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True).stdout


def earlier_migrations(commit: str, into: Path) -> Path:
    """The migrations directory of `commit`, extracted under `into`."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: earlier commits are not available")
    try:
        archive = _git("archive", "--format=tar", commit, "core/ledger/migrations")
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"commit {commit} is not in this clone ({exc.stderr.decode().strip()}); fetch the full history")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "core" / "ledger" / "migrations"


def build_with(engine: sa.Engine, migrations: Path) -> None:
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _has_table(conn: sa.Connection, table: str) -> bool:
    return bool(conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one())


def fill_old_ledger(engine: sa.Engine) -> dict[str, Any]:
    """Jobs, history, logs, audit rows (and sources and a bucket where the schema has them),
    written with plain SQL against the old schema."""
    with engine.begin() as conn:
        tenant = conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('old-t') RETURNING id")).scalar_one()
        has_flow = _has_table(conn, "buckets")
        source = None
        if has_flow:
            bucket = conn.execute(
                sa.text(
                    "INSERT INTO buckets (tenant_id, host, capacity, base_rate, rate, tokens)"
                    " VALUES (:t, 'feeds.example', 5, 2, 2, 5) RETURNING id"
                ),
                {"t": tenant},
            ).scalar_one()
            source = conn.execute(
                sa.text(
                    "INSERT INTO sources (tenant_id, name, host, bucket_id) VALUES (:t, 'feed', 'feeds.example', :b)"
                    " RETURNING id"
                ),
                {"t": tenant, "b": bucket},
            ).scalar_one()
        ids = []
        for state in ("queued", "queued", "succeeded", "dead_lettered", "throttled" if has_flow else "retrying"):
            ids.append(
                conn.execute(
                    sa.text(
                        "INSERT INTO jobs (tenant_id, job_type, queue, payload, payload_digest, state, max_attempts,"
                        " wait_reason, not_before, source_id)"
                        " VALUES (:t, 'noop', 'default', '{}', repeat('a', 64), :s, 3, :w, :nb, :src) RETURNING id"
                    ),
                    {
                        "t": tenant,
                        "s": state,
                        "w": "rate_limited" if state == "throttled" else None,
                        "nb": dt.datetime.now(dt.UTC) if state in ("throttled", "retrying") else None,
                        "src": source if state == "throttled" else None,
                    },
                ).scalar_one()
            )
        conn.execute(
            sa.text(
                "INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason)"
                " SELECT id, NULL, 'submit', 'queued', 'old', NULL FROM jobs"
            )
        )
        if has_flow:
            conn.execute(
                sa.text(
                    "INSERT INTO job_history (job_id, from_state, event, to_state, actor, reason)"
                    " VALUES (:j, 'queued', 'deny', 'throttled', 'old', 'rate_limited until 2026-11-27 10:00:00 UTC')"
                ),
                {"j": ids[-1]},
            )
        conn.execute(
            sa.text("INSERT INTO job_logs (job_id, attempt, message) VALUES (:j, 1, 'old line')"), {"j": ids[2]}
        )
        prev = audit.GENESIS
        for n in range(3):
            at = dt.datetime(2026, 11, 27, 12, 0, n, tzinfo=dt.UTC)
            entry = audit.AuditEntry("local:old", ["orch:operate"], "submit", f"job {ids[n]}", "old-t", None, None, {})
            digest = audit.row_hash(prev, at, entry)
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (at, subject, scopes, action, target, tenant, reason, ticket, details,"
                    " prev_hash, hash) VALUES (:at, :s, :sc, :a, :tg, :tn, NULL, NULL, '{}', :p, :h)"
                ),
                {
                    "at": at,
                    "s": entry.subject,
                    "sc": list(entry.scopes),
                    "a": entry.action,
                    "tg": entry.target,
                    "tn": entry.tenant,
                    "p": prev,
                    "h": digest,
                },
            )
            prev = digest
    return {"ids": ids, "has_flow": has_flow, "last_hash": prev}


@pytest.mark.parametrize("commit", EARLIER_COMMITS)
def test_a_ledger_built_by_earlier_code_upgrades_to_a_fresh_ledger(
    make_database: Any, tmp_path: Path, commit: str
) -> None:
    fresh = make_database("fresh")
    db.upgrade(fresh)
    old = make_database("old")
    build_with(old, earlier_migrations(commit, tmp_path))
    filled = fill_old_ledger(old)
    db.upgrade(old)

    got, want = snapshot(old), snapshot(fresh)
    for part in SNAPSHOT_QUERIES:
        only_old = sorted(set(got[part]) - set(want[part]), key=repr)
        only_fresh = sorted(set(want[part]) - set(got[part]), key=repr)
        assert not only_old and not only_fresh, f"{part}: only upgraded {only_old}; only fresh {only_fresh}"
        assert got[part] == want[part], f"{part} differ in order"

    with old.connect() as conn:
        # The old rows keep verifying as the legacy chain; new ones start from its last hash.
        assert audit.verify(conn).ok
        legacy = conn.execute(sa.text("SELECT last_hash, row_count FROM audit_legacy")).one()
        assert tuple(legacy) == (filled["last_hash"], 3)
        if filled["has_flow"]:
            denied = conn.execute(sa.text("SELECT wait_reason FROM job_history WHERE event = 'deny'")).scalar_one()
            assert denied == "rate_limited"
    control.forget_cached_catalog()
    principal = local_principal("tests")
    control.register_job_types(old, [JobTypeRow("noop", "default", 3, 1.0, 300.0, 30.0, 10.0)])
    control.cancel(old, principal, filled["ids"][0], reason="the old ledger still works")
    control.submit(old, principal, control.JobSpec("new-t", "noop"), doorbell=control.NoDoorbell())
    with old.connect() as conn:
        verdict = audit.verify(conn)
        first_new = conn.execute(
            sa.text("SELECT prev_hash FROM audit_log WHERE chain = 'old-t' AND chain_seq = 1")
        ).scalar_one()
    assert verdict.ok and verdict.rows == 5 and verdict.chains == 3, verdict
    assert first_new == filled["last_hash"]
    with old.begin() as conn:
        claimed = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=10, owner="t", job_types=["noop"])
        assert {r["id"] for r in claimed} >= {filled["ids"][1]}
        done = ledger_jobs.succeed_jobs(conn, [r["id"] for r in claimed], [r["lease_id"] for r in claimed], actor="t")
    assert len(done) == len(claimed)
    control.forget_cached_catalog()


def test_database_functions_are_the_newest_sql_files(engine: sa.Engine) -> None:
    newest = sqlfiles.newest_functions()
    with engine.connect() as conn:
        in_db = dict(
            conn.execute(
                sa.text(
                    "SELECT p.proname, p.prosrc FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = 'public'"
                )
            ).all()
        )
    assert sorted(in_db) == sorted(newest), "every database function has a file under core/ledger/sql/functions"
    for name, text in newest.items():
        assert text.startswith(f"-- name: {name}\n"), f"{name}: the file's first line names the function"
        assert in_db[name] == sqlfiles.function_body(text), f"{name}: the database holds another body than its file"


def test_landed_function_versions_are_installed_by_a_migration() -> None:
    """Every versioned file is installed by some migration, and names its own version."""
    migrations = "\n".join(p.read_text() for p in (ROOT / "core/ledger/migrations/versions").glob("*.py"))
    for name, versions in sqlfiles.function_versions().items():
        for version in versions:
            assert f'("{name}", {version})' in migrations, f"{name}.v{version}.sql is installed by no migration"
            assert f"version {version}," in sqlfiles.function(name, version), f"{name}.v{version}.sql"


def test_rendered_hot_statements_are_the_committed_golden_files() -> None:
    golden = statements.golden()
    committed = {p.name: p.read_text() for p in (ROOT / "docs" / "sql").glob("*.sql")}
    assert sorted(committed) == sorted(golden), "docs/sql/ is out of date: run python -m core.ledger.statements"
    for name, text in golden.items():
        assert committed[name] == text, f"docs/sql/{name} is out of date: run python -m core.ledger.statements"
    for name in ("claim_and_start_jobs", "succeed_and_claim_jobs", "succeed_jobs"):
        # What is sent is the golden file without its indentation.
        assert statements.transition(name).text + ";" == statements.compact(committed[f"{name}.sql"])
    assert "orch_admit(" in committed["claim_and_start_jobs.sql"]


def test_every_named_statement_is_defined_once_and_used() -> None:
    names = set(sqlfiles.statements())
    code = "\n".join(p.read_text() for p in (ROOT / "core").rglob("*.py"))
    unused = sorted(n for n in names if f'"{n}"' not in code)
    assert not unused, f"statements no Python sends: {unused}"
