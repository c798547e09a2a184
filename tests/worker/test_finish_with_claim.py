"""A worker thread's success rides on its next claim (docs/adr/0017): one statement records
the success and claims the next job. Nothing may be lost or written twice: a lease lost
meanwhile discards the success, a blip with the statement's fate unknown hands the success
to the writer, which recognises it when it did commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest
import sqlalchemy as sa

from core import control
from core.domain import errors
from core.domain.auth import Principal
from core.ledger import jobs as ledger_jobs
from tests.conftest import wait_until
from tests.worker.test_pump_blip import _blip
from worker.runtime import pump as pump_mod
from worker.runtime.lanes import Claim, Finish
from worker.runtime.pump import FailedRetryable, Pump, Succeeded
from worker.sdk import ActiveJob


@pytest.fixture
def pump(ledger: sa.Engine) -> Iterator[Pump]:
    p = Pump(ledger, owner="tests:ride", job_types=lambda: ["noop"], lease_policy=lambda t: (30.0, 10.0))
    p.start()
    yield p
    p.stop(timeout=5)


def _submit(ledger: sa.Engine, principal: Principal, n: int, tenant: str = "ride") -> list[int]:
    specs = [control.JobSpec(tenant, "noop")] * n
    return control.submit_many(ledger, principal, specs, doorbell=control.NoDoorbell()).job_ids


def _events(ledger: sa.Engine, job_id: int) -> list[str]:
    with ledger.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.text("SELECT event FROM job_history WHERE job_id = :id ORDER BY id"), {"id": job_id}
            )
        ]


def _state(ledger: sa.Engine, job_id: int) -> str:
    with ledger.connect() as conn:
        return conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()


def test_the_statement_succeeds_what_it_carries_and_claims_the_next(ledger: sa.Engine, principal: Principal) -> None:
    a, b, c = _submit(ledger, principal, 3)
    with ledger.begin() as conn:
        first = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=2, owner="w", job_types=["noop"])
        assert sorted(r["id"] for r in first) == [a, b]
        leases = {r["id"]: r["lease_id"] for r in first}
        # b's lease is not the caller's any more (taken over): its success must not land.
        done, rows = ledger_jobs.succeed_and_claim_jobs(
            conn, [a, b], [leases[a], uuid.uuid4()], queue="default", limit=1, owner="w", job_types=["noop"]
        )
        assert done == {a}
        assert [r["id"] for r in rows] == [c]
        assert rows[0]["attempt"] == 1 and rows[0]["tenant"] == "ride"
        # Nothing left to claim: the success is written all the same, no claimed row comes back.
        done, rows = ledger_jobs.succeed_and_claim_jobs(
            conn, [c], [rows[0]["lease_id"]], queue="default", limit=1, owner="w", job_types=["noop"]
        )
        assert (done, rows) == ({c}, [])
    assert [_state(ledger, j) for j in (a, b, c)] == ["succeeded", "running", "succeeded"]
    assert _events(ledger, a) == ["submit", "claim", "ack", "succeed"]
    assert _events(ledger, b) == ["submit", "claim", "ack"]


def test_a_thread_claim_carries_its_previous_success(ledger: sa.Engine, principal: Principal, pump: Pump) -> None:
    a, b = _submit(ledger, principal, 2)
    job = pump.claim("default")
    assert job is not None and job.id == a
    assert Pump.can_finish_with_claim(job, Succeeded())
    nxt = pump.claim("default", job)
    assert nxt is not None and nxt.id == b
    assert _state(ledger, a) == "succeeded"
    assert pump.stats["finished_with_claims"] == 1
    assert pump.active_count() == 1  # b only: a's success is committed
    last = pump.claim("default", nxt)
    assert last is None
    assert _state(ledger, b) == "succeeded"
    assert pump.active_count() == 0
    assert pump.stats["claim_statements"] == 3 and pump.stats["finished"] == 2


def test_what_cannot_ride_on_a_claim_goes_to_the_writer(ledger: sa.Engine, principal: Principal, pump: Pump) -> None:
    (a,) = _submit(ledger, principal, 1)
    job = pump.claim("default")
    assert job is not None
    assert not Pump.can_finish_with_claim(job, Succeeded('{"rows": 3}'))  # a result is stored with it
    assert not Pump.can_finish_with_claim(job, FailedRetryable(1.0, "http_5xx", "boom"))
    job.learns = True
    assert not Pump.can_finish_with_claim(job, Succeeded())  # its source learns from it
    job.learns = False
    assert Pump.can_finish_with_claim(job, Succeeded())
    assert _state(ledger, a) == "running"


class _Bell:
    def __init__(self) -> None:
        self.rung: list[tuple[int, str]] = []

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        self.rung.extend(jobs)


def test_a_carried_success_that_releases_children_rings_them(ledger: sa.Engine, principal: Principal) -> None:
    bell = _Bell()
    p = Pump(ledger, owner="tests:ride", job_types=lambda: ["noop"], lease_policy=lambda t: (30.0, 10.0), doorbell=bell)
    p.start()
    try:
        specs = [control.JobSpec("ride", "noop", key="a"), control.JobSpec("ride", "noop", key="b", after=["a"])]
        run = control.submit_run(ledger, principal, control.RunSpec("ride", "carry", jobs=specs), control.NoDoorbell())
        a, b = run.jobs["a"], run.jobs["b"]
        job = p.claim("default")
        assert job is not None and job.id == a and job.has_children
        assert Pump.can_finish_with_claim(job, Succeeded())
        # The statement that records a's success releases b, but its claim cannot see b
        # (one snapshot): b is rung right after, so a thread wakes for it.
        assert p.claim("default", job) is None
        # The claimer rings b once every waiting thread has its job (Pump._claim), so the
        # doorbell may come a moment after this claim returns: on a loaded server it did.
        wait_until(lambda: bell.rung == [(b, "default")], timeout=10, what="b's doorbell")
        assert _state(ledger, a) == "succeeded" and _state(ledger, b) == "queued"
        assert p.stats["finished_with_claims"] == 1 and p.stats["released_rung"] == 1
        nxt = p.claim("default")
        assert nxt is not None and nxt.id == b
    finally:
        p.stop(timeout=5)


def test_a_lease_lost_before_the_claim_discards_the_success(
    ledger: sa.Engine, principal: Principal, pump: Pump, caplog: pytest.LogCaptureFixture
) -> None:
    (a,) = _submit(ledger, principal, 1)
    job = pump.claim("default")
    assert job is not None
    with ledger.begin() as conn:  # the reaper took it: its lease ran out, another attempt follows
        conn.execute(
            sa.text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": a}
        )
        ledger_jobs.reap_running_jobs(conn, limit=10, actor="tests")
    caplog.set_level(logging.WARNING, logger="worker.runtime.pump")
    assert pump.claim("default", job) is None
    # The statement did not write it; the writer's succeed_jobs finds the lease lost.
    wait_until(lambda: "lease lost before its outcome was written" in caplog.text, timeout=10, what="the warning")
    assert _state(ledger, a) == "retrying"
    assert _events(ledger, a).count("succeed") == 0
    assert pump.stats["finished"] == 0 and pump.active_count() == 0


def test_a_carried_success_whose_row_another_transaction_holds_is_skipped_not_waited_for(
    ledger: sa.Engine, principal: Principal
) -> None:
    a, b = _submit(ledger, principal, 2)
    with ledger.begin() as conn:
        (first,) = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=1, owner="w", job_types=["noop"])
    with ledger.connect() as holder, ledger.connect() as conn:
        # Another transaction holds a's row, as another worker's claim does that read the
        # queue before a was claimed (it locked a's new version, then found it not queued).
        holder.execute(sa.text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": a})
        conn.execute(sa.text("SET lock_timeout = '5s'"))  # waiting would fail the test, not hang it
        done, rows = ledger_jobs.succeed_and_claim_jobs(
            conn, [a], [first["lease_id"]], queue="default", limit=1, owner="w", job_types=["noop"]
        )
        assert done == set()
        assert [r["id"] for r in rows] == [b]
        conn.commit()
        holder.rollback()
    assert _state(ledger, a) == "running"
    with ledger.begin() as conn:  # what the writer then does: it waits, and writes it
        (moved,) = ledger_jobs.succeed_jobs(conn, [a], [first["lease_id"]], actor="w")
        assert moved["id"] == a
    assert _events(ledger, a) == ["submit", "claim", "ack", "succeed"]


def test_a_skipped_carried_success_is_written_by_the_writer_once(
    ledger: sa.Engine, principal: Principal, pump: Pump, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _submit(ledger, principal, 2)
    job = pump.claim("default")
    assert job is not None and job.id == a
    caplog.set_level(logging.WARNING, logger="worker.runtime.pump")
    with ledger.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": a})
        # The claim does not wait for the holder: the thread gets its next job.
        nxt = pump.claim("default", job, timeout=5)
        assert nxt is not None and nxt.id == b
        assert _state(ledger, a) == "running"
        assert pump.stats["finished_with_claims"] == 0
        holder.rollback()
    wait_until(lambda: _state(ledger, a) == "succeeded", timeout=10, what="a's success")
    assert _events(ledger, a).count("succeed") == 1
    wait_until(lambda: pump.stats["finished"] == 1, timeout=10, what="the writer's count")
    assert "lease lost" not in caplog.text, caplog.text
    assert pump.active_count() == 1  # b


def test_a_blip_after_the_statement_committed_writes_the_success_once(
    ledger: sa.Engine,
    principal: Principal,
    pump: Pump,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = _submit(ledger, principal, 2)
    job = pump.claim("default")
    assert job is not None and job.id == a
    monkeypatch.setattr(pump_mod.ledger, "succeed_and_claim_jobs", _blip(pump_mod.ledger.succeed_and_claim_jobs))
    caplog.set_level(logging.WARNING, logger="worker.runtime.pump")
    with pytest.raises(errors.Unavailable):
        pump.claim("default", job)
    # The statement committed (a succeeded, b claimed for nobody): the writer recognises a's
    # success as written, and b's lease runs out to the reaper, which starts it again.
    wait_until(lambda: pump.stats["finished"] >= 1 and not pump._write_pending(), timeout=20, what="the success")
    assert _state(ledger, a) == "succeeded"
    assert _events(ledger, a).count("succeed") == 1
    assert "lease lost" not in caplog.text, caplog.text
    assert _state(ledger, b) == "running"


def test_a_skipped_carried_success_rides_on_the_next_claim_then_goes_to_the_writer(
    ledger: sa.Engine, principal: Principal
) -> None:
    """The claimer driven by hand (the pump is not started): a success skipped once rides on
    the next claim statement; skipped twice, it is the writer's."""
    a, b, c, d = _submit(ledger, principal, 4)
    p = Pump(ledger, owner="tests:ride", job_types=lambda: ["noop"], lease_policy=lambda t: (30.0, 10.0))
    with ledger.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=2, owner="tests:ride", job_types=["noop"])
    ja, jb = (p._active_job(r) for r in sorted(rows, key=lambda r: r["id"]))
    assert (ja.id, jb.id) == (a, b)

    def claim(conn: sa.Connection, job: ActiveJob) -> Future[ActiveJob | None]:
        fut: Future[ActiveJob | None] = Future()
        p._claim(conn, [Claim("default", fut, Finish(job, Succeeded()))])
        return fut

    with ledger.connect() as holder, ledger.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        holder.execute(sa.text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": a})
        got = claim(conn, ja).result(0)
        assert got is not None and got.id == c
        assert [f.job.id for f in p._carried] == [a] and p._finishes == []
        holder.rollback()
        # The next claim carries a again with b's success: both are written, no writer needed.
        got = claim(conn, jb).result(0)
        assert got is not None and got.id == d
        assert p._carried == [] and p._finishes == []
        assert p.stats["finished_with_claims"] == 2
        assert [_state(ledger, j) for j in (a, b)] == ["succeeded", "succeeded"]
        # Held through two claims: the second hands it to the writer.
        jc, jd = p._active[c], p._active[d]
        holder.execute(sa.text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": c})
        assert claim(conn, jc).result(0) is None
        assert [f.job.id for f in p._carried] == [c]
        assert claim(conn, jd).result(0) is None
        assert p._carried == [] and [f.job.id for f in p._finishes] == [c]
        holder.rollback()
    assert [_state(ledger, j) for j in (c, d)] == ["running", "succeeded"]
    assert _events(ledger, a).count("succeed") == 1
