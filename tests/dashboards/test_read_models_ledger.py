"""Every console panel drawn from a real ledger: read models over the real core.queries against the
test PostgreSQL, seeded through core.control and the core.ledger statements workers use."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from core import control
from core.domain import errors, slo
from core.domain.auth import Principal, Scope
from core.ledger import jobs as ledger_jobs
from dashboards import figures, panels, read_models

JOB_TYPE = "test.report"
WORKER = "dashboards-seed"


def _run(engine: sa.Engine, principal: Principal, tenant: str, n: int) -> list[Any]:
    specs = [control.JobSpec(tenant=tenant, job_type=JOB_TYPE, payload={"n": i}) for i in range(n)]
    ids = control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell()).job_ids
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=n, owner=WORKER, job_types=[JOB_TYPE])
    assert sorted(r["id"] for r in rows) == sorted(ids)
    return list(rows)


def _succeed(engine: sa.Engine, principal: Principal, tenant: str, n: int) -> None:
    rows = _run(engine, principal, tenant, n)
    with engine.begin() as conn:
        ledger_jobs.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor=WORKER)


def _dead_letter(engine: sa.Engine, principal: Principal, tenant: str, error_class: str, messages: list[str]) -> None:
    rows = _run(engine, principal, tenant, len(messages))
    with engine.begin() as conn:
        moved = ledger_jobs.fail_final_jobs(
            conn,
            [r["id"] for r in rows],
            [r["lease_id"] for r in rows],
            [error_class] * len(rows),
            messages,
            ["not retryable"] * len(rows),
            actor=WORKER,
        )
    assert len(moved) == len(rows)


@pytest.fixture
def seeded(ledger: sa.Engine, principal: Principal) -> sa.Engine:
    """acme: 3 succeeded, 2 dead in one http_5xx cluster, 1 dead by lease expiry, 2 queued;
    globex: 4 succeeded."""
    _succeed(ledger, principal, "acme", 3)
    _dead_letter(ledger, principal, "acme", "http_5xx", ["HTTP 503 for /feed?page=17", "HTTP 503 for /feed?page=18"])
    _dead_letter(ledger, principal, "acme", "lease_expired", ["lease expired after 30s"])
    _succeed(ledger, principal, "globex", 4)
    # Last, so no claim above takes them.
    specs = [control.JobSpec(tenant="acme", job_type=JOB_TYPE, payload={"queued": i}) for i in range(2)]
    control.submit_many(ledger, principal, specs, doorbell=control.NoDoorbell())
    return ledger


def test_every_console_panel_draws_from_the_ledger(seeded: sa.Engine, principal: Principal) -> None:
    acme = read_models.Filters(tenant="acme")
    with seeded.connect() as conn:
        rows = {name: read_models.run(name, conn, principal, acme) for name in read_models.READ_MODELS}
    for panel in panels.PANELS:
        if panel.read_model is not None and panel.figure is not None:
            fig = panel.figure(rows[panel.read_model])
            assert len(fig.data) >= 1 or panel.read_model == "queue_depth", panel.key
            fig.to_json()

    counts = {r["state"]: r["count"] for r in rows["job_counts"]}
    assert (counts["queued"], counts["succeeded"], counts["dead_lettered"]) == (2, 3, 3)

    assert sum(r["finished"] for r in rows["throughput"]) == 6
    assert sum(r["dead_lettered"] for r in rows["throughput"]) == 3

    burn = {r["window"]: r for r in rows["burn_rates"]}
    assert set(burn) == set(slo.WINDOWS)
    assert (burn["5m"]["failed"], burn["5m"]["total"]) == (3, 6)
    assert burn["5m"]["burn_rate"] == pytest.approx(0.5 / (1 - slo.Slo().target))
    colours = figures.burn_rate_bars(rows["burn_rates"]).data[0].marker.color
    assert set(colours) == {figures.LEVEL_COLORS["critical"]}

    clusters = {r["error_class"]: r for r in rows["error_clusters"]}
    assert clusters["http_5xx"]["count"] == 2  # page=17 and page=18 are one cluster
    assert sum(figures.lease_expirations_bar(rows["error_trend"]).data[0].y) == 1


def test_read_models_keep_tenants_apart(seeded: sa.Engine, principal: Principal) -> None:
    globex_only = Principal(subject="globex-viewer", scopes=frozenset({Scope.READ}), tenants=frozenset({"globex"}))
    with seeded.connect() as conn:
        burn = read_models.run("burn_rates", conn, globex_only, read_models.Filters())
        assert {r["tenant"] for r in burn} == {"globex"}
        assert read_models.run("error_clusters", conn, globex_only, read_models.Filters()) == []
        counts = {
            r["state"]: r["count"] for r in read_models.run("job_counts", conn, globex_only, read_models.Filters())
        }
        assert (counts["succeeded"], counts["dead_lettered"], counts["queued"]) == (4, 0, 0)
        with pytest.raises(errors.Forbidden):
            read_models.run("job_counts", conn, globex_only, read_models.Filters(tenant="acme"))
