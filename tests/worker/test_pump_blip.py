"""A database blip in the middle of a writer batch: every statement of the batch is its own
transaction, so a broken connection can cut the batch after some statements committed, or
leave one statement's fate unknown. What committed must not be written again (no log line
twice) and an outcome that did commit must not come back as a lost lease."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from tests.conftest import wait_until
from worker.runtime import pump as pump_mod
from worker.runtime.pump import Pump, Succeeded


def _blip(real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, whose first call commits and then loses the connection before the answer."""
    calls = {"n": 0}

    def once_then_lost(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        result = real(*args, **kw)
        if calls["n"] == 1:
            raise sa.exc.OperationalError("(simulated)", {}, Exception("server closed the connection unexpectedly"))
        return result

    return once_then_lost


@pytest.fixture
def pump(ledger: sa.Engine) -> Iterator[Pump]:
    p = Pump(ledger, owner="tests:pump", job_types=lambda: ["noop"], lease_policy=lambda t: (30.0, 10.0))
    p.start()
    yield p
    p.stop(timeout=5)


@pytest.mark.parametrize("cut", ["insert_logs", "succeed_jobs", "set_progress"])
def test_a_batch_cut_by_a_blip_is_written_once(
    ledger: sa.Engine,
    principal: Principal,
    pump: Pump,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut: str,
) -> None:
    job_id = control.submit(ledger, principal, control.JobSpec("blip", "noop"), doorbell=control.NoDoorbell())
    job = pump.claim("default")
    assert job is not None and job.id == job_id
    monkeypatch.setattr(pump_mod.ledger, cut, _blip(getattr(pump_mod.ledger, cut)))
    caplog.set_level(logging.WARNING, logger="worker.runtime.pump")
    with pump._write_cond:  # one batch: log lines, progress and the outcome together
        pump.log(job, "info", "fetched page 1")
        pump.log(job, "info", "fetched page 2")
        pump.progress(job, 0.5, "half way")
        pump.finish(job, Succeeded())
    wait_until(lambda: pump.stats["finished"] >= 1 and not pump._write_pending(), timeout=20, what="the outcome")
    with ledger.connect() as conn:
        lines = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT message FROM job_logs WHERE job_id = :id ORDER BY id"), {"id": job_id}
            )
        ]
        state = conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()
        succeeded = conn.execute(
            sa.text("SELECT count(*) FROM job_history WHERE job_id = :id AND event = 'succeed'"), {"id": job_id}
        ).scalar_one()
    assert lines == ["fetched page 1", "fetched page 2"]
    assert (state, succeeded) == ("succeeded", 1)
    assert pump.stats["finished"] == 1
    assert "ledger unavailable" in caplog.text, "the blip did not happen"
    assert "lease lost" not in caplog.text, caplog.text
    assert pump.active_count() == 0
