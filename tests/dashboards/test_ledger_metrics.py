"""The ledger collector (worker/exporter.py) against a real ledger: it exports every metric
core.domain.metrics says comes from the ledger, with the declared labels, and the flow-control,
schedule, backfill and watermark numbers are the ledger's."""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from core import control, queries
from core.control import firing
from core.domain import metrics
from core.domain import schedules as sched
from core.domain.auth import Principal
from tests.dashboards.test_read_models_ledger import JOB_TYPE, seed_flow_control
from worker.runtime import exporter


def _scrape(engine: sa.Engine) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> (sorted labels) -> value, as Prometheus would scrape it."""
    registry = CollectorRegistry()
    registry.register(exporter.LedgerCollector(engine))
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _value(scraped: dict[str, Any], name: str, **labels: str) -> float:
    return float(scraped[name][tuple(sorted(labels.items()))])


def _finished_run(engine: sa.Engine, principal: Principal) -> None:
    """A DAG run of one noop job, run to its end without a worker."""
    from core.ledger import jobs as ledger_jobs

    run = control.RunSpec("acme", "nightly", [control.JobSpec("acme", "noop", key="only")])
    control.submit_run(engine, principal, run, control.NoDoorbell())
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=10, owner="t", job_types=["noop"])
        ledger_jobs.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="t")


WINDOWED = "test.windowed"
H = dt.timedelta(hours=1)
DAY = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def seed_schedules(engine: sa.Engine, principal: Principal) -> dict[str, int]:
    """acme: an hourly schedule that was down for 10.5 hours (catch-up latest: the newest late
    tick fires, the 10 before it are missed); three backfills of 4 hourly windows: "live"
    (planned), "recent" (canceled now) and "old" (canceled two days ago); watermarks reported
    3 hours behind (source feeds) and 1 hour behind (no source), and one never moved. Returns
    the backfill ids."""
    now = dt.datetime.now(dt.UTC)
    hourly = control.ScheduleSpec(
        tenant="acme",
        name="hourly",
        target=control.Target.of_job(WINDOWED, {"feed": "hourly"}),
        every=H,
        start=(now - 10 * H - dt.timedelta(minutes=30)).replace(microsecond=0),  # a tick itself
        catchup="latest",
        overlap="allow_all",
    )
    control.add_schedule(engine, principal, hourly, reason="seed")
    firing.fire_due(engine, principal, batch=100, max_jobs=100)

    def backfill(feed: str) -> int:
        target = control.Target.of_job(WINDOWED, {"feed": feed})
        spec = control.BackfillSpec(tenant="acme", target=target, start=DAY, end=DAY + 4 * H, window=H)
        plan = control.create_backfill(engine, principal, spec, reason="seed", ticket="INC-1")
        assert plan.backfill_id is not None and plan.to_run == 4
        return plan.backfill_id

    ids = {feed: backfill(feed) for feed in ("live", "recent", "old")}
    for feed in ("recent", "old"):
        control.cancel_backfill(engine, principal, ids[feed], reason="seed")
    control.add_source(engine, principal, tenant="acme", name="feeds", host="feeds.example", reason="seed")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE backfills SET finished_at = now() - interval '2 days' WHERE id = :id"), {"id": ids["old"]}
        )
        tenant_id = conn.execute(sa.text("SELECT id FROM tenants WHERE name = 'acme'")).scalar_one()
        feeds = conn.execute(sa.text("SELECT id FROM sources WHERE name = 'feeds'")).scalar_one()
        for source_id, job_type, behind in ((feeds, "feeds.fetch", 3 * H), (None, "feeds.parse", H)):
            moved = control.report_watermark(
                conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type, at=now - behind, actor="seed"
            )
            assert moved
        conn.execute(
            sa.text("INSERT INTO watermarks (tenant_id, job_type) VALUES (:t, 'never.moved')"), {"t": tenant_id}
        )
    return ids


def test_every_ledger_metric_is_exported_with_its_declared_labels(ledger: sa.Engine, principal: Principal) -> None:
    seed_flow_control(ledger, principal)
    seed_schedules(ledger, principal)
    spec = control.JobSpec(tenant="acme", job_type=JOB_TYPE, payload={"ready": True})
    control.submit_many(ledger, principal, [spec], doorbell=control.NoDoorbell())  # an oldest ready job
    _finished_run(ledger, principal)
    scraped = _scrape(ledger)
    assert _value(scraped, "orch_runs_finished_total", tenant="acme", state="succeeded") == 1
    ledger_metrics = [m for m in metrics.METRICS if m.from_ledger]
    assert {m.name for m in ledger_metrics} >= {
        "orch_ratelimit_denials_total",
        "orch_upstream_throttled_total",
        "orch_bucket_tokens",
        "orch_bucket_rate",
        "orch_bucket_base_rate",
        "orch_circuit_state",
        "orch_circuit_opened_total",
        "orch_quota_active",
        "orch_quota_max_active",
        "orch_jobs_waiting",
        "orch_schedule_ticks_total",
        "orch_backfill_windows",
        "orch_watermark_lag_seconds",
    }
    for spec in ledger_metrics:
        (series,) = spec.series_names()
        assert series in scraped, series
        assert {tuple(k for k, _ in labels) for labels in scraped[series]} == {tuple(sorted(spec.labels))}, series
    # Worker processes build prometheus-client objects only for what they count themselves.
    assert not any(m.from_ledger for m in metrics.METRICS if m.kind == metrics.Kind.HISTOGRAM)


def test_flow_control_metrics_are_the_ledgers_numbers(ledger: sa.Engine, principal: Principal) -> None:
    seed_flow_control(ledger, principal)
    scraped = _scrape(ledger)
    nvd = {"tenant": "acme", "host": "nvd.example"}
    assert _value(scraped, "orch_ratelimit_denials_total", **nvd) == 2
    assert _value(scraped, "orch_upstream_throttled_total", **nvd) == 1
    assert _value(scraped, "orch_bucket_rate", **nvd) == 0.5
    assert _value(scraped, "orch_bucket_base_rate", **nvd) == 1.0
    assert _value(scraped, "orch_bucket_capacity", **nvd) == 2.0
    assert _value(scraped, "orch_bucket_tokens", **nvd) == 0.0  # blocked by the 429's Retry-After
    osv = {"tenant": "globex", "host": "osv.example"}
    assert _value(scraped, "orch_bucket_tokens", **osv) == 5.0
    assert _value(scraped, "orch_ratelimit_denials_total", **osv) == 0
    # One bucket per tenant and host, whatever the number of sources on it.
    assert sorted(dict(k)["host"] for k in scraped["orch_bucket_rate"]) == ["nvd.example", "osv.example"]

    states = {dict(k)["source"]: v for k, v in scraped["orch_circuit_state"].items()}
    assert states == {"nvd": 0, "nvd-cve": 0, "osv": metrics.CIRCUIT_STATES["open"]}
    assert _value(scraped, "orch_circuit_opened_total", tenant="globex", source="osv") == 1

    assert _value(scraped, "orch_quota_active", tenant="acme", job_type=JOB_TYPE) == 1
    assert _value(scraped, "orch_quota_max_active", tenant="acme", job_type=JOB_TYPE) == 5

    waiting = scraped["orch_jobs_waiting"]
    # Every tenant and every reason, zero when none wait.
    assert len(waiting) == 2 * len(queries.WAIT_REASONS)
    assert {dict(k)["reason"]: v for k, v in waiting.items() if dict(k)["tenant"] == "acme"} == {
        reason: 3.0 if reason == "rate_limited" else 0.0 for reason in queries.WAIT_REASONS
    }
    with ledger.connect() as conn:
        for tenant in ("acme", "globex"):
            assert queries.waiting_by_reason(conn, principal, tenant=tenant) == {
                dict(k)["reason"]: int(v) for k, v in waiting.items() if dict(k)["tenant"] == tenant
            }


def test_schedule_backfill_and_watermark_metrics_are_the_ledgers_numbers(
    ledger: sa.Engine, principal: Principal
) -> None:
    ids = seed_schedules(ledger, principal)
    scraped = _scrape(ledger)
    with ledger.connect() as conn:
        counters = queries.schedule_tick_counters(conn)
        marks = queries.list_watermarks(conn, principal)

    # Every status, zero when no tick had it (rate() sees a status's first tick).
    ticks = {dict(k)["status"]: v for k, v in scraped["orch_schedule_ticks_total"].items()}
    assert ticks == {"fired": 1, "missed": 10, "skipped": 0, "buffered": 0, "paused": 0}
    assert {r["status"]: r["ticks"] for r in counters} == {"fired": 1, "missed": 10}
    assert {dict(k)["tenant"] for k in scraped["orch_schedule_ticks_total"]} == {"acme"}

    # Active backfills and those that ended in the last day, every window state of each.
    windows: dict[str, dict[str, float]] = {}
    for labels, value in scraped["orch_backfill_windows"].items():
        d = dict(labels)
        assert d["tenant"] == "acme"
        windows.setdefault(d["backfill"], {})[d["state"]] = value
    zero = dict.fromkeys(metrics.WINDOW_STATES, 0.0)
    assert windows == {
        str(ids["live"]): {**zero, "planned": 4.0},
        str(ids["recent"]): {**zero, "canceled": 4.0},
    }

    # Now minus the watermark, the ledger's lag; a source-less watermark is "-"; one never
    # moved is left out, and so is the windowed stream's (the schedule's and backfills' job
    # type): none of its windows has ended yet, so its watermark is not known.
    lag = {(dict(k)["source"], dict(k)["job_type"]): v for k, v in scraped["orch_watermark_lag_seconds"].items()}
    ledger_lag = {(m["source"] or "-", m["job_type"]): m["lag_s"] for m in marks}
    assert ledger_lag[("-", "never.moved")] is None
    assert ledger_lag[("-", WINDOWED)] is None
    assert set(lag) == {("feeds", "feeds.fetch"), ("-", "feeds.parse")}
    for key, value in lag.items():
        assert value == pytest.approx(ledger_lag[key], abs=30), key
    assert lag[("feeds", "feeds.fetch")] == pytest.approx(3 * 3600, abs=30)
    assert lag[("-", "feeds.parse")] == pytest.approx(3600, abs=30)
    assert {dict(k)["tenant"] for k in scraped["orch_watermark_lag_seconds"]} == {"acme"}


def test_label_values_are_the_ledgers_states() -> None:
    assert tuple(s.value for s in sched.TickStatus) == metrics.TICK_STATUSES
    migration = importlib.import_module("core.ledger.migrations.versions.0006_schedules_windows_backfills")
    assert metrics.TICK_STATUSES == migration.TICK_STATUS
    assert metrics.WINDOW_STATES == migration.WINDOW_STATES
    assert set(metrics.ACTIVE_BACKFILL_STATES) < set(migration.BACKFILL_STATES)


def test_a_failing_schedule_read_leaves_the_other_families(
    ledger: sa.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(conn: sa.Connection) -> list[Any]:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
        return []

    monkeypatch.setattr(exporter, "_schedule_families", broken)
    scraped = _scrape(ledger)
    assert "orch_slo_burn_rate" in scraped
    assert "orch_schedule_ticks_total" not in scraped
    assert "schedule metrics unavailable" in caplog.text


def test_an_empty_ledger_exports_empty_flow_families(ledger: sa.Engine) -> None:
    scraped = _scrape(ledger)
    assert "orch_bucket_rate" not in scraped and "orch_jobs_waiting" not in scraped
    for name in ("orch_schedule_ticks_total", "orch_backfill_windows", "orch_watermark_lag_seconds"):
        assert name not in scraped
