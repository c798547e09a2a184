"""Principals, the audit chain, redaction, error clusters, burn rates and the ledger metrics,
against the real ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain import errors, fingerprints, slo
from core.domain.auth import Principal, Scope
from core.ledger import jobs as L
from tests.conftest import ROOT, Services

NO_BELL = control.NoDoorbell()


def _fail_final(engine: sa.Engine, job_ids: list[int], message: str, error_class: str = "http_5xx") -> None:
    with engine.begin() as conn:
        rows = L.claim_and_start_jobs(conn, queue="default", limit=len(job_ids), owner="t", job_types=["fail", "noop"])
        got = [r for r in rows if r["id"] in job_ids]
        L.fail_final_jobs(
            conn,
            [r["id"] for r in got],
            [r["lease_id"] for r in got],
            [error_class] * len(got),
            [message.format(i=r["id"]) for r in got],
            ["fatal error"] * len(got),
            actor="t",
        )


def _succeed(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        rows = L.claim_and_start_jobs(conn, queue="default", limit=n, owner="t", job_types=["noop", "fail"])
        L.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="t")


def test_tokens_scopes_and_tenants(ledger: sa.Engine, principal: Principal) -> None:
    reader = control.authenticate(
        ledger,
        control.create_token(
            ledger,
            principal,
            subject="alice",
            scopes=frozenset({Scope.READ}),
            tenants=frozenset({"a"}),
            reason="onboarding",
        ),
    )
    assert reader.subject == "alice" and reader.tenants == frozenset({"a"})
    job_a = control.submit(ledger, principal, control.JobSpec("a", "noop"), doorbell=NO_BELL)
    job_b = control.submit(ledger, principal, control.JobSpec("b", "noop"), doorbell=NO_BELL)
    with ledger.connect() as conn:
        assert [j["id"] for j in queries.list_jobs(conn, reader)] == [job_a]
        with pytest.raises(errors.NotFound):
            queries.get_job(conn, reader, job_b)
        with pytest.raises(errors.Forbidden):
            queries.list_jobs(conn, reader, tenant="b")
    before = _audit_count(ledger)
    with pytest.raises(errors.Forbidden):
        control.cancel(ledger, reader, job_a, reason="no scope")
    with pytest.raises(errors.Forbidden):
        control.submit(ledger, reader, control.JobSpec("a", "noop"), doorbell=NO_BELL)
    assert _audit_count(ledger) == before  # refused actions change nothing
    with pytest.raises(errors.Forbidden):
        control.create_token(ledger, reader, subject="eve", scopes=frozenset({Scope.OPERATE}), tenants=None)
    with pytest.raises(errors.Forbidden):
        control.authenticate(ledger, "orch_not-a-real-token")


def _audit_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one())


def test_reason_is_required_and_bounded(ledger: sa.Engine, principal: Principal) -> None:
    job = control.submit(ledger, principal, control.JobSpec("t", "noop"), doorbell=NO_BELL)
    with pytest.raises(errors.ReasonRequired):
        control.cancel(ledger, principal, job)
    with pytest.raises(errors.ReasonRequired):
        control.cancel(ledger, principal, job, reason="   ")
    with pytest.raises(errors.InvalidInput):
        control.cancel(ledger, principal, job, reason="x", ticket="T" * 129)
    assert control.cancel(ledger, principal, job, reason="ok", ticket="OPS-7") == "canceled"


def test_every_action_is_audited_and_the_chain_detects_tampering(ledger: sa.Engine, principal: Principal) -> None:
    ids = control.submit_many(ledger, principal, [control.JobSpec("t", "noop")] * 3, doorbell=NO_BELL).job_ids
    control.cancel(ledger, principal, ids[0], reason="dup", ticket="OPS-1")
    control.retry(ledger, principal, ids[0], doorbell=NO_BELL, reason="after all")
    with ledger.connect() as conn:
        entries = queries.audit_log(conn, principal)
        assert [e["action"] for e in entries] == ["replay", "cancel", "submit"]
        assert entries[1]["ticket"] == "OPS-1" and entries[1]["subject"] == principal.subject
        assert queries.verify_audit(conn, principal)["ok"]
    with ledger.begin() as conn:
        # The table refuses updates; a superuser disabling the trigger can still tamper.
        with pytest.raises(sa.exc.DBAPIError), conn.begin_nested():
            conn.execute(sa.text("UPDATE audit_log SET reason = 'nothing to see' WHERE action = 'cancel'"))
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(sa.text("UPDATE audit_log SET reason = 'nothing to see' WHERE action = 'cancel'"))
        conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    with ledger.connect() as conn:
        verdict = queries.verify_audit(conn, principal)
        cancel_id = next(e["id"] for e in queries.audit_log(conn, principal) if e["action"] == "cancel")
    assert not verdict["ok"] and verdict["first_bad_id"] == cancel_id and "altered" in verdict["problem"]


# Chains are per tenant: removing row 2 of one tenant's chain names its successor, row 3;
# removing the only row of a tenant's chain names the row the chain's head still points at.
@pytest.mark.parametrize(
    ("tenants", "named"),
    [(["t", "t", "t"], "row 3 (chain t)"), (["t0", "t1", "t2"], "row 2 (chain t1)")],
)
def test_audit_verify_names_the_row_after_a_removed_one(
    services: Services, ledger: sa.Engine, principal: Principal, tenants: list[str], named: str
) -> None:
    for tenant in tenants:
        control.submit(ledger, principal, control.JobSpec(tenant, "noop"), doorbell=NO_BELL)
    env = {"PATH": "/usr/bin:/bin", "ORCH_DATABASE_URL": services.database_url, "PYTHONPATH": str(ROOT)}

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "audit", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    intact = verify()
    assert intact.returncode == 0, intact.stderr
    assert f"3 rows in {len(set(tenants))} chain(s)" in intact.stdout
    with ledger.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(sa.text("DELETE FROM audit_log WHERE id = 2"))
        conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    proc = verify()
    assert proc.returncode == 1
    assert named in proc.stderr, proc.stderr


def test_secrets_are_masked_outside_the_handler(ledger: sa.Engine, principal: Principal) -> None:
    payload = {"url": "https://feed", "auth": {"Authorization": "Bearer s3cr3t", "api_key": "k-123"}, "Password": "p"}
    job = control.submit(ledger, principal, control.JobSpec("t", "noop", payload), doorbell=NO_BELL)
    with ledger.connect() as conn:
        shown = queries.get_job(conn, principal, job)
        stored = conn.execute(sa.text("SELECT payload FROM jobs WHERE id = :id"), {"id": job}).scalar_one()
    assert shown["payload"] == {
        "url": "https://feed",
        "auth": {"Authorization": "***", "api_key": "***"},
        "Password": "***",
    }
    assert stored["auth"]["api_key"] == "k-123"  # the handler still gets the real value
    assert "s3cr3t" not in json.dumps(shown)


def test_error_clusters_group_by_normalised_message(ledger: sa.Engine, principal: Principal) -> None:
    ids = control.submit_many(ledger, principal, [control.JobSpec("t", "fail")] * 5, doorbell=NO_BELL).job_ids
    _fail_final(ledger, ids[:3], "HTTP 503 for /feed?page={i}")
    _fail_final(ledger, ids[3:], "field 'published' missing from advisory {i}", error_class="schema_mismatch")
    with ledger.connect() as conn:
        clusters = queries.error_clusters(conn, principal, since_s=600)
        dead = queries.dead_letter_clusters(conn, principal)
    assert [(c["error_class"], c["count"]) for c in clusters] == [("http_5xx", 3), ("schema_mismatch", 2)]
    assert clusters[0]["fingerprint"] == fingerprints.fingerprint("http_5xx", "HTTP 503 for /feed?page=1")
    assert clusters[0]["message"] == "HTTP <n> for /feed?page=<id>"
    assert sorted(clusters[0]["sample_job_ids"]) == sorted(ids[:3]) and clusters[0]["job_types"] == ["fail"]
    assert [(d["fingerprint"], d["count"]) for d in dead] == [(c["fingerprint"], c["count"]) for c in clusters]


def test_burn_rates_per_window(ledger: sa.Engine, principal: Principal) -> None:
    control.submit_many(ledger, principal, [control.JobSpec("t", "noop")] * 18, doorbell=NO_BELL)
    _succeed(ledger, 18)
    bad = control.submit_many(ledger, principal, [control.JobSpec("t", "fail")] * 2, doorbell=NO_BELL).job_ids
    _fail_final(ledger, bad, "boom {i}")
    with ledger.connect() as conn:
        rates = queries.burn_rates(conn, principal)
    by_window = {(r["job_type"], r["window"]): r for r in rates}
    assert set(w for _, w in by_window) == set(slo.WINDOWS)
    fail_5m = by_window[("fail", "5m")]
    assert (fail_5m["failed"], fail_5m["total"], fail_5m["burn_rate"]) == (2, 2, pytest.approx(100.0))
    assert by_window[("noop", "1h")]["burn_rate"] == 0.0 and by_window[("noop", "1h")]["total"] == 18


def test_exporter_serves_ledger_metrics(
    services: Services, ledger: sa.Engine, principal: Principal, tmp_path: Any
) -> None:
    control.submit_many(ledger, principal, [control.JobSpec("t", "noop")] * 4, doorbell=NO_BELL)
    control.submit_many(ledger, principal, [control.JobSpec("t", "fail")] * 1, doorbell=NO_BELL)
    env = dict(
        os.environ,
        ORCH_DATABASE_URL=services.database_url,
        ORCH_METRICS_PORT="9471",
        ORCH_METRICS_DIR=str(tmp_path / "m"),
        PYTHONPATH=str(ROOT),
    )
    (tmp_path / "m").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "exporter"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        from tests.conftest import wait_until

        def scrape() -> str | None:
            try:
                return urllib.request.urlopen("http://127.0.0.1:9471/metrics", timeout=2).read().decode()
            except OSError:
                return None

        text = wait_until(scrape, timeout=20, what="the exporter to answer")
    finally:
        proc.terminate()
        proc.wait(10)
    assert 'orch_queue_depth{queue="default",state="queued"} 5.0' in text
    assert 'orch_jobs_submitted_total{job_type="noop",tenant="t"} 4.0' in text
    assert 'orch_slo_burn_rate{slo="job_success",window="5m"} 0.0' in text
    assert "orch_oldest_ready_age_seconds" in text and 'orch_dead_letter_depth{tenant="t"} 0.0' in text


def test_replay_a_whole_cluster_in_one_action(ledger: sa.Engine, principal: Principal) -> None:
    ids = control.submit_many(ledger, principal, [control.JobSpec("t", "fail")] * 3, doorbell=NO_BELL).job_ids
    _fail_final(ledger, ids, "HTTP 503 for /feed?page={i}")
    with ledger.connect() as conn:
        (cluster,) = queries.dead_letter_clusters(conn, principal)
    before = _audit_count(ledger)
    replayed = control.replay_many(
        ledger, principal, cluster["job_ids"], doorbell=NO_BELL, reason="upstream fixed", label="cluster x"
    )
    assert sorted(replayed) == sorted(ids) and len(set(replayed.values())) == 3
    assert _audit_count(ledger) == before + 1
    with ledger.connect() as conn:
        for old, new in replayed.items():
            job = queries.get_job(conn, principal, new)
            assert (job["replay_of"], job["state"]) == (old, "queued")
        assert queries.audit_log(conn, principal, action="replay")[0]["target"] == "cluster x"
    with pytest.raises(errors.InvalidTransition):
        control.replay_many(ledger, principal, list(replayed.values()), doorbell=NO_BELL, reason="again")
    with pytest.raises(errors.ReasonRequired):
        control.replay_many(ledger, principal, ids, doorbell=NO_BELL)


def test_catalogue_and_run_time_queries(ledger: sa.Engine, principal: Principal) -> None:
    control.submit_many(ledger, principal, [control.JobSpec("acme", "noop")] * 4, doorbell=NO_BELL)
    control.submit(ledger, principal, control.JobSpec("globex", "noop"), doorbell=NO_BELL)
    _succeed(ledger, 5)
    limited = Principal("bob", frozenset({Scope.READ}), frozenset({"acme"}))
    with ledger.connect() as conn:
        assert queries.tenants(conn, principal) == ["acme", "globex"]
        assert queries.tenants(conn, limited) == ["acme"]
        assert {"noop", "sleep", "fail", "flaky"} <= {t["name"] for t in queries.job_types(conn, principal)}
        summary = queries.run_time_summary(conn, principal, since_s=600)
        # All five finished a moment ago: over the shortest span, not the 600 s window.
        assert summary["finished"] == 5 and summary["jobs_per_s"] == pytest.approx(5 / 60)
        assert 0 <= summary["covered_s"] < 60 and summary["rate_span_s"] == 60
        assert summary["p95_duration_s"] is not None and summary["p95_duration_s"] >= 0
        assert queries.run_time_summary(conn, limited, since_s=600)["finished"] == 4
        assert len(queries.list_jobs(conn, principal, since_s=600)) == 5
