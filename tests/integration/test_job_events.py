"""Every job state change and every control action writes its outbox event in the same
transaction (migration 0013's trigger on job_history; the audit statement), and every event
read back is a valid orch.event.v1 envelope (docs/schemas/orch.event.v1.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import sqlalchemy as sa

from core import control
from core.domain import events as envelopes
from core.domain.auth import Principal
from core.ledger import events
from core.ledger import jobs as ledger_jobs
from worker.runtime.relay import Relay

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "orch.event.v1.json").read_text())
OWNER = "tests:worker"


def _stream(engine: sa.Engine) -> list[dict[str, Any]]:
    Relay(engine).run_once()
    with engine.connect() as conn:
        return [e for r in events.after(conn, 0, limit=10_000) for e in envelopes.expand(r)]


def _submit(engine: sa.Engine, principal: Principal, **payload: Any) -> int:
    spec = control.JobSpec(tenant="acme", job_type="noop", payload=payload)
    return control.submit_many(engine, principal, [spec], doorbell=control.NoDoorbell()).job_ids[0]


def test_a_jobs_life_is_one_event_per_state_change(ledger: sa.Engine, principal: Principal) -> None:
    job_id = _submit(ledger, principal)
    with ledger.begin() as conn:
        (row,) = ledger_jobs.claim_jobs(conn, queue="default", limit=1, owner=OWNER, job_types=["noop"])
    with ledger.begin() as conn:
        ledger_jobs.ack_jobs(conn, [job_id], [row["lease_id"]], actor=OWNER)
    with ledger.begin() as conn:
        ledger_jobs.succeed_jobs(conn, [job_id], [row["lease_id"]], actor=OWNER)
    stream = _stream(ledger)
    mine = [e for e in stream if e["subject"] == f"job/{job_id}"]
    assert [e["type"] for e in mine] == [
        "orch.job.submitted",
        "orch.job.leased",
        "orch.job.running",
        "orch.job.succeeded",
    ]
    assert [e["data"]["from_state"] for e in mine] == [None, "queued", "leased", "running"]
    assert mine[-1]["idempotencykey"] == f"orch-orch.job.succeeded-{job_id}-1"
    assert mine[-1]["actor"] == OWNER
    assert all(e["tenantid"] == "acme" and e["data"]["job_type"] == "noop" for e in mine)
    # The submit is also a control action, announced once for its tenant.
    (submit,) = [e for e in stream if e["type"] == "orch.action.submit"]
    assert submit["tenantid"] == "acme" and submit["actor"] == principal.subject
    assert [int(e["sequence"]) for e in stream] == list(range(1, len(stream) + 1))
    for e in stream:
        jsonschema.validate(e, SCHEMA)


def test_a_change_that_rolls_back_announces_nothing(ledger: sa.Engine, principal: Principal) -> None:
    job_id = _submit(ledger, principal)
    before = len(_stream(ledger))
    with ledger.connect() as conn:
        tx = conn.begin()
        ledger_jobs.claim_jobs(conn, queue="default", limit=1, owner=OWNER, job_types=["noop"])
        tx.rollback()
    assert len(_stream(ledger)) == before
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one() == "queued"


def test_a_control_action_is_announced_with_its_reason_and_secrets_masked(
    ledger: sa.Engine, principal: Principal
) -> None:
    _submit(ledger, principal, api_token="s3cret")
    control.pause(ledger, principal, tenant="acme", reason="upstream outage", ticket="OPS-7")
    stream = _stream(ledger)
    (pause,) = [e for e in stream if e["type"] == "orch.action.pause"]
    assert pause["data"]["reason"] == "upstream outage" and pause["data"]["ticket"] == "OPS-7"
    assert pause["tenantid"] == "acme"
    jsonschema.validate(pause, SCHEMA)
    assert "s3cret" not in json.dumps(stream)


def test_envelope_masks_secret_looking_keys_in_data() -> None:
    row = {
        "seq": 3,
        "id": 9,
        "at": "2026-12-02T10:00:00.000000Z",
        "tenant": "acme",
        "kind": "action.token_create",
        "payload": {"target": "token 4", "details": {"token": "abc", "note": "x"}, "actor": "root"},
    }
    e = envelopes.envelope(row)
    assert e["data"]["details"] == {"token": "***", "note": "x"}
    assert e["subject"] == "token 4" and e["actor"] == "root" and e["type"] == "orch.action.token_create"
    jsonschema.validate(e, SCHEMA)


def test_sources_schedules_and_backfills_announce_their_state_changes(ledger: sa.Engine, principal: Principal) -> None:
    import datetime as dt

    control.add_source(ledger, principal, tenant="acme", name="feed", host="feed.invalid", rate=5, burst=5, reason="t")
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE sources SET circuit_state = 'open' WHERE name = 'feed'"))
        conn.execute(sa.text("UPDATE sources SET circuit_window = circuit_window WHERE name = 'feed'"))  # no change
    target = control.Target.of_job("test.windowed", {"feed": "f"})
    spec = control.ScheduleSpec(tenant="acme", name="hourly", target=target, every=dt.timedelta(hours=1))
    control.add_schedule(ledger, principal, spec, reason="t")
    control.pause_schedule(ledger, principal, "acme", "hourly", reason="upstream down")
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    backfill = control.BackfillSpec(
        tenant="acme", target=target, start=day, end=day + dt.timedelta(hours=2), window=dt.timedelta(hours=1)
    )
    plan = control.create_backfill(ledger, principal, backfill, reason="gap", ticket="INC-1", dry_run=False)
    assert plan.backfill_id is not None
    control.cancel_backfill(ledger, principal, plan.backfill_id, reason="not needed")
    stream = _stream(ledger)
    states = [
        (e["type"], e["subject"], e["data"].get("from_state"))
        for e in stream
        if e["type"].split(".")[1] in ("source", "schedule", "backfill")
    ]
    source_id = stream[[e["type"] for e in stream].index("orch.source.circuit_open")]["data"]["source_id"]
    assert ("orch.source.circuit_open", f"source/{source_id}", "closed") in states
    assert [s for s in states if s[0].startswith("orch.source.")] == [
        ("orch.source.circuit_open", f"source/{source_id}", "closed")
    ]
    assert any(t == "orch.schedule.paused" and f == "active" for t, _, f in states)
    assert any(t == "orch.backfill.canceled" for t, _, _ in states)
    for e in stream:
        jsonschema.validate(e, SCHEMA)


def _uncarried(engine: sa.Engine) -> int:
    """History rows whose tenant, type or run is not their job's (migration 0019)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM job_history AS h JOIN jobs AS j ON j.id = h.job_id "
                "WHERE (h.tenant_id, h.job_type, h.run_id) IS DISTINCT FROM (j.tenant_id, j.job_type, j.run_id)"
            )
        ).scalar_one()


def test_every_writer_of_history_carries_its_jobs_tenant_type_and_run(ledger: sa.Engine, principal: Principal) -> None:
    """Submit, a claim and a success, a failure, and a DAG release (orch_dag_advance) each
    write the job's tenant, type and run into its history rows, so the events trigger needs
    no lookup of the job."""
    run = control.submit_run(
        ledger,
        principal,
        control.RunSpec(
            "acme",
            "pipe",
            [
                control.JobSpec(tenant="acme", job_type="noop", payload={}, key="a"),
                control.JobSpec(tenant="acme", job_type="noop", payload={}, key="b", after=("a",)),
            ],
        ),
        control.NoDoorbell(),
    )
    loner = _submit(ledger, principal)
    with ledger.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=10, owner=OWNER, job_types=["noop"])
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {run.jobs["a"], loner}
    with ledger.begin() as conn:
        ledger_jobs.succeed_jobs(conn, [run.jobs["a"]], [by_id[run.jobs["a"]]["lease_id"]], actor=OWNER)
        ledger_jobs.fail_final_jobs(
            conn, [loner], [by_id[loner]["lease_id"]], ["ValueError"], ["boom"], ["no retries"], actor=OWNER
        )
    with ledger.connect() as conn:
        released = set(conn.execute(sa.text("SELECT job_id FROM job_history WHERE event = 'deps_met'")).scalars())
    assert run.jobs["b"] in released, "the child was released"
    assert _uncarried(ledger) == 0


def test_a_history_row_that_carries_nothing_is_still_announced_with_its_job(
    ledger: sa.Engine, principal: Principal
) -> None:
    """A writer older than migration 0019 (during a rolling upgrade) leaves the columns
    NULL: the events trigger looks the job up, as version 1 did."""
    job_id = _submit(ledger, principal)
    with ledger.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO job_history (job_id, from_state, event, to_state, actor, attempt) "
                "VALUES (:id, 'queued', 'cancel', 'canceled', 'tests:old-writer', 0)"
            ),
            {"id": job_id},
        )
    (old,) = [e for e in _stream(ledger) if e["actor"] == "tests:old-writer"]
    assert old["type"] == "orch.job.canceled" and old["subject"] == f"job/{job_id}"
    assert old["tenantid"] == "acme" and old["data"]["job_type"] == "noop"
