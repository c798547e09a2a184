"""Schedules and backfills with real `orch worker` and `orch scheduler` processes: a schedule
whose ticks fire and whose handlers read their data interval and move the watermark, and a
backfill that runs its windows and pauses on its own while live work piles up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain.auth import Principal
from tests.conftest import Services, Stack, running_stack, wait_until

pytestmark = pytest.mark.slow

T = "sched-workers"
TYPE = "test.windowed"
H = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def stack(services: Services, engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(services, tmp_path_factory.mktemp("sched-workers"), processes=1, threads=4) as s:
        yield s


def get_schedule(engine: sa.Engine, principal: Principal, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return queries.get_schedule(conn, principal, T, name, ticks=100)


def test_a_schedule_fires_and_its_jobs_read_their_data_interval(
    engine: sa.Engine, principal: Principal, stack: Stack
) -> None:
    spec = control.ScheduleSpec(
        tenant=T, name="every2s", target=control.Target.of_job(TYPE, {"feed": "live"}), every=dt.timedelta(seconds=2)
    )
    control.add_schedule(engine, principal, spec, reason="worker test")

    def three_done() -> list[dict[str, Any]] | None:
        stack.check_alive()
        fired = [t for t in get_schedule(engine, principal, "every2s")["ticks"] if t["work_state"] == "succeeded"]
        return fired if len(fired) >= 3 else None

    done = wait_until(three_done, timeout=60, what="three ticks to fire and succeed")
    control.pause_schedule(engine, principal, T, "every2s", reason="end of test")
    with engine.connect() as conn:
        results = {
            int(r[0]): r[1]
            for r in conn.execute(
                sa.text("SELECT job_id, result FROM job_results WHERE job_id = ANY(:i)"),
                {"i": [t["job_id"] for t in done]},
            )
        }
    for t in done:
        assert results[t["job_id"]]["interval"] == [t["interval_start"], t["scheduled_for"]]
        start, end = (dt.datetime.fromisoformat(x) for x in (t["interval_start"], t["scheduled_for"]))
        assert end - start == dt.timedelta(seconds=2)
    # Each handler reported its interval's end: the watermark is the newest of them, and the
    # windowed stream has no hole before it.
    with engine.connect() as conn:
        (mark,) = [m for m in queries.list_watermarks(conn, principal, tenant=T) if m["job_type"] == TYPE]
    newest = max(dt.datetime.fromisoformat(t["scheduled_for"]) for t in done)
    assert dt.datetime.fromisoformat(mark["watermark"]) >= newest - dt.timedelta(seconds=2)
    assert dt.datetime.fromisoformat(mark["reported"]) >= newest


def test_a_backfill_runs_and_pauses_under_live_load(engine: sa.Engine, principal: Principal, stack: Stack) -> None:
    day = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - 48 * H
    plan = control.create_backfill(
        engine,
        principal,
        control.BackfillSpec(
            tenant=T,
            target=control.Target.of_job(TYPE, {"feed": "history", "seconds": 0.05}),
            start=day,
            end=day + 12 * H,
            window=H,
            max_active=2,
            pause_above=20,
        ),
        reason="worker test",
        ticket="T-1",
    )
    bid = plan.backfill_id or 0

    def show() -> dict[str, Any]:
        stack.check_alive()
        with engine.connect() as conn:
            return queries.get_backfill(conn, principal, bid)

    wait_until(lambda: show()["windows"].get("succeeded", 0) >= 2, timeout=60, what="two windows to succeed")
    # Live work piles up (slow jobs, more than the limit): the backfill pauses on its own.
    live = [control.JobSpec(T, TYPE, {"seconds": 0.5}) for _ in range(60)]
    control.submit_many(engine, principal, live, doorbell=stack.doorbell)
    paused = wait_until(
        lambda: show()["backfill"]["state"] == "paused" and show(), timeout=30, what="the backfill to pause"
    )
    assert "live backlog" in paused["backfill"]["wait_reason"]
    # As the live backlog drains below half of the limit, it resumes and finishes.
    done = wait_until(
        lambda: show()["backfill"]["state"] == "succeeded" and show(), timeout=120, what="the backfill to finish"
    )
    assert done["windows"] == {"succeeded": 12}
    with engine.connect() as conn:
        history = [
            r["action"]
            for r in queries.audit_log(conn, principal, tenant=T, limit=100)
            if r["action"].startswith("backfill")
        ]
    assert history == ["backfill.create"]  # pausing on its own is not an operator action


def test_a_result_can_carry_the_watermark(engine: sa.Engine, principal: Principal, stack: Stack) -> None:
    source = "wm-feed"
    control.add_source(engine, principal, tenant=T, name=source, host="feed.example", reason="test")
    ok = control.submit(
        engine,
        principal,
        control.JobSpec(T, TYPE, {"result_watermark": "2026-01-02T03:00:00Z"}, source=source),
        doorbell=stack.doorbell,
    )
    bad = control.submit(
        engine, principal, control.JobSpec(T, TYPE, {"result_watermark": "yesterday"}), doorbell=stack.doorbell
    )

    def ended() -> dict[int, str] | None:
        stack.check_alive()
        with engine.connect() as conn:
            rows = dict(
                conn.execute(sa.text("SELECT id, state FROM jobs WHERE id IN (:a, :b)"), {"a": ok, "b": bad}).all()
            )
        return rows if all(s in ("succeeded", "dead_lettered") for s in rows.values()) and len(rows) == 2 else None

    states = wait_until(ended, timeout=60, what="both jobs to end")
    assert states == {ok: "succeeded", bad: "dead_lettered"}
    with engine.connect() as conn:
        marks = [m for m in queries.list_watermarks(conn, principal, tenant=T) if m["source"] == source]
    assert [m["watermark"] for m in marks] == ["2026-01-02T03:00:00+00:00"]
