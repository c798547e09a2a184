"""The demo workload looks like a real fleet: every tenant healthy but one, which burns its
error budget, so the burn-rate colours of the console mean something. First from the mix it
submits (what each job's handler does with it), then with real workers, scheduler and feeds."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain import slo
from core.domain.auth import Principal
from tests.conftest import Services, orch_env, session_namespace, start_orch, stop_process, wait_until
from worker.devtools import demo
from worker.devtools.upstream_sim import UpstreamSim
from worker.runtime import broker as broker_mod
from worker.runtime import pool

HEALTHY = [t for t in demo.TENANTS if t != demo.BURNING]
FEED_NAMES = {name for name, _, _ in demo.FEEDS}


def _chance_of_dead_letter(spec: control.JobSpec, attempts: dict[str, int]) -> float:
    """What the built-in handler does with the spec: noop and sleep succeed, fail always
    fails, flaky fails each attempt with its fail_ratio."""
    if spec.job_type in ("noop", "sleep"):
        return 0.0
    if spec.job_type == "fail":
        return 1.0
    if spec.job_type == "flaky":
        return float(spec.payload["fail_ratio"]) ** (spec.max_attempts or attempts["flaky"])
    raise AssertionError(f"the demo's batches hold an unexpected job type {spec.job_type}")


def test_most_tenants_are_healthy_and_exactly_one_burns() -> None:
    attempts = {name: h.policy.max_attempts for name, h in pool.load_handlers([]).items()}
    rng = random.Random(20261201)
    failed: dict[tuple[str, str], float] = defaultdict(float)
    total: dict[tuple[str, str], int] = defaultdict(int)
    for _ in range(4000):
        batch = demo.batch(rng)
        assert len({s.tenant for s in batch}) == 1  # one tenant a tick
        for spec in batch:
            failed[(spec.tenant, spec.job_type)] += _chance_of_dead_letter(spec, attempts)
            total[(spec.tenant, spec.job_type)] += 1
    target = slo.Slo().target

    def burn(tenant: str, job_type: str | None = None) -> float:
        keys = [k for k in total if k[0] == tenant and job_type in (None, k[1])]
        return slo.burn_rate(round(sum(failed[k] for k in keys)), sum(total[k] for k in keys), target)

    assert {t for t, _ in total} == set(demo.TENANTS) and len(HEALTHY) >= 2
    # Every healthy tenant, every job type of it: within budget (green), flaky jobs included.
    for tenant in HEALTHY:
        for (t, job_type), n in total.items():
            if t == tenant:
                assert n > 500 and slo.level(burn(tenant, job_type)) == "ok", (tenant, job_type)
    # The burning tenant: about one job in six dead-letters, a critical burn as a whole.
    burning = [k for k in total if k[0] == demo.BURNING]
    assert 0.12 < sum(failed[k] for k in burning) / sum(total[k] for k in burning) < 0.25
    assert slo.level(burn(demo.BURNING)) == "critical"
    assert [t for t in demo.TENANTS if slo.level(burn(t)) != "ok"] == [demo.BURNING]


def test_only_the_burning_tenant_reads_the_feeds_that_fail_jobs() -> None:
    assert demo.BURNING in demo.TENANTS and demo.TROUBLED_FEEDS <= FEED_NAMES
    # A feed set to fail some answers is a troubled one (weather also troubles vex and sbom).
    assert {name for name, _, settings in demo.FEEDS if "error_rate" in settings} <= demo.TROUBLED_FEEDS
    assert set(demo.feeds(demo.BURNING)) == FEED_NAMES
    sims = {name: SimpleNamespace(url=f"http://127.0.0.1:1/{name}") for name in FEED_NAMES}
    rng = random.Random(7)
    for tenant in HEALTHY:
        assert set(demo.feeds(tenant)) == FEED_NAMES - demo.TROUBLED_FEEDS
        fetched = {spec.source for _ in range(200) for spec in demo.fetches(rng, tenant, sims)}
        assert fetched == FEED_NAMES - demo.TROUBLED_FEEDS
    assert {spec.source for _ in range(200) for spec in demo.fetches(rng, demo.BURNING, sims)} == FEED_NAMES


@pytest.fixture
def fleet(services: Services, ledger: sa.Engine, tmp_path: Path) -> Iterator[tuple[Any, list[Path]]]:
    """A worker pool and the scheduler, as real processes, and a doorbell to their queues."""
    namespace = session_namespace()
    env = orch_env(services, namespace)
    logs = [tmp_path / "worker.log", tmp_path / "scheduler.log"]
    procs = [
        start_orch(["worker", "--processes", "1", "--threads", "16"], env, logs[0]),
        start_orch(["scheduler"], env, logs[1]),
    ]
    b = broker_mod.build_broker(services.redis_url, namespace=namespace)
    try:
        wait_until(lambda: " ready: queues=" in logs[0].read_text(errors="replace"), timeout=60, what="the worker")
        yield broker_mod.RedisDoorbell(b), logs
    finally:
        for proc in procs:
            stop_process(proc)
        b.client.close()


def _finished(engine: sa.Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.name, j.state, count(*) FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
                " WHERE j.state IN ('succeeded', 'dead_lettered') GROUP BY 1, 2"
            )
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}


@pytest.mark.slow
def test_the_demo_run_by_real_workers_burns_one_tenant_only(
    ledger: sa.Engine, principal: Principal, fleet: tuple[Any, list[Path]]
) -> None:
    doorbell, logs = fleet
    sim = UpstreamSim("127.0.0.1", port=0).start()
    stop = threading.Event()
    thread = threading.Thread(target=demo.run, args=(ledger, principal, doorbell, stop, sim), daemon=True)
    thread.start()
    try:

        def enough() -> bool:
            done = _finished(ledger)
            return done.get((demo.BURNING, "dead_lettered"), 0) >= 10 and all(
                done.get((t, "succeeded"), 0) >= 40 for t in HEALTHY
            )

        wait_until(enough, timeout=120, interval=0.5, what="the demo's jobs to finish (logs: " + str(logs) + ")")
    finally:
        stop.set()
        thread.join(30)
        sim.stop()
    assert not thread.is_alive()

    with ledger.connect() as conn:
        burns = [r for r in queries.burn_rates(conn, principal) if r["window"] == "5m" and r["total"]]
        sources = {(s["tenant"], s["name"]) for s in queries.sources(conn, principal)}
    assert sources == {(t, name) for t in demo.TENANTS for name in demo.feeds(t)}
    levels: dict[str, set[str]] = defaultdict(set)
    for r in burns:
        levels[r["tenant"]].add(slo.level(r["burn_rate"]))
    worst = {r["job_type"]: r for r in burns if r["tenant"] == demo.BURNING}
    # Green everywhere but the burning tenant, whose always-failing jobs are critical.
    assert {t: levels[t] for t in HEALTHY} == {t: {"ok"} for t in HEALTHY}, [r for r in burns if r["failed"]]
    assert slo.level(worst["fail"]["burn_rate"]) == "critical"
    assert _finished(ledger).keys() >= {(t, "succeeded") for t in demo.TENANTS}
