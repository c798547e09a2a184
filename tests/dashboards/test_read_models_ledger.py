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


def seed_flow_control(engine: sa.Engine, principal: Principal) -> None:
    """acme: sources nvd and nvd-cve share the nvd.example bucket (1/s, burst 2); 4 jobs of nvd
    claimed at once: 2 start, 2 wait rate_limited; one started job gets an upstream 429 (rate
    halved to 0.5/s, bucket blocked a minute, the job waits rate_limited again); then a quota
    of 5 slots on the job type (1 in use). globex: source osv on osv.example (5/s), whose
    circuit opened after 10 failures, paused."""
    control.add_source(engine, principal, tenant="acme", name="nvd", host="nvd.example", rate=1, burst=2, reason="seed")
    control.add_source(engine, principal, tenant="acme", name="nvd-cve", host="nvd.example", reason="seed")
    control.add_source(engine, principal, tenant="globex", name="osv", host="osv.example", rate=5, reason="seed")
    specs = [control.JobSpec(tenant="acme", job_type=JOB_TYPE, payload={"src": i}, source="nvd") for i in range(4)]
    control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell())
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=4, owner=WORKER, job_types=[JOB_TYPE])
    assert len(rows) == 2
    first = rows[0]
    with engine.begin() as conn:
        ledger_jobs.throttle_jobs(conn, [first["id"]], [first["lease_id"]], [60.0], ["HTTP 429"], actor=WORKER)
        ledger_jobs.record_outcomes(
            conn, [first["source_id"]], ["throttled"], [60.0], [first["started_at"]], actor=WORKER
        )
    control.set_quota(engine, principal, tenant="acme", job_type=JOB_TYPE, max_active=5, reason="seed")
    with engine.begin() as conn:
        osv = conn.execute(sa.text("SELECT id FROM sources WHERE name = 'osv'")).scalar_one()
        ledger_jobs.record_outcomes(conn, [osv] * 10, ["fail"] * 10, [None] * 10, [None] * 10, actor=WORKER)
    control.pause(engine, principal, tenant="globex", source="osv", reason="upstream maintenance")


@pytest.fixture
def seeded(ledger: sa.Engine, principal: Principal) -> sa.Engine:
    """acme: 3 succeeded, 2 dead in one http_5xx cluster, 1 dead by lease expiry, 2 queued, and
    the flow control of seed_flow_control; globex: 4 succeeded."""
    _succeed(ledger, principal, "acme", 3)
    _dead_letter(ledger, principal, "acme", "http_5xx", ["HTTP 503 for /feed?page=17", "HTTP 503 for /feed?page=18"])
    _dead_letter(ledger, principal, "acme", "lease_expired", ["lease expired after 30s"])
    _succeed(ledger, principal, "globex", 4)
    seed_flow_control(ledger, principal)
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


def test_flow_control_panels_draw_from_the_ledger(seeded: sa.Engine, principal: Principal) -> None:
    acme = read_models.Filters(tenant="acme")
    with seeded.connect() as conn:
        rows = {name: read_models.run(name, conn, principal, acme) for name in read_models.READ_MODELS}

    sources = {s["name"]: s for s in rows["sources"]}
    assert sorted(sources) == ["nvd", "nvd-cve"]
    assert {s["health"] for s in sources.values()} == {"throttled"}  # one bucket, blocked by the 429
    assert sources["nvd"]["waiting"] == {"rate_limited": 3}
    assert sources["nvd"]["active"] == 1

    (bucket,) = rows["buckets"]
    assert (bucket["host"], bucket["sources"]) == ("nvd.example", ["nvd", "nvd-cve"])
    assert (bucket["rate"], bucket["base_rate"], bucket["capacity"], bucket["tokens"]) == (0.5, 1.0, 2.0, 0.0)
    assert (bucket["denied_total"], bucket["upstream_429_total"]) == (2, 1)
    assert bucket["blocked_until"] is not None
    tokens = figures.bucket_tokens_bars(rows["buckets"])
    assert next(t.text for t in tokens.data if t.name == "tokens")[0].startswith("blocked until ")

    # Configured at 1/s by sources add (the bucket is new: no earlier rate), halved by the 429,
    # and the rate now.
    steps = [(r["rate"], r["actor"]) for r in rows["bucket_rates"]]
    assert steps == [(1.0, "local:tests"), (0.5, WORKER), (0.5, None)]
    line = figures.bucket_rate_steps(rows["bucket_rates"])
    assert [t.name for t in line.data] == ["acme nvd.example", "acme nvd.example configured"]

    kinds = {r["kind"]: r["count"] for r in rows["rate_limit_events"]}
    assert kinds == {"rate_limited": 2, "upstream_429": 1}
    (quota,) = rows["quotas"]
    assert (quota["job_type"], quota["active"], quota["max_active"]) == (JOB_TYPE, 1, 5)
    waiting = {r["reason"]: r["count"] for r in rows["waiting"]}
    assert waiting == {"paused": 0, "blackout": 0, "circuit_open": 0, "quota": 0, "rate_limited": 3, "backpressure": 0}

    with seeded.connect() as conn:
        (osv,) = read_models.run("sources", conn, principal, read_models.Filters(tenant="globex"))
        assert (osv["name"], osv["health"], osv["paused_reason"]) == ("osv", "paused", "upstream maintenance")
        assert (osv["circuit_state"], osv["opened_total"]) == ("open", 1)
        one = read_models.source_rates(conn, principal, tenant="acme", source="nvd-cve", since_s=3600)
    assert [r["rate"] for r in one] == [1.0, 0.5, 0.5]


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
        # Flow control: only globex's source, bucket and rate changes.
        assert [s["name"] for s in read_models.run("sources", conn, globex_only, read_models.Filters())] == ["osv"]
        assert [b["host"] for b in read_models.run("buckets", conn, globex_only, read_models.Filters())] == [
            "osv.example"
        ]
        assert {r["host"] for r in read_models.run("bucket_rates", conn, globex_only, read_models.Filters())} == {
            "osv.example"
        }
        assert read_models.run("rate_limit_events", conn, globex_only, read_models.Filters()) == []
        assert read_models.run("quotas", conn, globex_only, read_models.Filters()) == []
        assert sum(r["count"] for r in read_models.run("waiting", conn, globex_only, read_models.Filters())) == 0
        with pytest.raises(errors.Forbidden):
            read_models.run("buckets", conn, globex_only, read_models.Filters(tenant="acme"))
