"""Audit bundles on a real ledger (issue 13): export in one snapshot, verify every step,
determinism (the same range twice gives the same sha256), and the round trip across two
databases (import into an empty ledger, export again: byte-identical)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785
import sqlalchemy as sa

from core import control, queries
from core.control import JobSpec, RunSpec, bundles
from core.domain import bundle, errors
from core.domain.auth import Principal, Scope
from core.ledger import db
from core.ledger import jobs as L
from tests.conftest import ROOT

T = "acme"
WORKER = "bundle-test-worker"
TYPES = ["noop", "test.emit", "test.sum_parents"]


def _work(engine: sa.Engine, fail: set[int], *, artifact_for: int | None = None) -> None:
    for _ in range(20):
        with engine.begin() as conn:
            rows = L.claim_and_start_jobs(conn, queue="default", limit=100, owner=WORKER, job_types=TYPES)
        if not rows:
            return
        with engine.begin() as conn:
            for r in rows:
                if r["id"] == artifact_for:
                    data = b"evidence \x00\xff bytes"
                    L.insert_artifact(
                        conn,
                        job_id=r["id"],
                        lease_id=r["lease_id"],
                        name="report.bin",
                        media_type="application/octet-stream",
                        sha256=hashlib.sha256(data).hexdigest(),
                        data=data,
                    )
            ok = [r for r in rows if r["id"] not in fail]
            bad = [r for r in rows if r["id"] in fail]
            if ok:
                L.succeed_jobs(
                    conn, [r["id"] for r in ok], [r["lease_id"] for r in ok], actor=WORKER, results=[None] * len(ok)
                )
            if bad:
                n = len(bad)
                L.fail_final_jobs(
                    conn,
                    [r["id"] for r in bad],
                    [r["lease_id"] for r in bad],
                    ["unknown"] * n,
                    ["boom password=hunter2"] * n,
                    ["fatal"] * n,
                    actor=WORKER,
                )


def build_tenant(engine: sa.Engine, principal: Principal) -> dt.datetime:
    """A tenant with plain jobs (one failing, one with a secret and non-ASCII payload, one with
    an artifact), a DAG run that fails upstream, a rate change, a pause and resume, a circuit
    that opens and is reset, and another tenant whose records must stay out. Returns a time
    after all of it."""
    control.add_source(engine, principal, tenant=T, name="feed", host="feed.example.com", rate=5, reason="setup")
    control.throttle_source(engine, principal, tenant=T, source="feed", rate=2, reason="429s", ticket="INC-1")
    control.pause(engine, principal, tenant=T, reason="maintenance", ticket="CHG-2")
    control.resume(engine, principal, tenant=T, reason="done", ticket="CHG-2")
    specs = [
        JobSpec(T, "noop", {"n": 1}),
        JobSpec(T, "noop", {"api_token": "s3cret", "q": 'é ✓ 😀 \u2028 "quoted"'}, idempotency_key="k-1"),
        JobSpec(T, "noop", {"n": 3}, source="feed"),
        JobSpec(T, "noop", {"n": 4}),
        JobSpec("other", "noop", {"n": 99}),
    ]
    ids = control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell()).job_ids
    run = control.submit_run(
        engine,
        principal,
        RunSpec(T, "pipe", [JobSpec(T, "noop", {}, key="a"), JobSpec(T, "noop", {}, key="b", after=["a"])]),
        control.NoDoorbell(),
    )
    with engine.connect() as conn:
        run_a = conn.execute(
            sa.text("SELECT job_id FROM run_jobs WHERE run_id = :r AND key = 'a'"), {"r": run.run_id}
        ).scalar_one()
    _work(engine, fail={ids[3], run_a}, artifact_for=ids[0])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sources SET circuit_state = 'open' WHERE name = 'feed'"))
    control.reset_circuit(engine, principal, tenant=T, source="feed", reason="upstream fixed")
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def key() -> Any:
    return bundle.new_key()


@pytest.fixture
def second_ledger(services: Any) -> Iterator[sa.Engine]:
    """A second, freshly migrated database: where bundles are imported."""
    name = f"{services.dbname}_import"
    libpq = sa.make_url(services.admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(services.database_url).set(database=name).render_as_string(hide_password=False)
    eng = db.create_engine(url, pool_size=2, application_name="orch-tests-import")
    db.upgrade(eng)
    control.forget_cached_catalog()
    yield eng
    eng.dispose()
    control.forget_cached_catalog()
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_export_verifies_is_deterministic_and_round_trips(
    ledger: sa.Engine, second_ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path
) -> None:
    end = build_tenant(ledger, principal)
    first = control.export_bundle(
        ledger, principal, tenant=T, out=tmp_path / "a.tar.gz", key=key, range_to=end, with_artifacts=True
    )
    again = control.export_bundle(
        ledger, principal, tenant=T, out=tmp_path / "b.tar.gz", key=key, range_to=end, with_artifacts=True
    )
    assert first.sha256 == again.sha256 == hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()

    report = control.verify_bundle(tmp_path / "a.tar.gz", [key.public_key()])
    assert report.ok, report.failure
    assert [s.name for s in report.steps] == [
        "archive",
        "envelope",
        "signature",
        "statement",
        "digests",
        "lines",
        "audit",
        "replay",
    ]
    assert report.fingerprint == bundle.fingerprint(key.public_key())

    files = members(tmp_path / "a.tar.gz")
    jobs = records(files["jobs.jsonl"])
    assert len(jobs) == 6  # four plain jobs and the run's two; the other tenant's job is not here
    assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs)
    secret = next(j for j in jobs if j["idempotency_key"] == "k-1")
    assert secret["payload"]["api_token"] == "***" and secret["payload"]["q"].startswith("é ✓ 😀")
    assert b"s3cret" not in b"".join(files.values()) and b"hunter2" not in b"".join(files.values())
    states = sorted(j["state"] for j in jobs)
    assert states == ["dead_lettered", "dead_lettered", "succeeded", "succeeded", "succeeded", "upstream_failed"]
    runs = records(files["runs.jsonl"])
    assert [(r["state"], len(r["jobs"]), r["edges"]) for r in runs] == [
        ("failed", 2, [[min(j["job_id"] for j in runs[0]["jobs"]), max(j["job_id"] for j in runs[0]["jobs"])]])
    ]
    kinds = [
        (t["kind"], t.get("action") or t.get("to_state") or t.get("new_rate"))
        for t in records(files["throttles.jsonl"])
    ]
    assert ("rate", 2) in kinds or ("rate", 2.0) in kinds
    assert ("action", "pause") in kinds and ("action", "resume") in kinds and ("action", "circuit.reset") in kinds
    circuit = [t for t in records(files["throttles.jsonl"]) if t["kind"] == "circuit"]
    assert [(c["from_state"], c["to_state"], c["actor"]) for c in circuit] == [
        ("closed", "open", "orch"),
        ("open", "closed", principal.subject),
    ]
    audit_rows = records(files["audit.jsonl"])
    assert audit_rows and all(r["chain"] == T for r in audit_rows)
    manifest = json.loads(files["manifest.json"])
    assert manifest["audit"]["first_seq"] == 1 and manifest["audit"]["head_hash"] == audit_rows[-1]["hash"]
    [art] = records(files["artifacts.jsonl"])
    assert files[f"artifacts/{art['sha256']}"] == b"evidence \x00\xff bytes"
    assert records(files["events.jsonl"]), "the outbox's events of the range are in the bundle"
    assert b"replay_jobs" in files["replay/replay.py"]

    # the export is audited, after the range: a later export of the range is the same
    with ledger.connect() as conn:
        exports = queries.audit_log(conn, principal, tenant=T, action="bundle.export", limit=10)
    assert len(exports) == 2 and exports[0]["details"]["sha256"] == first.sha256

    imported = control.import_bundle(second_ledger, principal, path=tmp_path / "a.tar.gz", keys=[key.public_key()])
    assert imported.tenant == T and imported.rows["jobs"] == 6 and imported.rows["job_history"] > 6
    round_trip = control.export_bundle(
        second_ledger, principal, tenant=T, out=tmp_path / "c.tar.gz", key=key, range_to=end, with_artifacts=True
    )
    assert round_trip.sha256 == first.sha256
    # the imported ledger goes on: new rows get fresh ids, the chain appends after its head
    with second_ledger.connect() as conn:
        imports = queries.audit_log(conn, principal, tenant=T, action="bundle.import", limit=10)
        verdict = queries.verify_audit(conn, principal)
    assert len(imports) == 1 and verdict["ok"], verdict
    with second_ledger.connect() as conn:
        paused = conn.execute(sa.text("SELECT reason FROM pauses WHERE source_id IS NULL AND job_type IS NULL")).all()
    assert [p[0] for p in paused] == [bundles.IMPORT_PAUSE], "imported jobs are evidence: the tenant is paused"
    more = control.submit_many(second_ledger, principal, [JobSpec(T, "noop", {})], doorbell=control.NoDoorbell())
    assert more.job_ids[0] > max(j["id"] for j in jobs)

    # a second import into a ledger that is no longer empty is refused, writing nothing
    with pytest.raises(errors.InvalidInput, match="not empty"):
        control.import_bundle(second_ledger, principal, path=tmp_path / "a.tar.gz", keys=[key.public_key()])


def test_a_range_that_starts_mid_chain_carries_its_anchor(
    ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path
) -> None:
    control.add_source(ledger, principal, tenant=T, name="feed", host="feed.example.com", reason="first")
    middle = dt.datetime.now(dt.UTC)
    control.pause(ledger, principal, tenant=T, reason="second")
    end = dt.datetime.now(dt.UTC)
    early = control.export_bundle(ledger, principal, tenant=T, out=tmp_path / "1.tar.gz", key=key, range_to=middle)
    late = control.export_bundle(
        ledger, principal, tenant=T, out=tmp_path / "2.tar.gz", key=key, range_from=middle, range_to=end
    )
    m1 = json.loads(members(Path(early.path))["manifest.json"])
    m2 = json.loads(members(Path(late.path))["manifest.json"])
    assert m2["audit"]["first_seq"] == 2 and m2["audit"]["anchor_hash"] == m1["audit"]["head_hash"]
    assert control.verify_bundle(Path(late.path), [key.public_key()]).ok


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"range_to": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}, "lies in the future"),
        (
            {"range_from": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "range_to": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            "empty",
        ),
    ],
)
def test_bad_ranges_write_nothing(
    ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        control.export_bundle(ledger, principal, tenant=T, out=tmp_path / "x.tar.gz", key=key, **kw)
    assert list(tmp_path.iterdir()) == []


def test_export_needs_the_scope_and_the_tenant(
    ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path
) -> None:
    build_tenant(ledger, principal)
    reader = Principal("reader", frozenset({Scope.READ, Scope.OPERATE}), None)
    with pytest.raises(errors.Forbidden, match="orch:export"):
        control.export_bundle(ledger, reader, tenant=T, out=tmp_path / "x.tar.gz", key=key)
    other = Principal("other", frozenset({Scope.EXPORT}), frozenset({"other"}))
    with pytest.raises(errors.Forbidden, match="acme"):
        control.export_bundle(ledger, other, tenant=T, out=tmp_path / "x.tar.gz", key=key)
    with pytest.raises(errors.NotFound):
        control.export_bundle(ledger, principal, tenant="nobody", out=tmp_path / "x.tar.gz", key=key)
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_that_does_not_verify_imports_nothing(
    ledger: sa.Engine, second_ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path
) -> None:
    end = build_tenant(ledger, principal)
    control.export_bundle(ledger, principal, tenant=T, out=tmp_path / "a.tar.gz", key=key, range_to=end)
    with pytest.raises(errors.InvalidInput, match=r"does not verify.*signature"):
        control.import_bundle(
            second_ledger, principal, path=tmp_path / "a.tar.gz", keys=[bundle.new_key().public_key()]
        )
    with second_ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar_one() == 0


def test_every_exported_line_is_what_the_rfc8785_reference_writes(
    ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path
) -> None:
    """The fast path of canonical_line (the stdlib encoder on plain records) against the
    reference, over real exported lines of every record type."""
    build_tenant(ledger, principal)
    # History lines are built by the server: strings that need escaping, in every text column.
    nasty = 'quote" back\\slash tab\t nl\n nul-free \x01\x1f del\x7f é ✓ 😀 \u2028 </script>'
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE job_history SET actor = :s, fingerprint = :s WHERE id % 3 = 0"), {"s": nasty})
        conn.execute(sa.text("UPDATE job_history SET error_class = :s WHERE id % 3 = 1"), {"s": nasty})
    end = dt.datetime.now(dt.UTC)
    control.export_bundle(ledger, principal, tenant=T, out=tmp_path / "a.tar.gz", key=key, range_to=end)
    history = records(members(tmp_path / "a.tar.gz")["history.jsonl"])
    assert sum(h["actor"] == nasty for h in history) >= 5 and sum(h["error_class"] == nasty for h in history) >= 5
    checked = 0
    for name, data in members(tmp_path / "a.tar.gz").items():
        if name.endswith(".jsonl"):
            for line in data.splitlines(keepends=True):
                assert rfc8785.dumps(json.loads(line)) + b"\n" == line, (name, line)
                checked += 1
    assert checked > 30


def _cli(services: Any, *args: str, db_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={
            "PATH": "/usr/bin:/bin",
            "ORCH_DATABASE_URL": db_url or services.database_url,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_exports_verifies_and_imports(
    services: Any, ledger: sa.Engine, second_ledger: sa.Engine, principal: Principal, tmp_path: Path
) -> None:
    end = build_tenant(ledger, principal)
    made = _cli(services, "keys", "create", "--out", str(tmp_path / "keys"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "keys" / "signing.key").stat().st_mode & 0o777 == 0o600
    fp = made.stdout.split("fingerprint sha256:")[1].strip()
    out = tmp_path / "acme.tar.gz"
    to = bundle.utc(end)
    ex = _cli(
        services,
        "bundle",
        "export",
        "--tenant",
        T,
        "--to",
        to,
        "--out",
        str(out),
        ORCH_SIGNING_KEY=str(tmp_path / "keys" / "signing.key"),
    )
    assert ex.returncode == 0, ex.stderr
    assert f"signed with key sha256:{fp}" in ex.stdout and "exporting jobs.jsonl" in ex.stderr
    assert "PRIVATE KEY" not in ex.stdout + ex.stderr

    ve = _cli(services, "bundle", "verify", str(out), "--pubkey", str(tmp_path / "keys" / "signing.pub"), "--quiet")
    assert ve.returncode == 0, ve.stderr
    assert ve.stdout.count("ok  ") == 8 and f"bundle verified: every step passed (key sha256:{fp})" in ve.stdout

    # a keyring: an old key and the current one
    old = tmp_path / "old"
    bundle.write_key_pair(old)
    ring = _cli(
        services,
        "bundle",
        "verify",
        str(out),
        "--pubkey",
        str(old / "signing.pub"),
        "--pubkey",
        str(tmp_path / "keys" / "signing.pub"),
        "--json",
        "--quiet",
    )
    assert ring.returncode == 0 and json.loads(ring.stdout)["fingerprint"] == fp
    wrong = _cli(services, "bundle", "verify", str(out), "--pubkey", str(old / "signing.pub"), "--quiet")
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.strip() == (
        "orch: error: bundle rejected: step 3 (signature) failed: no signature verifies with the public keys given"
    )

    future = _cli(
        services,
        "bundle",
        "export",
        "--tenant",
        T,
        "--to",
        "2999-01-01T00:00:00Z",
        "--out",
        str(tmp_path / "f.tar.gz"),
        "--key",
        str(tmp_path / "keys" / "signing.key"),
    )
    assert future.returncode == 2 and "lies in the future" in future.stderr
    assert len(future.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.tar.gz").exists()
    nokey = _cli(services, "bundle", "export", "--tenant", T, "--out", str(tmp_path / "g.tar.gz"))
    assert nokey.returncode == 2 and "ORCH_SIGNING_KEY" in nokey.stderr

    second_url = second_ledger.url.render_as_string(hide_password=False)
    im = _cli(
        services, "bundle", "import", str(out), "--pubkey", str(tmp_path / "keys" / "signing.pub"), db_url=second_url
    )
    assert im.returncode == 0, im.stderr
    assert im.stdout.startswith(f"imported tenant {T}") and f"verified with key sha256:{fp}" in im.stdout
    again = _cli(
        services, "bundle", "import", str(out), "--pubkey", str(tmp_path / "keys" / "signing.pub"), db_url=second_url
    )
    assert again.returncode == 2 and "not empty" in again.stderr


def test_an_import_in_many_small_statements_is_the_same(
    ledger: sa.Engine, second_ledger: sa.Engine, principal: Principal, key: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Import batches are bounded by bytes as well as rows (one jsonb value holds at most
    256 MB): with a bound of a few hundred bytes, every row is a statement, and the round
    trip still holds."""
    from core.ledger import bundles as ledger_bundles

    end = build_tenant(ledger, principal)
    first = control.export_bundle(ledger, principal, tenant=T, out=tmp_path / "a.tar.gz", key=key, range_to=end)
    monkeypatch.setattr(ledger_bundles, "_BATCH_BYTES", 300)
    control.import_bundle(second_ledger, principal, path=tmp_path / "a.tar.gz", keys=[key.public_key()])
    again = control.export_bundle(second_ledger, principal, tenant=T, out=tmp_path / "b.tar.gz", key=key, range_to=end)
    assert again.sha256 == first.sha256
