"""Schedules page: the table and a schedule's view (next fire times in local time and UTC,
recent ticks with their status and the job or run each created) from a real ledger, the
ticks recorded by the scheduler's own pass (core.control.firing.fire_due); Pause, Resume
with the caught-up ticks and Trigger now through the dialog (a reason each, one audit row
each); the buttons disabled without orch:operate on the schedule's tenant."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import labels
from app import schedule_views as views
from core import control
from core.control import firing
from core.domain.auth import Scope, local_principal
from tests.app.conftest import JOB_TYPE, TENANT_A, TENANT_B, audit_count, button, last_audit, open_app, texts

ADMIN = local_principal("schedules-tests")
RUN_DOC = {"name": "hourly-sync", "jobs": [{"key": "fetch", "type": "noop"}, {"key": "load", "type": "noop"}]}


@dataclass
class Schedules:
    #: When seeding began (the schedules' starts are relative to it).
    at: dt.datetime


def _add(engine: sa.Engine, tenant: str, name: str, target: control.Target, **spec: Any) -> None:
    control.add_schedule(
        engine, ADMIN, control.ScheduleSpec(tenant=tenant, name=name, target=target, **spec), reason="seed"
    )


def _fire(engine: sa.Engine, now: dt.datetime | None = None) -> firing.PassResult:
    return firing.fire_due(engine, ADMIN, now=now, batch=100, max_jobs=100)


def seed_schedules(engine: sa.Engine) -> Schedules:
    """acme "poll" (every 1m from 5.5 min ago, catch-up all: its 5 ticks fire a job each),
    acme "digest" (every 1m from 5.5 min ago, catch-up none: 4 late ticks missed, the on-time
    one fires), globex "nightly" (cron 0 2 * * * in Europe/Berlin: a run, not due yet) and
    globex "sync" (every 1m from 1.5 min ago: fires the run of RUN_DOC)."""
    now = dt.datetime.now(dt.UTC)
    job = control.Target.of_job(JOB_TYPE, {"feed": "nvd", "api_key": "s3cr3t-key"})
    _add(
        engine,
        TENANT_A,
        "poll",
        job,
        every=dt.timedelta(minutes=1),
        start=now - dt.timedelta(seconds=330),
        catchup="all",
        overlap="allow_all",
    )
    digest = control.Target.of_job(JOB_TYPE, {"feed": "digest"})
    _add(
        engine,
        TENANT_A,
        "digest",
        digest,
        every=dt.timedelta(minutes=1),
        start=now - dt.timedelta(seconds=330),
        catchup="none",
    )
    run = control.Target.of_run(RUN_DOC)
    _add(engine, TENANT_B, "nightly", run, cron="0 2 * * *", timezone="Europe/Berlin")
    _add(engine, TENANT_B, "sync", run, every=dt.timedelta(minutes=1), start=now - dt.timedelta(seconds=90))
    result = _fire(engine)
    assert result.counts["fired"] == 5 + 1 + 1 and result.counts["missed"] == 4, result.counts
    return Schedules(now)


@pytest.fixture
def schedules(console: sa.Engine) -> Schedules:
    return seed_schedules(console)


@pytest.fixture
def operator(make_token: Callable[..., str]) -> str:
    return make_token("operator", {Scope.READ, Scope.OPERATE})


@pytest.fixture
def viewer(make_token: Callable[..., str]) -> str:
    return make_token("viewer", {Scope.READ})


def _table(at: AppTest) -> dict[str, dict[str, Any]]:
    frame = next(d.value for d in at.dataframe if "trigger" in d.value.columns)
    return {f"{r['tenant']}/{r['name']}": dict(r) for r in frame.to_dict("records")}


def _frame(at: AppTest, column: str) -> list[dict[str, Any]]:
    """The rows of the table with `column`."""
    return list(next(d.value for d in at.dataframe if column in d.value.columns).to_dict("records"))


def _open(token: str, schedule: str | None = None) -> AppTest:
    at = open_app(token, "schedules")
    if schedule is not None:
        at.selectbox(key="schedules_selected").set_value(schedule).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def _ticks(engine: sa.Engine, tenant: str, name: str) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT k.* FROM schedule_ticks AS k JOIN schedules AS s ON s.id = k.schedule_id"
                    " JOIN tenants AS t ON t.id = s.tenant_id WHERE t.name = :t AND s.name = :n"
                    " ORDER BY k.scheduled_for DESC"
                ),
                {"t": tenant, "n": name},
            ).mappings()
        )


def _schedule(engine: sa.Engine, name: str) -> sa.RowMapping:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM schedules WHERE name = :n"), {"n": name}).mappings().one()


def _confirm(at: AppTest, reason: str | None) -> None:
    if reason is not None:
        next(t for t in at.text_input if t.label == labels.REASON_LABEL).input(reason)
    button(at, labels.CONFIRM).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_the_table_lists_every_schedule_with_its_policies_and_next_fire(schedules: Schedules, viewer: str) -> None:
    at = _open(viewer)
    table = _table(at)
    assert sorted(table) == ["acme/digest", "acme/poll", "globex/nightly", "globex/sync"]
    poll, nightly = table["acme/poll"], table["globex/nightly"]
    assert (poll["trigger"], poll["time zone"], poll["overlap"], poll["catch-up"], poll["paused"]) == (
        "every 1m",
        "UTC",
        "allow_all",
        "all",
        "no",
    )
    assert poll["target"] == f"job {JOB_TYPE}"
    assert nightly["trigger"] == "0 2 * * * (Europe/Berlin)" and nightly["time zone"] == "Europe/Berlin"
    assert nightly["target"] == "run hourly-sync (2 jobs)"
    assert nightly["last tick"] == labels.DASH
    # The next fire: relative, exact in UTC, and in the schedule's own zone.
    assert nightly["next fire"].startswith("in ")
    utc = dt.datetime.fromisoformat(nightly["next fire" + labels.UTC_COLUMN]).replace(tzinfo=dt.UTC)
    local = utc.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert nightly["next fire (local)"] == f"{local:%Y-%m-%d %H:%M:%S %Z}"
    assert nightly["next fire (local)"][11:19] == "02:00:00"
    assert poll["last tick"].endswith(" ago") or poll["last tick"] == "just now"
    assert "4 schedules, 0 paused." in texts(at)
    at.selectbox(key="schedules_tenant").set_value(TENANT_B).run()
    assert sorted(_table(at)) == ["globex/nightly", "globex/sync"]


def test_a_schedules_view_shows_its_next_fire_times_in_local_time_and_utc(schedules: Schedules, viewer: str) -> None:
    at = _open(viewer, "globex/nightly")
    assert "globex/nightly: 0 2 * * * (Europe/Berlin)" in texts(at)
    assert "**Next fire times** (local time is Europe/Berlin)" in texts(at)
    fires = _frame(at, "local (Europe/Berlin)")
    assert len(fires) == 10
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    days = []
    for f in fires:
        utc = dt.datetime.fromisoformat(f["fires" + labels.UTC_COLUMN]).replace(tzinfo=dt.UTC)
        assert f["local (Europe/Berlin)"] == f"{utc.astimezone(berlin):%Y-%m-%d %H:%M:%S %Z}"
        assert f["local (Europe/Berlin)"][11:19] == "02:00:00"  # 01:00 or 00:00 UTC, by the season
        assert f["fires"].startswith("in ")
        days.append(utc.astimezone(berlin).date())
    assert days == sorted(set(days)) and (days[-1] - days[0]).days == 9
    assert "No tick yet: the first is recorded when it is due." in [i.value for i in at.info]
    # What it fires, secrets masked (none here) and the run document as stored.
    assert json.loads(at.json[0].proto.body) == RUN_DOC


def test_recent_ticks_show_their_status_and_the_job_each_created(
    console: sa.Engine, schedules: Schedules, viewer: str
) -> None:
    at = _open(viewer, "acme/poll")
    ticks = _frame(at, "scheduled for")
    stored = _ticks(console, TENANT_A, "poll")
    assert len(ticks) == len(stored) == 5
    assert [t["status"] for t in ticks] == ["🟢 Fired"] * 5
    assert [int(t["job"]) for t in ticks] == [r["job_id"] for r in stored]
    assert [t["scheduled for" + labels.UTC_COLUMN] for t in ticks] == [labels.utc(r["scheduled_for"]) for r in stored]
    assert [t["work state"] for t in ticks] == ["Queued"] * 5
    assert [t["run"] for t in ticks] == [""] * 5
    newest = stored[0]
    assert ticks[0]["data interval (UTC)"] == views.span(newest["interval_start"], newest["scheduled_for"])
    page = texts(at)
    assert "all ticks on record: Fired 5" in page
    assert f"Last firing: job {newest['job_id']}. Its logs, artifacts and history: on the Jobs page." in page
    # The secret of its payload never reaches the page.
    assert json.loads(at.json[0].proto.body)["payload"] == {"feed": "nvd", "api_key": "***"}

    at.selectbox(key="schedules_selected").set_value("acme/digest").run()
    ticks = _frame(at, "scheduled for")
    assert [t["status"] for t in ticks] == ["🟢 Fired"] + ["🔴 Missed"] * 4
    assert [t["note"] for t in ticks] == [labels.DASH] + ["late"] * 4
    assert [t["job"] for t in ticks][1:] == [labels.DASH] * 4
    assert "all ticks on record: Fired 1, Missed 4" in texts(at)


def test_a_tick_that_fired_a_run_links_to_the_runs_page(console: sa.Engine, schedules: Schedules, viewer: str) -> None:
    at = _open(viewer, "globex/sync")
    (tick,) = _ticks(console, TENANT_B, "sync")
    assert tick["run_id"] is not None
    (row,) = _frame(at, "scheduled for")
    assert row["run"] == f"/Runs?run={tick['run_id']}"
    assert row["job"] == labels.DASH and row["work state"] == "Running"
    links = [(p.proto.page, p.proto.query_string, p.proto.label) for p in at.get("page_link")]
    label = f"Last firing: run {tick['run_id']} (its graph and timeline on the Runs page)"
    assert ("Runs", f"run={tick['run_id']}", label) in links


def test_a_read_only_principal_sees_the_buttons_disabled(schedules: Schedules, viewer: str) -> None:
    at = _open(viewer, "acme/poll")
    assert all(button(at, label).disabled for label in (labels.PAUSE, labels.RESUME, views.TRIGGER_NOW))
    assert labels.missing_scope("viewer", Scope.OPERATE.value) in texts(at)


def test_an_operator_of_another_tenant_may_not_act(schedules: Schedules, make_token: Callable[..., str]) -> None:
    token = make_token("acme-ops", {Scope.READ, Scope.OPERATE}, {TENANT_A})
    at = _open(token, "acme/poll")
    assert not button(at, labels.PAUSE).disabled and not button(at, views.TRIGGER_NOW).disabled
    assert button(at, labels.RESUME).disabled  # not paused
    assert "Schedule acme/poll is not paused." in texts(at)
    assert sorted(_table(at)) == ["acme/digest", "acme/poll"]  # globex is not visible


def test_a_forged_pause_of_a_viewer_is_refused(console: sa.Engine, schedules: Schedules, viewer: str) -> None:
    at = _open(viewer, "acme/poll")
    before = audit_count(console)
    at.session_state[views.PENDING_KEY] = {"kind": "pause_schedule", "tenant": TENANT_A, "name": "poll", "nonce": "f1"}
    at.run()
    assert any("viewer lacks the scope orch:operate" in e.value for e in at.error)
    _confirm(at, "let me")
    assert any(e.value.startswith("Pause schedule acme/poll failed: viewer lacks") for e in at.error)
    assert audit_count(console) == before
    assert not _schedule(console, "poll")["paused"]


def test_pause_then_resume_firing_the_caught_up_ticks(console: sa.Engine, schedules: Schedules, operator: str) -> None:
    at = _open(operator, "acme/poll")
    before = audit_count(console)
    button(at, labels.PAUSE).click().run()
    assert "**Pause schedule acme/poll**" in texts(at)
    _confirm(at, None)
    assert "schedules pause needs a reason" in texts(at)  # the dialog stays open, nothing written
    assert audit_count(console) == before
    _confirm(at, "upstream maintenance")
    assert [s.value for s in at.success] == [
        "Pause schedule acme/poll: paused; its ticks are recorded paused until it is resumed."
    ]
    row = _schedule(console, "poll")
    assert row["paused"] and row["paused_at"] is not None
    audit = last_audit(console)
    assert (audit["subject"], audit["action"], audit["target"], audit["reason"]) == (
        "operator",
        "schedule.pause",
        "schedule poll",
        "upstream maintenance",
    )
    assert button(at, labels.PAUSE).disabled and not button(at, labels.RESUME).disabled
    assert any(w.value.startswith("Paused since ") for w in at.warning)

    # The scheduler's pass, three minutes on, records the ticks due since as paused.
    _fire(console, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3, seconds=10))
    since_pause = [t for t in _ticks(console, TENANT_A, "poll") if t["status"] == "paused"]
    caught = [t for t in since_pause if t["scheduled_for"] >= row["paused_at"]]
    assert len(caught) >= 2
    at.run()
    ticks = _frame(at, "scheduled for")
    assert [t["status"] for t in ticks].count("⚪ Paused") == len(since_pause)

    button(at, labels.RESUME).click().run()
    assert f"**{len(caught)} ticks recorded paused** since the pause" in texts(at)
    at.checkbox(key=next(c.key for c in at.checkbox if c.label == views.CATCHUP_BOX)).check().run()
    _confirm(at, "maintenance over")
    (message,) = [s.value for s in at.success]
    assert message.startswith("Resume schedule acme/poll: resumed; next fire ")
    assert message.endswith(f"; caught-up ticks: fired {len(caught)}.")
    fired_now = {t["scheduled_for"]: t for t in _ticks(console, TENANT_A, "poll")}
    assert all(fired_now[t["scheduled_for"]]["status"] == "fired" for t in caught)
    assert not _schedule(console, "poll")["paused"]
    audit = last_audit(console)
    assert (audit["action"], audit["reason"]) == ("schedule.resume", "maintenance over")
    details = audit["details"] if isinstance(audit["details"], dict) else json.loads(audit["details"])
    assert details["catchup"] is True and details["ticks"] == {"fired": len(caught)}
    assert audit_count(console) == before + 2


def test_the_caught_up_ticks_create_their_jobs(console: sa.Engine, schedules: Schedules, operator: str) -> None:
    control.pause_schedule(console, ADMIN, TENANT_A, "poll", reason="seed")
    _fire(console, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2, seconds=10))
    at = _open(operator, "acme/poll")
    button(at, labels.RESUME).click().run()
    at.checkbox(key=next(c.key for c in at.checkbox if c.label == views.CATCHUP_BOX)).check().run()
    _confirm(at, "maintenance over")
    fired = [t for t in _ticks(console, TENANT_A, "poll") if t["status"] == "fired"]
    assert len(fired) > 5
    assert all(t["job_id"] is not None for t in fired)


def test_resume_without_catch_up_leaves_the_paused_ticks_paused(
    console: sa.Engine, schedules: Schedules, operator: str
) -> None:
    control.pause_schedule(console, ADMIN, TENANT_A, "digest", reason="seed")
    _fire(console, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2, seconds=10))
    paused = [t["scheduled_for"] for t in _ticks(console, TENANT_A, "digest") if t["status"] == "paused"]
    assert paused
    at = _open(operator, "acme/digest")
    button(at, labels.RESUME).click().run()
    _confirm(at, "back")
    (message,) = [s.value for s in at.success]
    assert message.startswith("Resume schedule acme/digest: resumed; next fire ") and "caught-up" not in message
    still = {t["scheduled_for"]: t["status"] for t in _ticks(console, TENANT_A, "digest")}
    assert all(still[t] == "paused" for t in paused)


def test_trigger_now_fires_a_manual_tick(console: sa.Engine, schedules: Schedules, operator: str) -> None:
    at = _open(operator, "globex/nightly")
    button(at, views.TRIGGER_NOW).click().run()
    assert "**Trigger schedule globex/nightly now**" in texts(at)
    _confirm(at, "rerun after the outage")
    (tick,) = _ticks(console, TENANT_B, "nightly")
    assert tick["manual"] and tick["status"] == "fired" and tick["run_id"] is not None
    assert [s.value for s in at.success] == [f"Trigger schedule globex/nightly now: fired now: run {tick['run_id']}."]
    audit = last_audit(console)
    assert (audit["action"], audit["target"], audit["reason"]) == (
        "schedule.trigger",
        "schedule nightly",
        "rerun after the outage",
    )
    (row,) = _frame(at, "scheduled for")
    assert (row["manual"], row["run"]) == ("yes", f"/Runs?run={tick['run_id']}")


def test_back_closes_the_dialog_without_acting(console: sa.Engine, schedules: Schedules, operator: str) -> None:
    at = _open(operator, "acme/poll")
    before = audit_count(console)
    button(at, views.TRIGGER_NOW).click().run()
    button(at, labels.BACK).click().run()
    assert not [b for b in at.button if b.label == labels.CONFIRM]
    assert audit_count(console) == before
    assert len(_ticks(console, TENANT_A, "poll")) == 5


def test_no_schedules_says_how_to_add_one(console: sa.Engine, viewer: str) -> None:
    at = _open(viewer)
    assert "No schedules. Add one with `orch schedules add`." in [i.value for i in at.info]
