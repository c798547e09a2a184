"""Schedules against the real ledger: unique ticks under two schedulers, every overlap and
catch-up policy, pause and resume, triggers, removal, data intervals and bad input."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import firing
from core.domain import errors
from core.domain.auth import Principal, Scope

TYPE = "test.windowed"
T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


def add(engine: sa.Engine, principal: Principal, name: str = "feed", **kw: Any) -> control.ScheduleAdded:
    spec = control.ScheduleSpec(
        tenant=kw.pop("tenant", "acme"),
        name=name,
        target=kw.pop("target", control.Target.of_job(TYPE, {"feed": name})),
        **{"every": MIN, **kw},
    )
    return control.add_schedule(engine, principal, spec, reason="test")


def fire(engine: sa.Engine, principal: Principal, now: dt.datetime) -> firing.PassResult:
    """One scheduler pass's firing at `now`, with what it does after commit."""
    result = firing.fire_due(engine, principal, now=now, batch=100, max_jobs=100)
    firing.ring_and_cancel(engine, principal, control.NoDoorbell(), result)
    return result


def ticks(engine: sa.Engine, principal: Principal, name: str = "feed") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return list(reversed(queries.get_schedule(conn, principal, "acme", name, ticks=1000)["ticks"]))


def statuses(engine: sa.Engine, principal: Principal, name: str = "feed") -> list[str]:
    return [t["status"] for t in ticks(engine, principal, name)]


def finish(engine: sa.Engine, job_id: int, state: str = "succeeded") -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET state = :s, finished_at = now() WHERE id = :id"), {"s": state, "id": job_id}
        )


def test_every_tick_is_one_row_and_fires_once_under_two_schedulers(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, start=T0, overlap="allow_all", catchup="all", catchup_window=dt.timedelta(days=1))
    now = T0 + 10 * MIN + dt.timedelta(seconds=5)
    barrier = threading.Barrier(2)
    results: list[firing.PassResult] = []

    def scheduler() -> None:
        barrier.wait()
        results.append(fire(ledger, principal, now))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A third pass (a restart, a replay of the pass) finds nothing due.
    assert fire(ledger, principal, now).recorded == 0
    rows = ticks(ledger, principal)
    assert [r["scheduled_for"] for r in rows] == [(T0 + k * MIN).isoformat() for k in range(11)]
    assert sum(r.fired for r in results) == 11
    with ledger.connect() as conn:
        jobs = conn.execute(sa.text("SELECT count(*), count(DISTINCT window_id) FROM jobs")).one()
    assert tuple(jobs) == (11, 11)


def test_a_tick_carries_its_data_interval_as_a_window(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, cron="*/15 * * * *", every=None, start=T0)
    fire(ledger, principal, T0 + dt.timedelta(seconds=1))
    (row,) = ticks(ledger, principal)
    assert row["status"] == "fired"
    assert (row["interval_start"], row["scheduled_for"]) == ((T0 - 15 * MIN).isoformat(), T0.isoformat())
    with ledger.connect() as conn:
        span = conn.execute(
            sa.text("SELECT w.span_start, w.span_end, w.state FROM windows w JOIN jobs j ON j.window_id = w.id")
        ).one()
    assert tuple(span) == (T0 - 15 * MIN, T0, "running")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", ["fired", "skipped", "skipped"]),
        ("buffer_one", ["fired", "buffered", "skipped"]),
        ("buffer_all", ["fired", "buffered", "buffered"]),
        ("allow_all", ["fired", "fired", "fired"]),
        ("cancel_other", ["fired", "fired", "fired"]),
    ],
)
def test_overlap_policies_while_the_previous_firing_runs(
    ledger: sa.Engine, principal: Principal, policy: str, expected: list[str]
) -> None:
    add(ledger, principal, start=T0, overlap=policy)
    for k in range(3):
        fire(ledger, principal, T0 + k * MIN + dt.timedelta(seconds=1))
    assert statuses(ledger, principal) == expected
    jobs = [t["job_id"] for t in ticks(ledger, principal) if t["job_id"]]
    if policy == "cancel_other":
        with ledger.connect() as conn:
            states = [
                conn.execute(sa.text("SELECT state FROM jobs WHERE id = :i"), {"i": j}).scalar_one() for j in jobs
            ]
        # Each newer tick canceled the one before (waiting jobs cancel at once).
        assert states == ["canceled", "canceled", "queued"]


def test_buffered_ticks_fire_in_order_once_the_previous_firing_ends(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, start=T0, overlap="buffer_all")
    for k in range(3):
        fire(ledger, principal, T0 + k * MIN + dt.timedelta(seconds=1))
    first = ticks(ledger, principal)[0]["job_id"]
    finish(ledger, first)
    drained = firing.drain_buffers(ledger, principal, batch=100, max_jobs=100)
    assert drained.fired == 1
    rows = ticks(ledger, principal)
    assert [r["status"] for r in rows] == ["fired", "fired", "buffered"]
    # The buffered tick still covers its own interval.
    with ledger.connect() as conn:
        span = conn.execute(
            sa.text("SELECT span_end FROM windows WHERE id = (SELECT window_id FROM jobs WHERE id = :j)"),
            {"j": rows[1]["job_id"]},
        ).scalar_one()
    assert span == T0 + MIN
    # Nothing fires while the buffered one's predecessor runs.
    assert firing.drain_buffers(ledger, principal, batch=100, max_jobs=100).fired == 0


def test_ten_caught_up_ticks_of_a_slow_job_start_one_under_skip(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, start=T0, catchup="all", overlap="skip")
    result = fire(ledger, principal, T0 + 9 * MIN + dt.timedelta(seconds=30))
    assert result.fired == 1
    assert statuses(ledger, principal).count("fired") == 1
    assert statuses(ledger, principal).count("skipped") == 9


@pytest.mark.parametrize(
    ("policy", "fired"),
    [("none", 0), ("latest", 1), ("all", 5)],
)
def test_catch_up_policies_after_downtime(ledger: sa.Engine, principal: Principal, policy: str, fired: int) -> None:
    add(
        ledger,
        principal,
        start=T0,
        every=dt.timedelta(hours=1),
        catchup=policy,
        overlap="allow_all",
        catchup_window=dt.timedelta(hours=5, minutes=15),
        max_catchup=25,
    )
    # Down for 12 hours: ticks T0 .. T0+11h are late (the next is at T0+12h, in the future).
    fire(ledger, principal, T0 + dt.timedelta(hours=11, minutes=30))
    rows = ticks(ledger, principal)
    assert len(rows) == 12
    fired_rows = [r for r in rows if r["status"] == "fired"]
    assert len(fired_rows) == fired
    assert [r["status"] for r in rows].count("missed") == 12 - fired
    if policy == "latest":
        assert fired_rows[0]["scheduled_for"] == (T0 + dt.timedelta(hours=11)).isoformat()
    if policy == "all":  # within the 5 h 15 min window: the newest five
        assert [r["scheduled_for"] for r in fired_rows] == [
            (T0 + dt.timedelta(hours=h)).isoformat() for h in range(7, 12)
        ]


def test_max_catchup_bounds_all(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, start=T0, catchup="all", overlap="allow_all", max_catchup=3)
    fire(ledger, principal, T0 + 20 * MIN + dt.timedelta(seconds=90))
    s = statuses(ledger, principal)
    assert s.count("fired") == 3 and s.count("missed") == 19
    assert s[-3:] == ["fired"] * 3


def test_paused_ticks_are_recorded_and_resume_fires_nothing_unless_asked(
    ledger: sa.Engine, principal: Principal
) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - 30 * MIN
    add(ledger, principal, "p1", start=start, catchup="latest", overlap="allow_all")
    add(ledger, principal, "p2", start=start, catchup="latest", overlap="allow_all")
    for name in ("p1", "p2"):
        control.pause_schedule(ledger, principal, "acme", name, reason="maintenance")
    fire(ledger, principal, dt.datetime.now(dt.UTC))
    assert set(statuses(ledger, principal, "p1")) == {"paused"}
    control.resume_schedule(ledger, principal, "acme", "p1", reason="done", doorbell=control.NoDoorbell())
    assert set(statuses(ledger, principal, "p1")) == {"paused"}
    # Ticks recorded paused before the pause began are not caught up: p2 was paused after
    # `start`, so only those since its pause count; make them all count.
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE schedules SET paused_at = :t WHERE name = 'p2'"), {"t": start - MIN})
    change = control.resume_schedule(
        ledger, principal, "acme", "p2", reason="done", catchup=True, doorbell=control.NoDoorbell()
    )
    assert change.ticks.get("fired") == 1  # latest: the newest paused tick only
    assert statuses(ledger, principal, "p2").count("fired") == 1
    (caught,) = [t for t in ticks(ledger, principal, "p2") if t["status"] == "fired"]
    assert caught["job_id"] is not None and caught["window_id"] is not None
    # The older paused ticks are now what catch-up made of them: missed (backfill-missed finds them).
    assert set(statuses(ledger, principal, "p2")) == {"fired", "missed"}
    with ledger.connect() as conn:
        actions = [r["action"] for r in queries.audit_log(conn, principal, tenant="acme", limit=50)]
    assert {"schedule.pause", "schedule.resume", "schedule.add"} <= set(actions)


def test_trigger_fires_once_now_even_when_paused(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, cron="0 0 1 1 *", every=None)
    control.pause_schedule(ledger, principal, "acme", "feed", reason="r")
    change = control.trigger_schedule(ledger, principal, "acme", "feed", reason="run it", doorbell=control.NoDoorbell())
    assert change.job_id is not None
    (row,) = ticks(ledger, principal)
    assert row["manual"] and row["status"] == "fired" and row["job_id"] == change.job_id


def test_remove_frees_the_name_and_keeps_the_ticks(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal, start=T0)
    fire(ledger, principal, T0 + dt.timedelta(seconds=1))
    control.remove_schedule(ledger, principal, "acme", "feed", reason="gone")
    assert fire(ledger, principal, T0 + 5 * MIN).recorded == 0
    add(ledger, principal, start=T0)  # the name is free again
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schedule_ticks")).scalar_one() == 1


def test_runs_fire_as_runs_with_their_window(ledger: sa.Engine, principal: Principal) -> None:
    doc = {"name": "etl", "jobs": [{"key": "a", "type": TYPE}, {"key": "b", "type": TYPE, "after": ["a"]}]}
    add(ledger, principal, start=T0, target=control.Target.of_run(doc))
    fire(ledger, principal, T0 + dt.timedelta(seconds=1))
    (row,) = ticks(ledger, principal)
    assert row["run_id"] is not None and row["job_id"] is None
    with ledger.connect() as conn:
        w = conn.execute(
            sa.text("SELECT w.span_end FROM windows w JOIN runs r ON r.window_id = w.id WHERE r.id = :r"),
            {"r": row["run_id"]},
        ).scalar_one()
    assert w == T0


def test_a_failing_firing_is_recorded_skipped_and_does_not_block_others(
    ledger: sa.Engine, principal: Principal
) -> None:
    add(ledger, principal, "ok", start=T0)
    add(ledger, principal, "refused", start=T0, tenant="globex")
    control.set_backlog_limit(ledger, principal, tenant="globex", limit=1, policy="refuse", reason="test")
    control.submit(ledger, principal, control.JobSpec("globex", TYPE), doorbell=control.NoDoorbell())
    fire(ledger, principal, T0 + dt.timedelta(seconds=1))
    assert statuses(ledger, principal, "ok") == ["fired"]
    with ledger.connect() as conn:
        s = queries.get_schedule(conn, principal, "globex", "refused")
    assert s["ticks"][0]["status"] == "skipped" and "backlog" in s["ticks"][0]["note"]
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM windows")).scalar_one() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *", "every": None}, "bad cron expression"),
        ({"cron": "0 0 31 2 *", "every": None}, "day-of-month"),
        ({"cron": "* * * *", "every": None}, "5 fields"),
        ({"cron": "0 * * * *", "every": None, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 * * * *"}, "not both"),
        ({"every": dt.timedelta(0)}, "between 1s"),
        ({"overlap": "sometimes"}, "overlap policy"),
        ({"catchup": "maybe"}, "catch-up policy"),
        ({"start": T0, "end": T0}, "before --end"),
        ({"end": T0}, "in the past"),
        ({"target": control.Target.of_job("no.such.type")}, "unknown job type"),
        ({"target": control.Target.of_job(TYPE, source="nope")}, "no source"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    ledger: sa.Engine, principal: Principal, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.OrchError) as info:
        add(ledger, principal, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schedules")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one() == 0


def test_a_taken_name_and_a_missing_reason_are_refused(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal)
    with pytest.raises(errors.InvalidInput, match="already"):
        add(ledger, principal)
    spec = control.ScheduleSpec(tenant="acme", name="x", target=control.Target.of_job(TYPE), every=MIN)
    with pytest.raises(errors.ReasonRequired):
        control.add_schedule(ledger, principal, spec, reason=None)


def test_operate_scope_is_needed(ledger: sa.Engine, principal: Principal) -> None:
    add(ledger, principal)
    reader = Principal("reader", frozenset({Scope.READ}), None)
    with pytest.raises(errors.Forbidden):
        control.pause_schedule(ledger, reader, "acme", "feed", reason="r")
    with pytest.raises(errors.Forbidden):
        add(ledger, reader, "other")


def test_ticks_are_pruned_past_retention_keeping_the_newest_100(ledger: sa.Engine, principal: Principal) -> None:
    from core.ledger import schedules as ledger_schedules

    add(ledger, principal, start=T0, catchup="none")
    fire(ledger, principal, T0 + 150 * MIN)
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE schedule_ticks SET recorded_at = now() - interval '40 days'"))
        pruned = ledger_schedules.prune_ticks(conn, days=30, limit=10_000)
    assert pruned == 51
    kept = ticks(ledger, principal)
    assert len(kept) == 100 and kept[-1]["scheduled_for"] == (T0 + 150 * MIN).isoformat()


def test_due_schedules_come_from_a_partial_index_on_the_next_fire_time(ledger: sa.Engine) -> None:
    with ledger.connect() as conn:
        idx = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'schedules_due_idx'")).scalar()
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sa.text(
                    "EXPLAIN SELECT id FROM schedules WHERE next_fire_at IS NOT NULL AND next_fire_at <= now() "
                    "ORDER BY next_fire_at LIMIT 100"
                )
            )
        )
    assert idx is not None and "(next_fire_at)" in idx and "WHERE (next_fire_at IS NOT NULL)" in idx
    assert "schedules_due_idx" in plan


def test_downtime_longer_than_the_tick_cap_records_the_newest_ticks(ledger: sa.Engine, principal: Principal) -> None:
    from core.domain import schedules as sched

    add(ledger, principal, every=dt.timedelta(seconds=1), start=T0, catchup="latest", overlap="allow_all")
    now = T0 + dt.timedelta(seconds=sched.MAX_LATE_TICKS + 5000)
    result = fire(ledger, principal, now)
    # The newest ticks are recorded; those at most ON_TIME late (61 of a 1 s schedule) fire.
    on_time = int(sched.ON_TIME.total_seconds()) + 1
    assert result.recorded == sched.MAX_LATE_TICKS and result.fired == on_time
    rows = ticks(ledger, principal)
    assert rows[-1]["scheduled_for"] == now.replace(microsecond=0).isoformat()
    assert [r["status"] for r in rows[-on_time:]] == ["fired"] * on_time
    assert {r["status"] for r in rows[:-on_time]} == {"missed"}


def test_resume_fires_nothing_even_when_no_pass_ran_during_the_pause(ledger: sa.Engine, principal: Principal) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - 10 * MIN
    add(ledger, principal, start=start, catchup="all", overlap="allow_all")
    control.pause_schedule(ledger, principal, "acme", "feed", reason="r")
    control.resume_schedule(ledger, principal, "acme", "feed", reason="r", doorbell=control.NoDoorbell())
    assert set(statuses(ledger, principal)) == {"paused"} and len(statuses(ledger, principal)) >= 10
    assert fire(ledger, principal, dt.datetime.now(dt.UTC)).fired == 0
    with ledger.connect() as conn:
        nxt = conn.execute(sa.text("SELECT next_fire_at FROM schedules")).scalar_one()
    assert nxt > dt.datetime.now(dt.UTC)
