"""queries.run_time_summary's jobs/s is over the time its data covers: from the first job
finished in the window to now, never the whole window of a ledger younger than it."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain.auth import Principal
from core.ledger import jobs as L
from core.queries.jobs import MIN_RATE_SPAN_S

NO_BELL = control.NoDoorbell()
HOUR_S = 3600


def _finished(
    engine: sa.Engine, principal: Principal, tenant: str, ages_s: list[float], job_type: str = "noop"
) -> None:
    """One succeeded job of `tenant` per age, finished that many seconds ago."""
    ids = control.submit_many(
        engine, principal, [control.JobSpec(tenant, job_type)] * len(ages_s), doorbell=NO_BELL
    ).job_ids
    with engine.begin() as conn:
        rows = L.claim_and_start_jobs(conn, queue="default", limit=len(ids), owner="t", job_types=[job_type])
        assert sorted(r["id"] for r in rows) == sorted(ids)
        L.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="t")
        for job_id, age in zip(sorted(ids), ages_s, strict=True):
            conn.execute(
                sa.text(
                    "UPDATE jobs SET finished_at = now() - make_interval(secs => :age),"
                    " started_at = now() - make_interval(secs => :age + 0.05) WHERE id = :id"
                ),
                {"age": age, "id": job_id},
            )


def _summary(engine: sa.Engine, principal: Principal, **kw: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return queries.run_time_summary(conn, principal, **kw)


def test_two_minutes_after_start_the_rate_is_over_two_minutes(ledger: sa.Engine, principal: Principal) -> None:
    # 31 jobs, one every 4 s over the last two minutes: 0.26/s, not 31/3600 = 0.0086/s.
    _finished(ledger, principal, "acme", [4.0 * i for i in range(31)])
    summary = _summary(ledger, principal, since_s=HOUR_S)
    assert summary["finished"] == 31
    assert summary["covered_s"] == pytest.approx(120, abs=2)
    assert summary["jobs_per_s"] == pytest.approx(31 / 120, rel=0.02)


def test_a_first_job_long_ago_in_the_window_is_placed_within_a_percent(ledger: sa.Engine, principal: Principal) -> None:
    _finished(ledger, principal, "acme", [3000.0, 10.0, 5.0])
    summary = _summary(ledger, principal, since_s=HOUR_S)
    assert 3000 <= float(summary["covered_s"]) <= 3000 * 1.01 + 2
    assert summary["jobs_per_s"] == pytest.approx(3 / 3000, rel=0.015)


def test_jobs_before_the_window_do_not_count_and_a_moment_is_a_minute(ledger: sa.Engine, principal: Principal) -> None:
    assert _summary(ledger, principal, since_s=HOUR_S) == {
        "finished": 0,
        "covered_s": 0.0,
        "rate_span_s": MIN_RATE_SPAN_S,
        "jobs_per_s": 0.0,
        "p50_duration_s": None,
        "p95_duration_s": None,
    }
    # Two jobs just now, one two hours ago (outside the hour): two jobs over a minute.
    _finished(ledger, principal, "acme", [2 * HOUR_S, 1.0, 0.5])
    summary = _summary(ledger, principal, since_s=HOUR_S)
    assert summary["finished"] == 2 and float(summary["covered_s"]) < 5
    assert (summary["rate_span_s"], summary["jobs_per_s"]) == (MIN_RATE_SPAN_S, 2 / MIN_RATE_SPAN_S)
    # A window shorter than that minute: the rate is over the window.
    short = _summary(ledger, principal, since_s=30)
    assert (short["rate_span_s"], short["jobs_per_s"]) == (30, 2 / 30)


def test_the_span_is_the_filtered_datas_own(ledger: sa.Engine, principal: Principal) -> None:
    _finished(ledger, principal, "acme", [600.0, 1.0])
    _finished(ledger, principal, "globex", [240.0, 120.0, 1.0])
    _finished(ledger, principal, "globex", [1800.0], job_type="sleep")
    everything = _summary(ledger, principal, since_s=HOUR_S)
    assert everything["covered_s"] == pytest.approx(1800, rel=0.011)
    assert everything["jobs_per_s"] == pytest.approx(6 / 1800, rel=0.011)
    acme = _summary(ledger, principal, since_s=HOUR_S, tenant="acme")
    assert acme["jobs_per_s"] == pytest.approx(2 / 600, rel=0.011)
    noop = _summary(ledger, principal, since_s=HOUR_S, tenant="globex", job_type="noop")
    assert noop["covered_s"] == pytest.approx(240, abs=3)
    assert noop["jobs_per_s"] == pytest.approx(3 / 240, rel=0.011)
