"""Backfills and watermarks against the real ledger: coverage as a union of intervals, no
window in flight twice (even from two backfills created at once), live work first, the
lifecycle, watermark holes, and the CLI's JSON."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import backfills
from core.domain import errors
from core.domain.auth import Principal, Scope
from core.ledger import jobs as L
from tests.conftest import Services
from tests.integration.test_cli import ok_json, orch

TYPE = "test.windowed"
DAY = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
WORKER = "bf-worker"


def spec(**kw: Any) -> control.BackfillSpec:
    base: dict[str, Any] = {
        "tenant": "acme",
        "target": control.Target.of_job(TYPE, {"feed": "f"}),
        "start": DAY,
        "end": DAY + 24 * H,
        "window": H,
    }
    base.update(kw)
    return control.BackfillSpec(**base)


def create(engine: sa.Engine, principal: Principal, **kw: Any) -> control.BackfillPlan:
    dry = kw.pop("dry_run", False)
    return control.create_backfill(engine, principal, spec(**kw), reason="feed down", ticket="INC-1", dry_run=dry)


def pump(engine: sa.Engine, principal: Principal) -> backfills.PumpResult:
    return backfills.pump_backfills(engine, principal, batch=100, max_jobs=100)


def claim(engine: sa.Engine, limit: int = 100) -> list[sa.RowMapping]:
    with engine.begin() as conn:
        return L.claim_and_start_jobs(conn, queue="default", limit=limit, owner=WORKER, job_types=[TYPE])


def finish(engine: sa.Engine, rows: Sequence[sa.RowMapping], *, fail: bool = False) -> None:
    if not rows:
        return
    ids, leases = [r["id"] for r in rows], [r["lease_id"] for r in rows]
    with engine.begin() as conn:
        if fail:
            n = len(rows)
            L.fail_final_jobs(conn, ids, leases, ["unknown"] * n, ["boom"] * n, ["fatal"] * n, actor=WORKER)
        else:
            L.succeed_jobs(conn, ids, leases, actor=WORKER, results=[None] * len(rows))


def windows(engine: sa.Engine, backfill_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(queries.get_backfill(conn, control_principal(), backfill_id)["windows"])


def control_principal() -> Principal:
    from core.domain.auth import local_principal

    return local_principal("tests")


def run_backfill(engine: sa.Engine, principal: Principal, fail_starts: set[dt.datetime] = frozenset()) -> None:
    """Pump and work until the backfill has nothing left to start or run."""
    for _ in range(200):
        pump(engine, principal)
        rows = claim(engine)
        if not rows:
            with engine.connect() as conn:
                active = conn.execute(
                    sa.text("SELECT count(*) FROM backfills WHERE state IN ('planned', 'running', 'paused')")
                ).scalar_one()
            if not active:
                return
            continue
        with engine.connect() as conn:
            starts = dict(
                conn.execute(
                    sa.text(
                        "SELECT j.id, w.span_start FROM jobs j JOIN windows w ON w.id = j.window_id"
                        " WHERE j.id = ANY(:i)"
                    ),
                    {"i": [r["id"] for r in rows]},
                ).all()
            )
        finish(engine, [r for r in rows if starts.get(r["id"]) not in fail_starts])
        finish(engine, [r for r in rows if starts.get(r["id"]) in fail_starts], fail=True)
    pytest.fail("the backfill did not end")


def test_a_backfill_runs_every_window_below_live_priority_at_most_max_active(
    ledger: sa.Engine, principal: Principal
) -> None:
    plan = create(ledger, principal, max_active=3)
    assert (plan.windows, plan.to_run, plan.skipped_done, plan.skipped_in_flight) == (24, 24, 0, 0)
    assert pump(ledger, principal).started == 3
    assert pump(ledger, principal).started == 0  # all slots busy
    with ledger.connect() as conn:
        prios = conn.execute(sa.text("SELECT DISTINCT priority FROM jobs")).scalars().all()
        state = queries.get_backfill(conn, principal, plan.backfill_id or 0)["backfill"]
    assert prios == [-1000]
    assert state["state"] == "running" and "3 of max_active 3" in state["wait_reason"]
    run_backfill(ledger, principal)
    with ledger.connect() as conn:
        shown = queries.get_backfill(conn, principal, plan.backfill_id or 0)
    assert shown["backfill"]["state"] == "succeeded" and shown["windows"] == {"succeeded": 24} and shown["eta_s"] == 0
    # The stream is complete over the range: the watermark is its end, with no holes.
    with ledger.connect() as conn:
        (mark,) = queries.list_watermarks(conn, principal, tenant="acme")
    assert mark["watermark"] == (DAY + 24 * H).isoformat() and mark["holes"] == []


def test_coverage_is_a_union_of_intervals_not_exact_matches(ledger: sa.Engine, principal: Principal) -> None:
    # Done first in 2 h and 30 min windows; a 1 h plan over the same day is covered where they are.
    create(ledger, principal, start=DAY, end=DAY + 6 * H, window=2 * H)
    create(ledger, principal, start=DAY + 6 * H, end=DAY + 8 * H, window=dt.timedelta(minutes=30))
    run_backfill(ledger, principal)
    plan = create(ledger, principal, dry_run=True)
    assert (plan.to_run, plan.skipped_done) == (16, 8)
    assert plan.backfill_id is None
    assert [d for _, _, d in plan.preview[:9]] == ["done"] * 8 + ["run"]


def test_reprocess_missing_failed_and_all(ledger: sa.Engine, principal: Principal) -> None:
    create(ledger, principal, start=DAY, end=DAY + 4 * H)
    run_backfill(ledger, principal, fail_starts={DAY + H})
    missing = create(ledger, principal, start=DAY, end=DAY + 6 * H, dry_run=True)
    failed = create(ledger, principal, start=DAY, end=DAY + 6 * H, reprocess="failed", dry_run=True)
    every = create(ledger, principal, start=DAY, end=DAY + 6 * H, reprocess="all", dry_run=True)
    assert (missing.to_run, missing.skipped_done, missing.skipped_failed) == (2, 3, 1)
    assert (failed.to_run, failed.skipped_done, failed.skipped_failed) == (3, 3, 0)
    assert (every.to_run, every.skipped_done) == (6, 0)
    with ledger.connect() as conn:
        (bf,) = [b for b in queries.list_backfills(conn, principal) if b["state"] != "succeeded"]
    assert bf["state"] == "failed" and bf["windows"] == {"succeeded": 3, "failed": 1}


def test_two_backfills_created_at_the_same_moment_never_share_a_window(ledger: sa.Engine, principal: Principal) -> None:
    barrier = threading.Barrier(2)
    plans: list[control.BackfillPlan] = []

    def make(start_h: int) -> None:
        barrier.wait()
        plans.append(create(ledger, principal, start=DAY + start_h * H, end=DAY + (start_h + 16) * H))

    threads = [threading.Thread(target=make, args=(h,)) for h in (0, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p.to_run for p in plans) == 24  # hours 0..23, the overlap 8..15 once
    assert sorted(p.skipped_in_flight for p in plans) == [0, 8]
    with ledger.connect() as conn:
        overlaps = conn.execute(
            sa.text(
                "SELECT count(*) FROM windows a JOIN windows b ON a.id < b.id AND a.stream_id = b.stream_id "
                "AND tstzrange(a.span_start, a.span_end) && tstzrange(b.span_start, b.span_end)"
            )
        ).scalar_one()
    assert overlaps == 0


def test_the_database_refuses_a_second_open_window_over_the_same_span(ledger: sa.Engine, principal: Principal) -> None:
    create(ledger, principal, start=DAY, end=DAY + 2 * H)
    with ledger.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="windows_open_disjoint"):
        conn.execute(
            sa.text(
                "INSERT INTO windows (stream_id, tenant_id, span_start, span_end, claim, state) "
                "SELECT stream_id, tenant_id, span_start + interval '30 minutes', span_end, "
                "orch_window_claim(stream_id, span_start + interval '30 minutes', span_end), 'planned' "
                "FROM windows LIMIT 1"
            )
        )


def test_live_backlog_pauses_a_backfill_and_half_of_it_resumes_it(ledger: sa.Engine, principal: Principal) -> None:
    plan = create(ledger, principal, pause_above=10, max_active=2)
    live = control.submit_many(
        ledger, principal, [control.JobSpec("acme", TYPE) for _ in range(11)], doorbell=control.NoDoorbell()
    )
    pump(ledger, principal)
    with ledger.connect() as conn:
        b = queries.get_backfill(conn, principal, plan.backfill_id or 0)
    assert b["backfill"]["state"] == "paused" and "live backlog" in b["backfill"]["wait_reason"]
    assert b["windows"] == {"planned": 24}
    # Live jobs go first: the claim takes them before any backfill job.
    with ledger.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = ANY(:i)"),
            {"i": live.job_ids[:5]},
        )
    pump(ledger, principal)  # 6 ready: above half of 10
    assert windows(ledger, plan.backfill_id or 0) == {"planned": 24}
    with ledger.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = ANY(:i)"),
            {"i": live.job_ids[5:7]},
        )
    assert pump(ledger, principal).started == 2  # 4 ready: below half, it resumes
    rows = claim(ledger, limit=5)
    assert [r["id"] for r in rows[:4]] == sorted(live.job_ids[7:])


def test_operator_pause_resume_and_cancel(ledger: sa.Engine, principal: Principal) -> None:
    plan = create(ledger, principal)
    bid = plan.backfill_id or 0
    pump(ledger, principal)
    control.pause_backfill(ledger, principal, bid, reason="hold")
    assert pump(ledger, principal).started == 0
    with ledger.connect() as conn:
        assert queries.get_backfill(conn, principal, bid)["backfill"]["state"] == "paused"
    control.resume_backfill(ledger, principal, bid, reason="go")
    change = control.cancel_backfill(ledger, principal, bid, reason="wrong range", terminate_running=True)
    assert change.state == "canceled" and change.terminated == 2
    assert windows(ledger, bid) == {"canceled": 24}
    with pytest.raises(errors.InvalidTransition):
        control.pause_backfill(ledger, principal, bid, reason="again")
    with ledger.connect() as conn:
        actions = {r["action"] for r in queries.audit_log(conn, principal, tenant="acme", limit=50)}
    assert {"backfill.create", "backfill.pause", "backfill.resume", "backfill.cancel"} <= actions


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"start": DAY + H, "end": DAY}, "is not before"),
        ({"end": DAY + 90 * dt.timedelta(minutes=1)}, "does not divide"),
        ({"start": DAY - 200_000 * H}, "at most 100000"),
        ({"end": dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + 48 * H}, "in the future"),
        ({"reprocess": "some"}, "--reprocess"),
        ({"target": control.Target.of_job("no.such")}, "unknown job type"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    ledger: sa.Engine, principal: Principal, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        create(ledger, principal, **kw)
    assert message in str(info.value)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM backfills")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM windows")).scalar_one() == 0


def test_reason_ticket_and_scope(ledger: sa.Engine, principal: Principal) -> None:
    with pytest.raises(errors.ReasonRequired, match="ticket"):
        control.create_backfill(ledger, principal, spec(), reason="why", ticket=None)
    with pytest.raises(errors.InvalidInput, match="at most 128"):
        control.create_backfill(ledger, principal, spec(), reason="why", ticket="x" * 129)
    operator = Principal("op", frozenset({Scope.READ, Scope.OPERATE}), None)
    with pytest.raises(errors.Forbidden, match="orch:backfill"):
        control.create_backfill(ledger, operator, spec(), reason="why", ticket="T")


def test_watermark_holes_and_done_windows_outlive_their_jobs(ledger: sa.Engine, principal: Principal) -> None:
    plan = create(ledger, principal, start=DAY, end=DAY + 6 * H)
    run_backfill(ledger, principal, fail_starts={DAY + 2 * H, DAY + 3 * H})
    with ledger.connect() as conn:
        (mark,) = queries.list_watermarks(conn, principal)
    assert mark["watermark"] == (DAY + 2 * H).isoformat()
    assert mark["holes"] == [[(DAY + 2 * H).isoformat(), (DAY + 4 * H).isoformat()]]
    # Retention prunes the jobs; what is done stays done.
    with ledger.begin() as conn:
        conn.execute(sa.text("TRUNCATE jobs, job_history, job_results CASCADE"))
    again = create(ledger, principal, start=DAY, end=DAY + 6 * H, dry_run=True)
    assert (again.skipped_done, again.skipped_failed, again.to_run) == (4, 2, 0)
    # Filling the hole moves the watermark over everything done beyond it.
    create(ledger, principal, start=DAY, end=DAY + 6 * H, reprocess="failed")
    run_backfill(ledger, principal)
    with ledger.connect() as conn:
        (mark,) = queries.list_watermarks(conn, principal)
    assert mark["watermark"] == (DAY + 6 * H).isoformat() and mark["holes"] == []
    assert plan.backfill_id is not None


def test_reported_watermarks_only_move_forward_and_say_who_moved_them(ledger: sa.Engine, principal: Principal) -> None:
    with ledger.begin() as conn:
        tid = L.ensure_tenants(conn, ["acme"])["acme"]
        kw: dict[str, Any] = {"tenant_id": tid, "source_id": None, "job_type": "feed.fetch"}
        assert control.report_watermark(conn, at=DAY + 2 * H, actor="w1", job_id=7, **kw)
        assert not control.report_watermark(conn, at=DAY + H, actor="w2", job_id=8, **kw)
        with pytest.raises(errors.InvalidInput, match="ahead"):
            control.report_watermark(conn, at=dt.datetime.now(dt.UTC) + 48 * H, actor="w3", **kw)
    with ledger.connect() as conn:
        (mark,) = queries.list_watermarks(conn, principal)
    assert mark["watermark"] == (DAY + 2 * H).isoformat() and mark["moved_by"] == "w1"
    assert mark["lag_s"] > 0 and mark["holes"] == []


def test_backfill_missed_turns_missed_ticks_into_one_backfill(ledger: sa.Engine, principal: Principal) -> None:
    from core.control import firing

    t0 = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - 10 * H
    spec_ = control.ScheduleSpec(
        tenant="acme",
        name="hourly",
        target=control.Target.of_job(TYPE, {"feed": "h"}),
        cron="0 * * * *",
        start=t0,
        catchup="none",
    )
    control.add_schedule(ledger, principal, spec_, reason="r")
    firing.fire_due(ledger, principal, batch=100, max_jobs=100)
    plan = control.backfill_missed(ledger, principal, "acme", "hourly", reason="outage", ticket="INC-9")
    assert plan.to_run == plan.windows >= 10
    with ledger.connect() as conn:
        s = queries.get_schedule(conn, principal, "acme", "hourly", ticks=100)
    assert {t["backfill_id"] for t in s["ticks"] if t["status"] == "missed"} == {plan.backfill_id}
    with pytest.raises(errors.InvalidInput, match="no missed ticks"):
        control.backfill_missed(ledger, principal, "acme", "hourly", reason="outage", ticket="INC-9")


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_backfill_and_watermarks_json(services: Services, ledger: sa.Engine, principal: Principal) -> None:
    args = [
        "--tenant",
        "acme",
        "--type",
        TYPE,
        "--payload",
        '{"feed": "f"}',
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--window",
        "1h",
    ]
    dry = ok_json(orch(services, "backfill", "create", *args, "--dry-run", "--json"))
    assert dry["backfill_id"] is None and dry["to_run"] == 24
    made = orch(
        services, "backfill", "create", *args, "--reason", "feed down", "--ticket", "INC-1", "--json", "--progress"
    )
    out = ok_json(made)
    assert set(out) >= {"backfill_id", "windows", "to_run", "skipped_done", "skipped_in_flight"}
    assert out["to_run"] == 24 and "100%" in made.stderr
    again = ok_json(orch(services, "backfill", "create", *args, "--reason", "r", "--ticket", "T", "--json"))
    assert (again["to_run"], again["skipped_in_flight"]) == (0, 24)
    shown = ok_json(orch(services, "backfill", "show", str(out["backfill_id"]), "--json"))
    assert set(shown) == {"backfill", "windows", "eta_s"} and shown["backfill"]["state"] == "planned"
    assert shown["windows"] == {"planned": 24}
    listed = orch(services, "backfill", "list")
    assert listed.returncode == 0 and "0/24" in listed.stdout
    bad = orch(services, "backfill", "create", *args[:-2], "--window", "7h", "--reason", "r", "--ticket", "T")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not divide" in bad.stderr
    paused = ok_json(orch(services, "backfill", "pause", str(out["backfill_id"]), "--reason", "hold", "--json"))
    assert paused["state"] == "paused"
    marks = ok_json(orch(services, "watermarks", "list", "--json"))
    assert [(m["tenant"], m["source"], m["job_type"]) for m in marks["watermarks"]] == [("acme", None, TYPE)]
    assert set(marks["watermarks"][0]) >= {"tenant", "source", "job_type", "watermark", "lag_s", "holes"}


def test_cli_schedules(services: Services, ledger: sa.Engine) -> None:
    added = ok_json(
        orch(
            services,
            "schedules",
            "add",
            "--tenant",
            "acme",
            "--name",
            "feed",
            "--cron",
            "*/15 * * * *",
            "--timezone",
            "Europe/Berlin",
            "--type",
            TYPE,
            "--start",
            "2026-01-01T00:00:00Z",
            "--catchup",
            "none",
            "--reason",
            "new feed",
            "--json",
        )
    )
    assert added["trigger"] == "*/15 * * * * (Europe/Berlin)"
    taken = orch(
        services,
        "schedules",
        "add",
        "--tenant",
        "acme",
        "--name",
        "feed",
        "--every",
        "30s",
        "--type",
        TYPE,
        "--reason",
        "r",
    )
    assert taken.returncode == 2 and "already" in taken.stderr
    listed = ok_json(orch(services, "schedules", "list", "--json"))
    assert [s["name"] for s in listed["schedules"]] == ["feed"]
    trig = ok_json(orch(services, "schedules", "trigger", "feed", "--tenant", "acme", "--reason", "now", "--json"))
    assert trig["job_id"] is not None
    shown = ok_json(orch(services, "schedules", "show", "feed", "--tenant", "acme", "--json"))
    assert len(shown["next_fires"]) == 5 and all({"utc", "local"} <= set(n) for n in shown["next_fires"])
    assert shown["ticks"][0]["status"] == "fired" and shown["ticks"][0]["job_id"] == trig["job_id"]
    for cmd in ("pause", "resume", "remove"):
        r = orch(services, "schedules", cmd, "feed", "--tenant", "acme", "--reason", "r")
        assert r.returncode == 0, r.stderr
    gone = orch(services, "schedules", "show", "feed", "--tenant", "acme")
    assert gone.returncode == 3
    no_reason = orch(services, "schedules", "add", "--tenant", "acme", "--name", "x", "--every", "1m", "--type", TYPE)
    assert no_reason.returncode == 7


def test_a_backfill_of_another_payload_does_not_drag_a_live_watermark(ledger: sa.Engine, principal: Principal) -> None:
    from core.control import firing

    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - 3 * H
    live = control.ScheduleSpec(
        tenant="acme",
        name="live",
        target=control.Target.of_job(TYPE, {"feed": "live"}),
        every=H,
        start=start,
        catchup="all",
        overlap="allow_all",
    )
    control.add_schedule(ledger, principal, live, reason="r")
    firing.fire_due(ledger, principal, batch=100, max_jobs=100)
    run_backfill(ledger, principal)  # no backfill yet: this works the fired ticks
    for rows in iter(lambda: claim(ledger), []):
        finish(ledger, rows)
    create(ledger, principal, target=control.Target.of_job(TYPE, {"feed": "history"}))  # March: months behind
    with ledger.connect() as conn:
        (mark,) = queries.list_watermarks(conn, principal)
    assert mark["watermark"] == (start + 3 * H).isoformat()  # the live feed's last tick, not March


def test_backfill_scope_terminates_its_own_running_windows(ledger: sa.Engine, principal: Principal) -> None:
    plan = create(ledger, principal)
    pump(ledger, principal)
    backfiller = Principal("bf", frozenset({Scope.READ, Scope.BACKFILL}), frozenset({"acme"}))
    change = control.cancel_backfill(ledger, backfiller, plan.backfill_id or 0, reason="stop", terminate_running=True)
    assert change.terminated == 2
    with ledger.connect() as conn:
        states = conn.execute(sa.text("SELECT DISTINCT state FROM jobs")).scalars().all()
    assert states == ["canceled"]


def test_secrets_in_targets_are_masked_in_reads_and_audit(ledger: sa.Engine, principal: Principal) -> None:
    target = control.Target.of_job(TYPE, {"feed": "f", "api_key": "s3cr3t"})
    create(ledger, principal, target=target)
    spec_ = control.ScheduleSpec(tenant="acme", name="s", target=target, every=H)
    control.add_schedule(ledger, principal, spec_, reason="r")
    with ledger.connect() as conn:
        shown = [
            queries.list_schedules(conn, principal)[0]["target"],
            queries.get_schedule(conn, principal, "acme", "s")["target"],
            queries.list_backfills(conn, principal)[0]["target"],
            queries.get_backfill(conn, principal, 1)["backfill"]["target"],
        ]
        audit = conn.execute(sa.text("SELECT details::text FROM audit_log")).scalars().all()
    assert all(t["payload"] == {"feed": "f", "api_key": "***"} for t in shown)
    assert audit and not any("s3cr3t" in a for a in audit)


def test_a_backfill_of_runs_starts_one_run_per_window(ledger: sa.Engine, principal: Principal) -> None:
    doc = {"name": "etl", "jobs": [{"key": "a", "type": TYPE}, {"key": "b", "type": TYPE, "after": ["a"]}]}
    plan = create(ledger, principal, target=control.Target.of_run(doc), end=DAY + 3 * H)
    assert pump(ledger, principal).started == 2
    with ledger.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.id, w.span_start, (SELECT array_agg(DISTINCT j.priority) FROM jobs j WHERE j.run_id = r.id)"
                " FROM runs r JOIN windows w ON w.id = r.window_id ORDER BY w.span_start"
            )
        ).all()
    assert [r[1] for r in rows] == [DAY, DAY + H] and all(r[2] == [-1000] for r in rows)
    run_backfill(ledger, principal)
    with ledger.connect() as conn:
        shown = queries.get_backfill(conn, principal, plan.backfill_id or 0)
        (mark,) = queries.list_watermarks(conn, principal)
    assert shown["backfill"]["state"] == "succeeded" and shown["windows"] == {"succeeded": 3}
    assert (mark["job_type"], mark["watermark"]) == ("run:etl", (DAY + 3 * H).isoformat())


def test_cli_schedule_of_a_run_file(services: Services, ledger: sa.Engine, tmp_path: Any) -> None:
    import json

    path = tmp_path / "etl.json"
    path.write_text(json.dumps({"jobs": [{"key": "a", "type": TYPE}]}))
    added = ok_json(
        orch(
            services,
            "schedules",
            "add",
            "--tenant",
            "acme",
            "--name",
            "etl",
            "--every",
            "1h",
            "--run-file",
            str(path),
            "--reason",
            "r",
            "--json",
        )
    )
    assert added["trigger"] == "every 1h"
    shown = ok_json(orch(services, "schedules", "show", "etl", "--tenant", "acme", "--json"))
    assert shown["target_kind"] == "run" and shown["target"]["name"] == "etl"
    both = orch(
        services,
        "schedules",
        "add",
        "--tenant",
        "acme",
        "--name",
        "x",
        "--every",
        "1h",
        "--run-file",
        str(path),
        "--type",
        TYPE,
        "--reason",
        "r",
    )
    assert both.returncode == 2 and "not both" in both.stderr
