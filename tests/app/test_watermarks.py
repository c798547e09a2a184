"""Watermarks page: each watermark (from a stream's done windows, or reported by handlers)
with its lag and holes from a real ledger, the lag over time from the samples the scheduler
takes once a minute, the holes listed per stream; tenant filter and tenant limits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import labels
from app import schedule_views as views
from core import control
from core.control import backfills
from core.domain.auth import Scope, local_principal
from core.ledger import jobs as ledger_jobs
from core.ledger import windows as ledger_windows
from tests.app.conftest import JOB_TYPE, QUEUE, TENANT_A, TENANT_B, open_app, texts

ADMIN = local_principal("watermarks-tests")
WORKER = "watermarks-seed-worker"
HOUR = dt.timedelta(hours=1)
NVD = f"{TENANT_A} / nvd / {JOB_TYPE}"
REPORTED_A = f"{TENANT_A} / {labels.DASH} / noop"
REPORTED_B = f"{TENANT_B} / {labels.DASH} / noop"


@dataclass
class Seeded:
    #: The start of acme's nvd backfill (its stream's origin): windows of an hour from here.
    t0: dt.datetime
    #: What a handler of acme reported (job type noop, no source).
    reported: dt.datetime


def _tenant_id(conn: sa.Connection, name: str) -> int:
    return int(conn.execute(sa.text("SELECT id FROM tenants WHERE name = :n"), {"n": name}).scalar_one())


def seed_watermarks(engine: sa.Engine) -> Seeded:
    """acme nvd/JOB_TYPE: a backfill of 4 windows from t0; the first fails, the second and
    fourth succeed, the third still runs: the watermark stays at t0 with two holes. acme and
    globex noop: watermarks reported 30 min and 2 h ago. Lag samples 10 and 5 minutes ago and now."""
    control.add_source(engine, ADMIN, tenant=TENANT_A, name="nvd", host="nvd.watermarks.example", reason="seed")
    control.add_source(engine, ADMIN, tenant=TENANT_B, name="ghsa", host="ghsa.watermarks.example", reason="seed")
    t0 = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - 10 * HOUR
    spec = control.BackfillSpec(
        tenant=TENANT_A,
        target=control.Target.of_job(JOB_TYPE, {"feed": "nvd"}, source="nvd"),
        start=t0,
        end=t0 + 4 * HOUR,
        window=HOUR,
        max_active=4,
    )
    control.create_backfill(engine, ADMIN, spec, reason="seed", ticket="SEED-2")
    backfills.pump_backfills(engine, ADMIN, batch=10, max_jobs=10)
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=10, owner=WORKER, job_types=[JOB_TYPE])
        found = conn.execute(sa.text("SELECT span_start, job_id FROM windows WHERE job_id IS NOT NULL"))
        by_window = {start: job_id for start, job_id in found}
    assert len(rows) == 4
    lease = {r["id"]: r["lease_id"] for r in rows}
    first, second, _third, fourth = (by_window[t0 + k * HOUR] for k in range(4))
    with engine.begin() as conn:
        ledger_jobs.succeed_jobs(conn, [second, fourth], [lease[second], lease[fourth]], actor=WORKER)
        ledger_jobs.fail_final_jobs(conn, [first], [lease[first]], ["http_5xx"], ["HTTP 503"], ["final"], actor=WORKER)
    reported = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
    with engine.begin() as conn:
        for tenant, at in ((TENANT_A, reported), (TENANT_B, reported - dt.timedelta(minutes=90))):
            moved = control.report_watermark(
                conn, tenant_id=_tenant_id(conn, tenant), source_id=None, job_type="noop", at=at, actor="handler-7"
            )
            assert moved
        # The scheduler's sample now, and two earlier ones as it took them.
        ledger_windows.sample_watermarks(conn)
        conn.execute(
            sa.text(
                "INSERT INTO watermark_samples (watermark_id, at, watermark, lag_s)"
                " SELECT watermark_id, at - make_interval(mins => m), watermark, lag_s - m * 60"
                " FROM watermark_samples, (VALUES (5), (10)) AS v (m)"
            )
        )
    return Seeded(t0=t0, reported=reported)


@pytest.fixture
def seeded(console: sa.Engine) -> Seeded:
    return seed_watermarks(console)


@pytest.fixture
def viewer(make_token: Callable[..., str]) -> str:
    return make_token("viewer", {Scope.READ})


def _table(at: AppTest) -> dict[str, dict[str, Any]]:
    frame = next(d.value for d in at.dataframe if "lag" in d.value.columns)
    return {f"{r['tenant']} / {r['source']} / {r['job type']}": dict(r) for r in frame.to_dict("records")}


def _lag_chart(at: AppTest) -> dict[str, Any] | None:
    for chart in at.get("plotly_chart"):
        fig = json.loads(chart.proto.spec)
        if fig["layout"]["title"]["text"] == "Watermark lag":
            return dict(fig)
    return None


def test_the_table_shows_each_watermark_its_lag_and_holes(seeded: Seeded, viewer: str) -> None:
    at = open_app(viewer, "watermarks")
    table = _table(at)
    assert sorted(table) == sorted([NVD, REPORTED_A, REPORTED_B])
    nvd, mine, theirs = table[NVD], table[REPORTED_A], table[REPORTED_B]
    # The stream's done windows stop at its failed first window: the watermark stays at its origin.
    assert (nvd["watermark" + labels.UTC_COLUMN], nvd["holes"], nvd["from"]) == (labels.utc(seeded.t0), 2, "windows")
    assert nvd["watermark"] == "10 h ago" and nvd["lag"].startswith("10 h ")
    assert (mine["watermark" + labels.UTC_COLUMN], mine["lag"], mine["from"]) == (
        labels.utc(seeded.reported),
        "30 min",
        "reported by handlers",
    )
    assert (mine["moved by"], mine["holes"]) == ("handler-7", 0)
    assert mine["moved"] == "just now" or mine["moved"].endswith(" s ago")
    assert theirs["lag"] == "2 h 0 min"
    assert f"3 watermarks, 1 with holes; the furthest behind: {NVD}, " in texts(at)
    at.selectbox(key="watermarks_tenant").set_value(TENANT_B).run()
    assert sorted(_table(at)) == [REPORTED_B]


def test_the_lag_chart_draws_a_line_per_stream_over_time(seeded: Seeded, viewer: str) -> None:
    at = open_app(viewer, "watermarks")
    fig = _lag_chart(at)
    assert fig is not None
    lines = {t["name"]: t for t in fig["data"]}
    assert sorted(lines) == sorted([NVD, REPORTED_A, REPORTED_B])
    assert all(len(t["x"]) == 3 for t in lines.values())  # 10 and 5 minutes ago, and now
    # The largest lag (nvd's, over 10 hours) sets the unit: hours.
    assert fig["layout"]["yaxis"]["title"]["text"] == "lag (h)"
    nvd = lines[NVD]["y"]
    assert nvd == sorted(nvd) and 10 <= nvd[-1] < 11.5  # oldest first; the lag grows with the clock
    assert lines[REPORTED_A]["y"][-1] == pytest.approx(0.5, abs=0.02)
    assert lines[NVD]["customdata"] == [labels.utc(seeded.t0)] * 3


def test_samples_older_than_the_range_are_left_out(console: sa.Engine, seeded: Seeded, viewer: str) -> None:
    with console.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO watermark_samples (watermark_id, at, watermark, lag_s)"
                " SELECT id, now() - interval '3 hours', reported, 60 FROM watermarks WHERE reported IS NOT NULL"
            )
        )
    at = open_app(viewer, "watermarks")
    fig = _lag_chart(at)
    assert fig is not None and len(next(t for t in fig["data"] if t["name"] == REPORTED_A)["x"]) == 3
    at.selectbox(key="watermarks_range").set_value("Last 6 hours").run()
    fig = _lag_chart(at)
    assert fig is not None and len(next(t for t in fig["data"] if t["name"] == REPORTED_A)["x"]) == 4


def test_the_holes_are_listed_per_stream(seeded: Seeded, viewer: str) -> None:
    at = open_app(viewer, "watermarks")
    assert f"**{NVD}**: 2 holes" in texts(at)
    holes = next(d.value for d in at.dataframe if "length" in d.value.columns).to_dict("records")
    t0 = seeded.t0
    assert holes == [
        {"from (UTC)": labels.utc(t0), "to (UTC)": labels.utc(t0 + HOUR), "length": "60 min"},
        {"from (UTC)": labels.utc(t0 + 2 * HOUR), "to (UTC)": labels.utc(t0 + 3 * HOUR), "length": "60 min"},
    ]
    assert views.length(t0, t0 + 3 * HOUR) == "3 h 0 min"


def test_a_tenant_limited_reader_sees_its_tenant_only(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("globex-sre", {Scope.READ}, {TENANT_B}), "watermarks")
    assert sorted(_table(at)) == [REPORTED_B]
    assert any(s.value.startswith("No holes") for s in at.success)
    fig = _lag_chart(at)
    assert fig is not None and [t["name"] for t in fig["data"]] == [REPORTED_B]


def test_no_watermark_says_where_they_come_from(console: sa.Engine, viewer: str) -> None:
    at = open_app(viewer, "watermarks")
    (info,) = [i.value for i in at.info]
    assert info.startswith("No watermarks yet")
    assert _lag_chart(at) is None
