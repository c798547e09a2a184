"""The demo workload of `orch up --demo`, shaped like a real fleet: most tenants healthy (quick
and slow jobs, flaky jobs that retry and then succeed), one tenant burning its error budget
(jobs that dead-letter, feeds that fail and drift), so the burn-rate colours mean something;
and http_fetch jobs against the upstream simulator's feeds, through sources whose buckets and
circuits really work."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import sqlalchemy as sa

from core import control
from core.domain import errors
from core.domain.auth import Principal
from worker.devtools.upstream_sim import UpstreamSim

log = logging.getLogger(__name__)

#: The demo's tenants: every one healthy but BURNING.
TENANTS = ("acme", "globex", "initech", "umbrella")
#: The one tenant whose jobs keep failing and whose feeds misbehave: its burn rate is
#: critical, the others' stays within budget (core.domain.slo).
BURNING = "umbrella"

#: The simulator's feeds the demo sources read: (source, configured rate/s, feed settings).
#: advisories hides a limit below the configured rate (the bucket learns it from 429s); vex
#: fails now and then and in bursts (its circuit opens); sbom drifts its schema at times.
FEEDS: tuple[tuple[str, float, dict[str, object]], ...] = (
    ("advisories", 10.0, {"rate_limit": 3.0, "retry_after_s": 1.0}),
    ("vex", 5.0, {"error_rate": 0.05}),
    ("sbom", 3.0, {}),
)
#: The feeds whose trouble fails jobs (vex's outages, sbom's schema drift): only BURNING reads
#: them. A 429 of advisories fails nothing (the job waits for its token), so every tenant reads it.
TROUBLED_FEEDS = frozenset({"vex", "sbom"})

#: Chance of a flaky job's attempt failing: a healthy tenant's flaky job dead-letters after
#: five failed attempts, 0.2**5 = 0.03% of them; a burning tenant's 0.6**5 = 8%.
HEALTHY_FAIL_RATIO = 0.2
BURNING_FAIL_RATIO = 0.6
#: Chance of a burning tenant's batch holding a job whose payload no longer parses (it
#: dead-letters at once); every one of its batches holds a job whose upstream answers 503.
SCHEMA_MISMATCH_CHANCE = 0.5


def feeds(tenant: str) -> tuple[str, ...]:
    """The feeds `tenant` reads: all of them for BURNING, the untroubled ones for the others."""
    return tuple(name for name, _, _ in FEEDS if tenant == BURNING or name not in TROUBLED_FEEDS)


def start_feed_sims(sim: Any) -> dict[str, Any]:
    """A simulator per feed: the first feed on `sim` (the one `orch up` started), each other
    on one of its own on a free port. A source's jobs may fetch only its host, and a bucket
    is per (tenant, host): feeds on distinct hosts keep distinct buckets."""
    sims: dict[str, Any] = {}
    try:
        for i, (name, _, _) in enumerate(FEEDS):
            sims[name] = sim if i == 0 else UpstreamSim(sim.host, port=0).start()
    except OSError:
        stop_feed_sims(sims, sim)
        raise
    return sims


def stop_feed_sims(sims: dict[str, Any], sim: Any) -> None:
    """Stop the simulators start_feed_sims started (not `sim`: its owner stops it)."""
    for other in sims.values():
        if other is not sim:
            other.stop()


def setup_sources(engine: sa.Engine, principal: Principal, sims: dict[str, Any]) -> None:
    """The simulators' feeds, and a source of each tenant for each feed it reads (one bucket per
    tenant and feed host). The simulators listen on loopback: the sources allow private addresses."""
    for name, _, settings in FEEDS:
        sims[name].configure(name, **settings)
    for tenant in TENANTS:
        read = feeds(tenant)
        for name, rate, _ in FEEDS:
            if name not in read:
                continue
            control.add_source(
                engine,
                principal,
                tenant=tenant,
                name=name,
                host=f"127.0.0.1:{sims[name].port}",
                rate=rate,
                burst=max(2.0, rate / 2),
                allow_private=True,
                reason="demo sources",
            )
        with engine.begin() as conn:  # a quick circuit, so the demo shows it walking
            conn.execute(
                sa.text(
                    "UPDATE sources SET cb_window = 10, cb_min_outcomes = 5, cb_cooldown_s = 15"
                    " WHERE tenant_id = (SELECT id FROM tenants WHERE name = :t)"
                ),
                {"t": tenant},
            )


def fetches(rng: random.Random, tenant: str, sims: dict[str, Any]) -> list[control.JobSpec]:
    """http_fetch jobs of `tenant` on the feeds it reads."""
    specs = []
    for name in feeds(tenant):
        for _ in range(rng.randint(0, 2)):  # about 2 per second per feed
            url = f"{sims[name].url}/feeds/{name}/items?page={rng.randint(1, 500)}"
            specs.append(control.JobSpec(tenant, "http_fetch", {"url": url, "timeout_s": 5}, source=name))
    return specs


def weather(sims: dict[str, Any], stop: threading.Event) -> None:
    """Upstream trouble on a schedule: every 2 minutes vex answers 503 for a while (its
    circuits open, then close through a probe) and sbom drifts its schema for 20 s.
    advisories keeps its hidden limit throughout, which the buckets learn: a limit that
    drops and comes back would be re-found only by the 5-minute probes (ADR 0010)."""
    while not stop.wait(120.0):
        sims["vex"].configure("vex", error_burst=30)
        sims["sbom"].configure("sbom", drift=True)
        if stop.wait(20.0):
            break
        sims["sbom"].configure("sbom", drift=False)


def batch(rng: random.Random) -> list[control.JobSpec]:
    """One tick's jobs, of one tenant: quick and slow ones and a flaky one; for BURNING also a
    job whose upstream keeps answering 503 and, at times, one whose payload no longer parses
    (about one job in six of BURNING's dead-letters, one in tens of thousands of another's)."""
    tenant = rng.choice(TENANTS)
    specs = [control.JobSpec(tenant, "noop") for _ in range(rng.randint(3, 8))]
    specs.append(control.JobSpec(tenant, "sleep", {"seconds": round(rng.uniform(0.2, 3.0), 1)}))
    burning = tenant == BURNING
    specs.append(
        control.JobSpec(tenant, "flaky", {"fail_ratio": BURNING_FAIL_RATIO if burning else HEALTHY_FAIL_RATIO})
    )
    if not burning:
        return specs
    specs.append(
        control.JobSpec(
            tenant,
            "fail",
            {
                "error_class": "http_5xx",
                "retryable": True,
                "message": f"HTTP 503 for /feed?page={rng.randint(1, 50)}",
            },
            max_attempts=2,
        )
    )
    if rng.random() < SCHEMA_MISMATCH_CHANCE:
        specs.append(
            control.JobSpec(
                tenant,
                "fail",
                {
                    "error_class": "schema_mismatch",
                    "retryable": False,
                    "message": "field 'published' missing from advisory",
                },
            )
        )
    return specs


def setup_schedules(engine: sa.Engine, principal: Principal) -> None:
    """Schedules of every tenant (a minute digest since two hours ago, caught up "none", so
    its missed ticks show; a 5-minute Berlin-time rollup) and a backfill of acme's yesterday,
    so the Schedules, Backfills and Watermarks pages have something to show."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    for tenant in TENANTS:
        for name, kw in (
            ("digest-1m", {"every": dt.timedelta(minutes=1), "start": now - dt.timedelta(hours=2), "catchup": "none"}),
            ("rollup-5m", {"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "overlap": "buffer_one"}),
        ):
            spec = control.ScheduleSpec(
                tenant=tenant, name=name, target=control.Target.of_job("noop", {"digest": name}), **kw
            )
            try:
                control.add_schedule(engine, principal, spec, reason="demo schedules")
            except errors.InvalidInput as exc:  # a second `orch up --demo`: already there
                log.debug("demo schedule %s/%s: %s", tenant, name, exc)
    day = now.replace(hour=0, minute=0) - dt.timedelta(days=1)
    backfill = control.BackfillSpec(
        tenant="acme",
        target=control.Target.of_job("noop", {"digest": "history"}),
        start=day,
        end=day + dt.timedelta(days=1),
        window=dt.timedelta(hours=1),
        max_active=2,
    )
    control.create_backfill(engine, principal, backfill, reason="demo backfill", ticket="DEMO-1")


def run(
    engine: sa.Engine, principal: Principal, doorbell: control.Doorbell, stop: threading.Event, sim: Any = None
) -> None:
    """Submit the demo workload until `stop` is set; with `sim`, http_fetch jobs too, on it and
    on a simulator per further feed, which this stops before returning."""
    rng = random.Random()
    sims: dict[str, Any] = {}
    try:
        setup_schedules(engine, principal)
    except (errors.OrchError, sa.exc.SQLAlchemyError) as exc:
        log.warning("demo schedules not set up: %s", exc)
    if sim is not None:
        try:
            sims = start_feed_sims(sim)
            setup_sources(engine, principal, sims)
        except (OSError, errors.OrchError, sa.exc.SQLAlchemyError) as exc:
            log.warning("demo sources not set up: %s", exc)
            stop_feed_sims(sims, sim)
            sims = {}
        else:
            log.info("demo feeds: %s", ", ".join(f"{name} on {s.url}" for name, s in sims.items()))
            threading.Thread(target=weather, args=(sims, stop), name="demo-weather", daemon=True).start()
    try:
        while not stop.wait(0.5):
            specs = batch(rng)
            if sims:
                specs += fetches(rng, rng.choice(TENANTS), sims)
            try:
                control.submit_many(engine, principal, specs, doorbell=doorbell, reason="demo workload")
            except (errors.OrchError, sa.exc.SQLAlchemyError) as exc:
                log.warning("demo submit failed: %s", exc)
    finally:
        stop_feed_sims(sims, sim)
