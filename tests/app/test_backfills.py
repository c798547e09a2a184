"""Backfills page: the form's dry run (which windows run, which are skipped and why) against
windows that are done, failed and in flight in a real ledger, then Create (reason and ticket
required, one audit row); the list with progress, state and why each waits; Pause, Resume
and Cancel (terminating the running windows) through the dialog; disabled without
orch:backfill."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import common, labels
from app import schedule_views as views
from core import control
from core.control import backfills
from core.domain.auth import Scope, local_principal
from core.ledger import jobs as ledger_jobs
from tests.app.conftest import JOB_TYPE, QUEUE, TENANT_A, TENANT_B, audit_count, button, last_audit, open_app, texts

ADMIN = local_principal("backfills-tests")
WORKER = "backfills-seed-worker"
HOUR = dt.timedelta(hours=1)
FORM = "backfills_new"
PAYLOAD = {"feed": "nvd"}


@dataclass
class Seeded:
    #: The first window's start: windows of an hour from here on, all in the past.
    t0: dt.datetime
    #: acme: 0..3 h (two windows succeeded, one failed: ended failed).
    done: int
    #: acme: 4..5 h, its one window running (in flight).
    busy: int
    #: The job of busy's running window.
    busy_job: int


def _pump(engine: sa.Engine) -> backfills.PumpResult:
    """The scheduler's pass over the backfills: start windows into free slots, end them."""
    return backfills.pump_backfills(engine, ADMIN, batch=100, max_jobs=100)


def _backfill(engine: sa.Engine, start: dt.datetime, hours: int, **spec: Any) -> int:
    plan = control.create_backfill(
        engine,
        ADMIN,
        control.BackfillSpec(
            tenant=spec.pop("tenant", TENANT_A),
            target=control.Target.of_job(JOB_TYPE, PAYLOAD, source="nvd"),
            start=start,
            end=start + hours * HOUR,
            window=HOUR,
            **spec,
        ),
        reason="seed",
        ticket="SEED-1",
    )
    assert plan.backfill_id is not None
    return plan.backfill_id


def _work(engine: sa.Engine, *, fail: frozenset[int] = frozenset()) -> list[int]:
    """Claim every queued job as a worker would: fail `fail`, succeed the rest."""
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=100, owner=WORKER, job_types=[JOB_TYPE])
    ok = [r for r in rows if r["id"] not in fail]
    bad = [r for r in rows if r["id"] in fail]
    with engine.begin() as conn:
        if ok:
            ledger_jobs.succeed_jobs(conn, [r["id"] for r in ok], [r["lease_id"] for r in ok], actor=WORKER)
        if bad:
            ledger_jobs.fail_final_jobs(
                conn,
                [r["id"] for r in bad],
                [r["lease_id"] for r in bad],
                ["http_5xx"] * len(bad),
                ["HTTP 503"] * len(bad),
                ["not retryable"] * len(bad),
                actor=WORKER,
            )
    return sorted(r["id"] for r in rows)


def _window_jobs(engine: sa.Engine, backfill_id: int) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT job_id FROM windows WHERE backfill_id = :b AND job_id IS NOT NULL ORDER BY span_start"),
                {"b": backfill_id},
            ).scalars()
        )


def seed_backfills(engine: sa.Engine) -> Seeded:
    control.add_source(engine, ADMIN, tenant=TENANT_A, name="nvd", host="nvd.backfill.example", reason="seed")
    control.add_source(engine, ADMIN, tenant=TENANT_B, name="ghsa", host="ghsa.backfill.example", reason="seed")
    t0 = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - 10 * HOUR
    done = _backfill(engine, t0, 3, max_active=3)
    _pump(engine)
    jobs = _window_jobs(engine, done)
    assert len(jobs) == 3
    _work(engine, fail=frozenset({jobs[2]}))
    _pump(engine)  # every window ended: the backfill ends, failed
    busy = _backfill(engine, t0 + 4 * HOUR, 1, max_active=1)
    _pump(engine)
    (busy_job,) = _window_jobs(engine, busy)
    return Seeded(t0=t0, done=done, busy=busy, busy_job=busy_job)


@pytest.fixture
def seeded(console: sa.Engine) -> Seeded:
    return seed_backfills(console)


@pytest.fixture
def operator(make_token: Callable[..., str]) -> str:
    return make_token("operator", {Scope.READ, Scope.BACKFILL})


@pytest.fixture
def lead(make_token: Callable[..., str]) -> str:
    """May backfill and operate: terminating a running window cancels its job."""
    return make_token("lead", {Scope.READ, Scope.BACKFILL, Scope.OPERATE})


@pytest.fixture
def viewer(make_token: Callable[..., str]) -> str:
    return make_token("viewer", {Scope.READ, Scope.OPERATE})


def _backfill_row(engine: sa.Engine, backfill_id: int) -> sa.RowMapping:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM backfills WHERE id = :id"), {"id": backfill_id}).mappings().one()


def _job_state(engine: sa.Engine, job_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one())


def _frame(at: AppTest, column: str) -> list[dict[str, Any]]:
    return list(next(d.value for d in at.dataframe if column in d.value.columns).to_dict("records"))


def _fill(at: AppTest, t0: dt.datetime, hours: int, **fields: str) -> None:
    """Fill the form: acme, source nvd, JOB_TYPE, PAYLOAD, t0 .. t0 + hours in windows of 1h."""
    at.selectbox(key=f"{FORM}_tenant").set_value(fields.get("tenant", TENANT_A)).run()
    at.selectbox(key=f"{FORM}_source").set_value(fields.get("source", "nvd"))
    at.selectbox(key=f"{FORM}_type").set_value(fields.get("job_type", JOB_TYPE))
    at.text_area(key=f"{FORM}_payload").input(fields.get("payload", json.dumps(PAYLOAD)))
    at.text_input(key=f"{FORM}_from").input(f"{t0:%Y-%m-%d %H:%M}")
    at.text_input(key=f"{FORM}_to").input(f"{t0 + hours * HOUR:%Y-%m-%d %H:%M}")
    at.text_input(key=f"{FORM}_window").input(fields.get("window", "1h"))
    at.text_input(key=f"{FORM}_reason").input(fields.get("reason", "nvd outage on the 1st"))
    at.text_input(key=f"{FORM}_ticket").input(fields.get("ticket", "OPS-42"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def _open(token: str, backfill: int | None = None) -> AppTest:
    at = open_app(token, "backfills")
    if backfill is not None:
        at.selectbox(key="backfills_selected").set_value(backfill).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def _confirm(at: AppTest, reason: str) -> None:
    """Type the reason into the open dialog (the form has a reason field of its own) and confirm."""
    next(t for t in at.text_input if str(t.key).startswith("sv_reason_")).input(reason)
    button(at, labels.CONFIRM).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_the_dry_run_shows_what_runs_and_what_is_skipped_and_why_then_create(
    console: sa.Engine, seeded: Seeded, operator: str
) -> None:
    at = _open(operator)
    assert button(at, views.CREATE).disabled  # nothing previewed yet
    _fill(at, seeded.t0, 6)
    before = audit_count(console)
    button(at, views.PREVIEW).click().run()
    assert not at.error, [e.value for e in at.error]
    assert audit_count(console) == before  # the dry run writes nothing
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Windows"], shown["Will run"], shown["Skipped: done"]) == ("6", "2", "2")
    assert (shown["Skipped: failed before"], shown["Skipped: in flight"]) == ("1", "1")
    preview = _frame(at, "decision")
    assert [p["decision"] for p in preview] == [
        "Skipped: done",
        "Skipped: done",
        "Skipped: failed before",
        "Runs",
        "Skipped: in flight",
        "Runs",
    ]
    assert preview[0]["window (UTC)"] == views.span(seeded.t0, seeded.t0 + HOUR)
    assert preview[2]["why"] == views.DECISIONS["failed"][1]
    assert preview[4]["why"] == views.DECISIONS["in_flight"][1]
    assert not button(at, views.CREATE).disabled

    button(at, views.CREATE).click().run()
    assert not at.exception
    (message,) = [s.value for s in at.success]
    with console.connect() as conn:
        new_id = conn.execute(sa.text("SELECT max(id) FROM backfills")).scalar_one()
    assert message == (
        f"Backfill {new_id} created for {TENANT_A}: 2 of 6 windows to run, 4 skipped (done 2, failed before 1, "
        "in flight 1)."
    )
    row = _backfill_row(console, new_id)
    assert (row["windows_total"], row["state"], row["reason"], row["ticket"]) == (
        2,
        "planned",
        "nvd outage on the 1st",
        "OPS-42",
    )
    audit = last_audit(console)
    assert (audit["subject"], audit["action"], audit["target"], audit["ticket"]) == (
        "operator",
        "backfill.create",
        f"backfill {new_id}",
        "OPS-42",
    )
    assert audit_count(console) == before + 1
    # The new backfill is chosen: its view, planned, with its two windows.
    assert at.selectbox(key="backfills_selected").value == new_id
    assert "Planned: the scheduler's next pass starts its first windows." in [i.value for i in at.info]
    assert [w["state"] for w in _frame(at, "finished")] == ["Planned", "Planned"]


def test_reprocess_failed_runs_the_failed_window_again(console: sa.Engine, seeded: Seeded, operator: str) -> None:
    at = _open(operator)
    _fill(at, seeded.t0, 3)
    at.radio(key=f"{FORM}_reprocess").set_value("failed").run()
    button(at, views.PREVIEW).click().run()
    assert [p["decision"] for p in _frame(at, "decision")] == ["Skipped: done", "Skipped: done", "Runs"]
    at.radio(key=f"{FORM}_reprocess").set_value("all").run()
    # A changed form needs a new dry run before Create.
    assert button(at, views.CREATE).disabled
    assert "The form changed since the last dry run: preview again." in texts(at)
    button(at, views.PREVIEW).click().run()
    assert [p["decision"] for p in _frame(at, "decision")] == ["Runs"] * 3


def test_the_form_needs_a_reason_a_ticket_json_and_a_window_that_divides_the_range(
    console: sa.Engine, seeded: Seeded, operator: str
) -> None:
    at = _open(operator)
    _fill(at, seeded.t0, 6, reason="", ticket="")
    button(at, views.PREVIEW).click().run()  # a dry run needs neither
    assert not at.error and {m.label: m.value for m in at.metric}["Will run"] == "2"
    assert button(at, views.CREATE).disabled
    assert "A reason and a ticket are needed to create the backfill." in texts(at)
    at.text_input(key=f"{FORM}_reason").input("nvd outage").run()
    assert button(at, views.CREATE).disabled  # still no ticket
    at.text_input(key=f"{FORM}_ticket").input("OPS-7").run()
    assert not button(at, views.CREATE).disabled  # the reason and ticket are not part of the plan
    _fill(at, seeded.t0, 6, payload="{not json")
    button(at, views.PREVIEW).click().run()
    (error,) = [e.value for e in at.error]
    assert error.startswith("Preview failed: payload is not JSON: Expecting property name")
    assert button(at, views.CREATE).disabled
    _fill(at, seeded.t0, 6, window="7h")
    button(at, views.PREVIEW).click().run()
    (error,) = [e.value for e in at.error]
    # Times in a message read as everywhere on the page: to the second, in UTC.
    assert error.startswith("Preview failed: --window 7h does not divide the range ")
    assert f"{labels.utc(seeded.t0)} UTC .. {labels.utc(seeded.t0 + 6 * HOUR)} UTC (6h)" in error
    _fill(at, seeded.t0, 3)
    button(at, views.PREVIEW).click().run()
    assert "Nothing to run: the dry run skips every window." in texts(at)
    assert button(at, views.CREATE).disabled
    with console.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM backfills")).scalar_one() == 2


def test_the_list_shows_progress_state_and_why_each_waits(console: sa.Engine, seeded: Seeded, viewer: str) -> None:
    at = _open(viewer)
    rows = {r["id"]: r for r in _frame(at, "progress")}
    assert sorted(rows) == [seeded.done, seeded.busy]
    done, busy = rows[seeded.done], rows[seeded.busy]
    assert (done["state"], done["progress"], done["windows"], done["waits for"]) == ("Failed", 100.0, "3 / 3", "—")
    assert (busy["state"], busy["progress"], busy["windows"]) == ("Running", 0.0, "0 / 1")
    assert busy["waits for"] == "1 of max_active 1 windows running"
    assert busy["range (UTC)"] == views.span(seeded.t0 + 4 * HOUR, seeded.t0 + 5 * HOUR)
    assert (busy["window"], busy["source"], busy["job type"], busy["ticket"]) == ("1h", "nvd", JOB_TYPE, "SEED-1")
    at.selectbox(key="backfills_state").set_value("failed").run()
    assert [r["id"] for r in _frame(at, "progress")] == [seeded.done]

    at = _open(viewer, seeded.done)
    (bar,) = at.get("progress")
    assert bar.proto.value == 100
    assert bar.proto.text == "3 of 3 windows ended: 2 succeeded, 1 failed"
    assert "Ended " in texts(at) and ": 1 window(s) failed." in texts(at)
    shown = {m.label: m.value for m in at.metric}
    assert (shown["State"], shown["Windows"], shown["Failed"], shown["ETA"]) == ("Failed", "3", "1", "done")
    windows = _frame(at, "finished")
    assert [w["state"] for w in windows] == ["Succeeded", "Succeeded", "Failed"]
    assert [int(w["job"]) for w in windows] == _window_jobs(console, seeded.done)

    at.selectbox(key="backfills_selected").set_value(seeded.busy).run()
    assert "Waits: 1 of max_active 1 windows running." in [i.value for i in at.info]
    assert {m.label: m.value for m in at.metric}["Running"] == "1 / 1"


def test_pause_resume_and_cancel_terminating_the_running_window(console: sa.Engine, seeded: Seeded, lead: str) -> None:
    at = _open(lead, seeded.busy)
    assert button(at, labels.RESUME).disabled
    assert f"Backfill {seeded.busy} is running: only a paused backfill is resumed." in texts(at)
    before = audit_count(console)
    button(at, labels.PAUSE).click().run()
    assert f"**Pause backfill {seeded.busy}**" in texts(at)
    button(at, labels.CONFIRM).click().run()
    assert "backfill pause needs a reason" in texts(at)
    _confirm(at, "live load first")
    assert [s.value for s in at.success] == [
        f"Pause backfill {seeded.busy}: paused; no new window starts until it is resumed (running windows finish)."
    ]
    row = _backfill_row(console, seeded.busy)
    assert (row["state"], row["operator_paused"]) == ("paused", True)
    assert "Waits: paused by lead: live load first." in [i.value for i in at.info]
    assert button(at, labels.PAUSE).disabled and not button(at, labels.RESUME).disabled

    button(at, labels.RESUME).click().run()
    _confirm(at, "load is down")
    assert _backfill_row(console, seeded.busy)["state"] == "running"
    assert last_audit(console)["action"] == "backfill.resume"

    button(at, views.CANCEL_BACKFILL).click().run()
    at.checkbox(key=next(c.key for c in at.checkbox if c.label == views.TERMINATE_BOX)).check().run()
    _confirm(at, "wrong range")
    assert [s.value for s in at.success] == [
        f"Cancel backfill {seeded.busy}: canceled; its planned windows will not run, 1 of 1 running window(s) "
        "terminated."
    ]
    assert _backfill_row(console, seeded.busy)["state"] == "canceled"
    assert _job_state(console, seeded.busy_job) == "canceled"
    with console.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action, target, reason FROM audit_log WHERE id > :n ORDER BY id"), {"n": before}
        ).all()
    assert [tuple(a) for a in actions if a.action.startswith("backfill.")] == [
        ("backfill.pause", f"backfill {seeded.busy}", "live load first"),
        ("backfill.resume", f"backfill {seeded.busy}", "load is down"),
        ("backfill.cancel", f"backfill {seeded.busy}", "wrong range"),
    ]
    assert all(button(at, label).disabled for label in (labels.PAUSE, labels.RESUME, views.CANCEL_BACKFILL))


def test_cancel_without_terminating_lets_the_running_window_finish(
    console: sa.Engine, seeded: Seeded, operator: str
) -> None:
    at = _open(operator, seeded.busy)
    button(at, views.CANCEL_BACKFILL).click().run()
    # Without orch:operate the running windows' jobs cannot be canceled: no terminating.
    (box,) = [c for c in at.checkbox if c.label == views.TERMINATE_BOX]
    assert box.disabled
    assert f"that needs {Scope.OPERATE.value} too." in texts(at)
    _confirm(at, "enough")
    assert [s.value for s in at.success] == [
        f"Cancel backfill {seeded.busy}: canceled; its planned windows will not run, running windows finish."
    ]
    assert _backfill_row(console, seeded.busy)["state"] == "canceled"
    assert _job_state(console, seeded.busy_job) == "queued"


def test_every_button_is_disabled_without_orch_backfill(console: sa.Engine, seeded: Seeded, viewer: str) -> None:
    at = _open(viewer, seeded.busy)
    _fill(at, seeded.t0, 6)
    for label in (views.PREVIEW, views.CREATE, labels.PAUSE, labels.RESUME, views.CANCEL_BACKFILL):
        assert button(at, label).disabled, label
    assert labels.missing_scope("viewer", Scope.BACKFILL.value) in texts(at)
    # A forged cancel (the dialog opened without the button) is refused by control.
    before = audit_count(console)
    at.session_state[views.PENDING_KEY] = {
        "kind": "cancel_backfill",
        "tenant": TENANT_A,
        "backfill_id": seeded.busy,
        "nonce": "f2",
    }
    at.run()
    _confirm(at, "let me")
    assert any(e.value.startswith(f"Cancel backfill {seeded.busy} failed: viewer lacks") for e in at.error)
    assert audit_count(console) == before
    assert _backfill_row(console, seeded.busy)["state"] == "running"


def test_a_tenant_limited_principal_backfills_its_tenant_only(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = _open(make_token("globex-ops", {Scope.READ, Scope.BACKFILL}, {TENANT_B}))
    assert "No backfills match the filters." in texts(at)  # acme's are not visible
    assert at.selectbox(key=f"{FORM}_tenant").options == [TENANT_B]
    assert at.selectbox(key=f"{FORM}_source").options == ["(no source)", "ghsa"]
    assert not button(at, views.PREVIEW).disabled
    assert common.OUTCOME_KEY not in at.session_state
