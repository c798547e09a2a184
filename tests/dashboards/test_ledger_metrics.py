"""The ledger collector (worker/exporter.py) against a real ledger: it exports every metric
core.domain.metrics says comes from the ledger, with the declared labels, and the flow-control
numbers are the ledger's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from core import control, queries
from core.domain import metrics
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


def test_every_ledger_metric_is_exported_with_its_declared_labels(ledger: sa.Engine, principal: Principal) -> None:
    seed_flow_control(ledger, principal)
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


def test_an_empty_ledger_exports_empty_flow_families(ledger: sa.Engine) -> None:
    scraped = _scrape(ledger)
    assert "orch_bucket_rate" not in scraped and "orch_jobs_waiting" not in scraped
