"""The demo workload of `orch up --demo`: a steady mix of successes, slow jobs, flaky jobs
that retry, and failures that dead-letter, across two tenants."""

from __future__ import annotations

import logging
import random
import threading

import sqlalchemy as sa

from core import control
from core.domain import errors
from core.domain.auth import Principal

log = logging.getLogger(__name__)

TENANTS = ("acme", "globex")


def batch(rng: random.Random) -> list[control.JobSpec]:
    tenant = rng.choice(TENANTS)
    specs = [control.JobSpec(tenant, "noop") for _ in range(rng.randint(3, 8))]
    specs.append(control.JobSpec(tenant, "sleep", {"seconds": round(rng.uniform(0.2, 3.0), 1)}))
    specs.append(control.JobSpec(tenant, "flaky", {"fail_ratio": 0.4}))
    if rng.random() < 0.3:
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
    if rng.random() < 0.15:
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


def run(engine: sa.Engine, principal: Principal, doorbell: control.Doorbell, stop: threading.Event) -> None:
    rng = random.Random()
    while not stop.wait(0.5):
        try:
            control.submit_many(engine, principal, batch(rng), doorbell=doorbell, reason="demo workload")
        except (errors.OrchError, sa.exc.SQLAlchemyError) as exc:
            log.warning("demo submit failed: %s", exc)
