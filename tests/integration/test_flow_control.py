"""Flow control in the ledger against a real PostgreSQL: token buckets shared by concurrent
claimers, quotas, pauses, blackouts, circuit breakers, AIMD, backpressure and the CLI contract.

Claimers here are threads with their own autocommit connections calling the ledger's claim
statement, the way a worker's pump does; every time is the database's clock.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain import errors
from core.domain.auth import Principal, Scope
from core.ledger import jobs as ledger_jobs
from tests.conftest import ROOT, Services, session_namespace, wait_until
from worker.runtime import scheduler as scheduler_mod

QUEUE = "default"
TYPES = ["noop", "sleep", "fail", "flaky", "test.report", "test.retry_after", "test.short_lease"]
TENANT = "flow"
REASON = "tests"


# -- helpers ------------------------------------------------------------------------------


def add_source(
    engine: sa.Engine,
    principal: Principal,
    name: str = "feed",
    *,
    tenant: str = TENANT,
    host: str = "feeds.example.org",
    rate: float | None = None,
    burst: float | None = None,
    max_active: int | None = None,
) -> control.SourceChange:
    return control.add_source(
        engine,
        principal,
        tenant=tenant,
        name=name,
        host=host,
        rate=rate,
        burst=burst,
        max_active=max_active,
        reason=REASON,
    )


def submit(
    engine: sa.Engine,
    principal: Principal,
    n: int = 1,
    *,
    source: str | None = None,
    job_type: str = "noop",
    tenant: str = TENANT,
    max_attempts: int | None = None,
) -> list[int]:
    specs = [control.JobSpec(tenant, job_type, {"i": i}, source=source, max_attempts=max_attempts) for i in range(n)]
    return control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell()).job_ids


def claim(engine: sa.Engine, limit: int = 100, *, owner: str = "tests:claimer") -> list[sa.RowMapping]:
    """claim_and_start in one autocommit statement, as a worker's pump does."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=limit, owner=owner, job_types=TYPES)


def succeed(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> list[sa.RowMapping]:
    with engine.begin() as conn:
        return ledger_jobs.succeed_jobs(
            conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="tests:claimer"
        )


def fail_final(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> list[sa.RowMapping]:
    with engine.begin() as conn:
        return ledger_jobs.fail_final_jobs(
            conn,
            [r["id"] for r in rows],
            [r["lease_id"] for r in rows],
            ["http_4xx"] * len(rows),
            ["HTTP 404"] * len(rows),
            ["fatal error"] * len(rows),
            actor="tests:claimer",
        )


def record(engine: sa.Engine, source_id: int, kinds: Sequence[str], **kw: Any) -> None:
    """Feed outcomes of `source_id` to its circuit and bucket (what the pump does)."""
    retry_after = kw.get("retry_after", [None] * len(kinds))
    started = kw.get("started", [None] * len(kinds))
    with engine.begin() as conn:
        ledger_jobs.record_outcomes(
            conn, [source_id] * len(kinds), list(kinds), retry_after, started, actor="tests:pump"
        )


def job(engine: sa.Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one())


def jobs(engine: sa.Engine, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM jobs WHERE id = ANY(:ids)"), {"ids": list(ids)}).mappings()
        return {int(r["id"]): dict(r) for r in rows}


def states(engine: sa.Engine, ids: Sequence[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for j in jobs(engine, ids).values():
        key = j["state"] if j["wait_reason"] is None else f"{j['state']}/{j['wait_reason']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def source_row(engine: sa.Engine, name: str = "feed", tenant: str = TENANT) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT s.* FROM sources s JOIN tenants t ON t.id = s.tenant_id WHERE t.name = :t AND s.name = :n"
                ),
                {"t": tenant, "n": name},
            )
            .mappings()
            .one()
        )


def bucket_row(engine: sa.Engine, bucket_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT *, now() AS db_now FROM buckets WHERE id = :id"), {"id": bucket_id})
            .mappings()
            .one()
        )


def execute(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def db_now(engine: sa.Engine) -> dt.datetime:
    with engine.connect() as conn:
        value: dt.datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
        return value


def audit_actions(engine: sa.Engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action, target, reason FROM audit_log ORDER BY id")).all()
        return [(r[0], r[1], r[2]) for r in rows]


def history(engine: sa.Engine, ids: Sequence[int], event: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT job_id, from_state, event, to_state, at, reason, attempt FROM job_history"
                " WHERE job_id = ANY(:ids) AND (CAST(:event AS text) IS NULL OR event = :event) ORDER BY id"
            ),
            {"ids": list(ids), "event": event},
        ).mappings()
        return [dict(r) for r in rows]


class Scheduler:
    """The scheduler's steps, run by hand (no broker needed: doorbells are not rung)."""

    def __init__(self, engine: sa.Engine) -> None:
        from core.settings import Settings

        settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)))
        self.s = scheduler_mod.Scheduler(engine, _NoBroker(), control.NoDoorbell(), settings)  # type: ignore[arg-type]

    def release_due(self) -> int:
        return self.s.release_due()

    def move_blackouts(self) -> int:
        return self.s.move_blackouts()

    def release_backpressure(self) -> int:
        return self.s.release_backpressure()

    def reap(self) -> tuple[int, int]:
        return self.s.reap()


class _NoBroker:
    def outstanding(self, queue: str) -> int:  # pragma: no cover - not used by these steps
        return 0


def max_in_window(times: Sequence[float], window: float) -> int:
    """The largest number of events in any closed interval of length `window`."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def over_grants(times: Sequence[float], capacity: float, rate: float, eps: float) -> list[tuple[int, float]]:
    """(starts, seconds) of every span between two starts with more starts than a token
    bucket may grant: capacity + rate * seconds (+ eps)."""
    ts = sorted(times)
    bad: list[tuple[int, float]] = []
    for i in range(len(ts)):
        for j in range(i, len(ts)):
            span = ts[j] - ts[i]
            if j - i + 1 > capacity + rate * span + eps:
                bad.append((j - i + 1, round(span, 4)))
    return bad


def grant_times(engine: sa.Engine, ids: Sequence[int]) -> list[float]:
    """When the bucket granted each start, in seconds from the first. Claims that hold the
    bucket's row lock in turn write their history rows in that order, and a claim whose
    transaction began before the previous grant is charged at that grant's time (the
    bucket's clock never goes back), so the grant time is the running maximum of the claim
    timestamps in history order."""
    acks = history(engine, ids, "ack")  # ordered by history id
    out: list[float] = []
    latest: dt.datetime | None = None
    for a in acks:
        latest = a["at"] if latest is None else max(latest, a["at"])
        out.append(latest.timestamp())
    first = min(out)
    return [t - first for t in out]


def run_claimers(
    engine: sa.Engine, n_jobs: int, n_threads: int, *, limit: int, hold_s: float = 0.0, timeout: float = 30
) -> list[int]:
    """Threads with their own autocommit connections claim (limit per statement) and finish
    jobs until n_jobs have started; the main thread plays the scheduler (release_due).
    Returns the started job ids, in the order the claims returned them."""
    sched = Scheduler(engine)
    failures: list[BaseException] = []
    started: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads + 1)
    stop = threading.Event()

    def claimer(owner: str) -> None:
        try:
            barrier.wait(10)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while not stop.is_set():
                    rows = ledger_jobs.claim_and_start_jobs(
                        conn, queue=QUEUE, limit=limit, owner=owner, job_types=TYPES
                    )
                    if not rows:
                        stop.wait(0.002)
                        continue
                    with lock:
                        started.extend(r["id"] for r in rows)
                    if hold_s:
                        stop.wait(hold_s)  # the handler's work
                    done = ledger_jobs.succeed_jobs(
                        conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor=owner
                    )
                    assert len(done) == len(rows)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"claimer-{i}",), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait(10)
    try:

        def all_started() -> bool:
            sched.release_due()
            return len(started) >= n_jobs or bool(failures)

        wait_until(all_started, timeout=timeout, interval=0.01, what=f"{n_jobs} jobs to start")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures
    return started


# -- token bucket -------------------------------------------------------------------------


def test_bucket_grants_its_burst_then_one_token_per_interval(ledger: sa.Engine, principal: Principal) -> None:
    rate, burst, n_jobs = 10.0, 3.0, 25
    add_source(ledger, principal, rate=rate, burst=burst)
    ids = submit(ledger, principal, n_jobs, source="feed")
    first = claim(ledger, limit=n_jobs)
    assert [r["id"] for r in first] == ids[:3], "a full bucket grants exactly its burst"
    succeed(ledger, first)
    started = run_claimers(ledger, n_jobs - 3, 1, limit=5)
    assert sorted(started) == ids[3:]
    assert states(ledger, ids) == {"succeeded": n_jobs}

    times = grant_times(ledger, ids)
    bad = over_grants(times, burst, rate, eps=0.01)
    assert not bad, f"more starts than capacity + rate * t: {bad[:5]}"
    # No faster than the refill rate allows, and not much slower either (jobs come back
    # when their token is due).
    assert (n_jobs - burst) / rate - 0.01 <= max(times) <= (n_jobs - burst) / rate + 2.0
    assert {j["attempt"] for j in jobs(ledger, ids).values()} == {1}


def test_bucket_shared_by_concurrent_claimers_never_over_grants(ledger: sa.Engine, principal: Principal) -> None:
    rate, burst, n_jobs, n_threads = 10.0, 20.0, 50, 8
    add_source(ledger, principal, rate=rate, burst=burst)
    ids = submit(ledger, principal, n_jobs, source="feed")
    started = run_claimers(ledger, n_jobs, n_threads, limit=1)
    assert sorted(started) == sorted(ids), "a job started twice or not at all"
    assert states(ledger, ids) == {"succeeded": n_jobs}
    owners = {h["job_id"] for h in history(ledger, ids, "claim")}
    assert owners == set(ids)

    times = grant_times(ledger, ids)
    bad = over_grants(times, burst, rate, eps=0.01)
    assert not bad, (
        f"{len(bad)} span(s) with more starts than capacity + rate * t, worst "
        f"{max(bad, key=lambda b: b[0] - burst - rate * b[1])}; whole run {max(times):.3f}s for {n_jobs} jobs"
        f" (at least {(n_jobs - burst) / rate:.3f}s)"
    )
    assert max_in_window(times, 1.0) <= burst + rate
    denies = history(ledger, ids, "deny")
    assert denies and all(d["reason"].startswith("rate_limited until ") for d in denies)
    assert all(d["attempt"] == 0 for d in denies), "a denied job had used an attempt"
    assert {j["attempt"] for j in jobs(ledger, ids).values()} == {1}, "throttling consumed an attempt"
    assert bucket_row(ledger, source_row(ledger)["bucket_id"])["denied_total"] >= len(denies)


def test_denied_job_waits_rate_limited_until_its_token(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, rate=2.0, burst=1.0)
    ids = submit(ledger, principal, 3, source="feed")
    got = claim(ledger, limit=3)
    assert [r["id"] for r in got] == ids[:1]
    [deny_at] = {d["at"] for d in history(ledger, ids, "deny")}
    denied = jobs(ledger, ids[1:])
    for j in denied.values():
        assert (j["state"], j["wait_reason"], j["attempt"]) == ("throttled", "rate_limited", 0)
        assert j["not_before"] > deny_at
    # One token every 0.5 s: the second job's comes 0.5 s after the claim took the only
    # one, the third's 0.5 s later (denied jobs queue up one token apart).
    nb = [denied[i]["not_before"] for i in ids[1:]]
    assert (nb[0] - deny_at).total_seconds() == pytest.approx(0.5, abs=0.02)
    assert (nb[1] - nb[0]).total_seconds() == pytest.approx(0.5, abs=0.02)
    assert Scheduler(ledger).release_due() == 0, "released before its token exists"

    def second_started() -> bool:
        Scheduler(ledger).release_due()
        claim(ledger)
        return job(ledger, ids[1])["state"] == "running"

    wait_until(second_started, timeout=5, what="the second job to get its token")
    second = job(ledger, ids[1])
    assert second["attempt"] == 1 and second["started_at"] >= nb[0]
    assert (second["wait_reason"], second["not_before"]) == (None, None)


def test_upstream_429_gives_the_attempt_back(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, rate=100.0, burst=10.0)
    [job_id] = submit(ledger, principal, source="feed", max_attempts=1)
    [row] = claim(ledger)
    assert row["attempt"] == 1
    with ledger.begin() as conn:
        moved = ledger_jobs.throttle_jobs(conn, [job_id], [row["lease_id"]], [0.2], ["HTTP 429"], actor="w")
    assert [r["id"] for r in moved] == [job_id]
    j = job(ledger, job_id)
    assert (j["state"], j["wait_reason"], j["attempt"], j["lease_expires_at"]) == (
        "throttled",
        "rate_limited",
        0,
        None,
    )
    [h] = history(ledger, [job_id], "throttle")
    assert (h["from_state"], h["to_state"]) == ("running", "throttled")
    assert (j["not_before"] - h["at"]).total_seconds() == pytest.approx(0.2, abs=0.01)
    # The old lease is gone: a late outcome of that run changes nothing.
    assert succeed(ledger, [row]) == []

    def restarted() -> list[sa.RowMapping]:
        Scheduler(ledger).release_due()
        return claim(ledger)

    [again] = wait_until(restarted, timeout=5, what="the throttled job to start again")
    assert again["attempt"] == 1, "a job with max_attempts 1 ran again only because the 429 used no attempt"
    assert [r["id"] for r in succeed(ledger, [again])] == [job_id]
    assert job(ledger, job_id)["state"] == "succeeded"


# -- quotas -------------------------------------------------------------------------------


def test_quota_max_active_holds_under_concurrent_claimers(ledger: sa.Engine, principal: Principal) -> None:
    max_active, n_jobs = 3, 24
    control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=max_active, reason=REASON)
    ids = submit(ledger, principal, n_jobs)
    peak: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        # Each sample is one snapshot of the ledger: the slots in use at that instant.
        with ledger.connect() as conn:
            while not stop.is_set():
                peak.append(
                    conn.execute(
                        sa.text("SELECT count(*) FROM jobs WHERE job_type = 'noop' AND state IN ('leased', 'running')")
                    ).scalar_one()
                )
                conn.commit()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = run_claimers(ledger, n_jobs, 8, limit=1, hold_s=0.03)
    finally:
        stop.set()
        sampler.join(10)
    assert sorted(started) == sorted(ids)
    assert states(ledger, ids) == {"succeeded": n_jobs}
    assert max(peak) <= max_active, f"{max(peak)} jobs held slots of a quota of {max_active}"
    assert max(peak) == max_active, "the quota was never full: the test did not exercise it"
    denies = history(ledger, ids, "deny")
    assert denies and all(d["reason"].startswith("quota until ") for d in denies)
    assert {j["attempt"] for j in jobs(ledger, ids).values()} == {1}


def test_a_quota_without_room_for_the_batch_takes_only_the_admitted_jobs_tokens(
    ledger: sa.Engine, principal: Principal
) -> None:
    """The fast path takes the whole batch's tokens before it counts the quota's slots
    (orch_admit v3); when the slots are fewer, the tokens go back and the general path takes
    one per job it admits."""
    add_source(ledger, principal, rate=0.001, burst=10.0)
    control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=3, reason=REASON)
    ids = submit(ledger, principal, 5, source="feed")
    got = claim(ledger, limit=5)
    assert [r["id"] for r in got] == ids[:3]
    assert {d["job_id"] for d in history(ledger, ids, "deny")} == set(ids[3:])
    assert all(d["reason"].startswith("quota until ") for d in history(ledger, ids, "deny"))
    bucket = bucket_row(ledger, source_row(ledger)["bucket_id"])
    # 10 tokens, 3 taken; the refill at 0.001/s adds well under 0.01 during the test.
    assert bucket["tokens"] == pytest.approx(7.0, abs=0.01)
    assert bucket["denied_total"] == 0, "the quota denied them, not the bucket"


def test_quota_max_per_hour_caps_starts(ledger: sa.Engine, principal: Principal) -> None:
    control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_per_hour=7, reason=REASON)
    ids = submit(ledger, principal, 20)
    barrier = threading.Barrier(6)
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        barrier.wait(10)
        for _ in range(6):
            rows = claim(ledger, limit=2)
            with lock:
                got.extend(r["id"] for r in rows)
            succeed(ledger, rows)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == len(set(got)) == 7, f"{len(got)} starts under max_per_hour 7"
    waiting = [j for j in jobs(ledger, ids).values() if j["state"] == "throttled"]
    assert len(waiting) == 13 and {j["wait_reason"] for j in waiting} == {"quota"}
    # They come back at the next minute (the hour is counted per minute), not at once.
    now = db_now(ledger)
    next_minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    assert {j["not_before"] for j in waiting} <= {next_minute, next_minute - dt.timedelta(minutes=1)}
    # Even when due again, they wait while the hour's starts are used up.
    execute(ledger, "UPDATE jobs SET not_before = now() WHERE state = 'throttled'")
    assert Scheduler(ledger).release_due() == 13
    assert claim(ledger, limit=20) == []
    with ledger.connect() as conn:
        [q] = queries.quotas(conn, principal, tenant=TENANT)
    assert (q["max_per_hour"], q["started_last_hour"], q["waiting"]) == (7, 7, 13)


def _end_by_success(engine: sa.Engine, principal: Principal, row: Mapping[str, Any]) -> None:
    assert succeed(engine, [row])


def _end_by_failure(engine: sa.Engine, principal: Principal, row: Mapping[str, Any]) -> None:
    assert fail_final(engine, [row])


def _end_by_retryable_failure(engine: sa.Engine, principal: Principal, row: Mapping[str, Any]) -> None:
    with engine.begin() as conn:
        assert ledger_jobs.fail_retryable_jobs(
            conn, [row["id"]], [row["lease_id"]], [60.0], ["http_5xx"], ["HTTP 503"], actor="w"
        )


def _end_by_cancel(engine: sa.Engine, principal: Principal, row: Mapping[str, Any]) -> None:
    assert control.cancel(engine, principal, row["id"], reason=REASON) == "cancel_requested"
    with engine.begin() as conn:  # the handler notices and stops
        assert ledger_jobs.cancel_running_jobs(conn, [row["id"]], [row["lease_id"]], actor="w")


def _end_by_lease_expiry(engine: sa.Engine, principal: Principal, row: Mapping[str, Any]) -> None:
    # The worker died: no heartbeat, the lease runs out, the scheduler's reaper takes it.
    execute(engine, "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id", id=row["id"])
    assert Scheduler(engine).reap() == (0, 1)


@pytest.mark.parametrize(
    "end",
    [_end_by_success, _end_by_failure, _end_by_retryable_failure, _end_by_cancel, _end_by_lease_expiry],
    ids=["success", "failure", "retryable", "cancel", "lease_expiry"],
)
def test_quota_slot_is_freed_on_every_exit_path(ledger: sa.Engine, principal: Principal, end: Any) -> None:
    control.set_quota(ledger, principal, tenant=TENANT, job_type="sleep", max_active=1, reason=REASON)
    first, second = submit(ledger, principal, 2, job_type="sleep", max_attempts=3)
    [row] = claim(ledger, limit=2)
    assert row["id"] == first
    held = job(ledger, second)
    assert (held["state"], held["wait_reason"]) == ("throttled", "quota")
    # Due again while the slot is held: still denied.
    execute(ledger, "UPDATE jobs SET not_before = now() WHERE id = :id", id=second)
    assert Scheduler(ledger).release_due() == 1
    assert claim(ledger) == []
    assert job(ledger, second)["wait_reason"] == "quota"

    end(ledger, principal, row)
    execute(ledger, "UPDATE jobs SET not_before = now() WHERE id = :id", id=second)
    Scheduler(ledger).release_due()
    [again] = claim(ledger, limit=2)
    # A reaped job is retried at once and, older, takes the freed slot first.
    assert again["id"] == (first if end is _end_by_lease_expiry else second), "the slot was not given back"
    with ledger.connect() as conn:
        [q] = queries.quotas(conn, principal, tenant=TENANT)
    assert (q["active"], q["max_active"]) == (1, 1)


# -- pause and resume ----------------------------------------------------------------------


def test_pause_and_resume_a_source(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal)
    add_source(ledger, principal, "other")
    held = submit(ledger, principal, 3, source="feed")
    free = submit(ledger, principal, 2, source="other")
    r = control.pause(ledger, principal, tenant=TENANT, source="feed", reason="upstream maintenance", ticket="CHG-1")
    assert r.changed is True
    got = claim(ledger, limit=10)
    assert sorted(r["id"] for r in got) == free
    now = db_now(ledger)
    for j in jobs(ledger, held).values():
        assert (j["state"], j["wait_reason"], j["attempt"]) == ("throttled", "paused", 0)
        assert j["not_before"] > now + dt.timedelta(minutes=5)  # not before a resume
    with ledger.connect() as conn:
        assert queries.source(conn, principal, tenant=TENANT, name="feed")["health"] == "paused"
        assert queries.waiting_by_reason(conn, principal, tenant=TENANT)["paused"] == 3

    again = control.pause(ledger, principal, tenant=TENANT, source="feed", reason="twice")
    assert again.changed is False
    r = control.resume(ledger, principal, tenant=TENANT, source="feed", reason="maintenance over")
    assert (r.changed, r.released) == (True, 3)
    now = db_now(ledger)
    assert all(j["not_before"] <= now for j in jobs(ledger, held).values()), "resume did not release at once"
    assert Scheduler(ledger).release_due() == 3
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == held
    assert control.resume(ledger, principal, tenant=TENANT, source="feed", reason="again").changed is False

    actions = audit_actions(ledger)
    assert [a for a in actions if a[0] in ("pause", "resume")] == [
        ("pause", "source feed", "upstream maintenance"),
        ("pause", "source feed", "twice"),
        ("resume", "source feed", "maintenance over"),
        ("resume", "source feed", "again"),
    ]
    with ledger.connect() as conn:
        ticket = conn.execute(sa.text("SELECT ticket FROM audit_log WHERE reason = 'upstream maintenance'")).scalar()
    assert ticket == "CHG-1"


def test_pause_a_job_type_of_a_tenant(ledger: sa.Engine, principal: Principal) -> None:
    control.pause(ledger, principal, tenant=TENANT, job_type="sleep", reason=REASON)
    sleeps = submit(ledger, principal, 2, job_type="sleep")
    noops = submit(ledger, principal, 2)
    elsewhere = submit(ledger, principal, 1, job_type="sleep", tenant="other-tenant")
    got = claim(ledger, limit=10)
    assert sorted(r["id"] for r in got) == sorted(noops + elsewhere)
    assert states(ledger, sleeps) == {"throttled/paused": 2}
    assert control.resume(ledger, principal, tenant=TENANT, job_type="sleep", reason=REASON).released == 2
    assert Scheduler(ledger).release_due() == 2
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == sleeps


def test_pause_a_whole_tenant(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal)
    control.pause(ledger, principal, tenant=TENANT, reason=REASON)
    mine = submit(ledger, principal, 2) + submit(ledger, principal, 1, source="feed", job_type="sleep")
    theirs = submit(ledger, principal, 2, tenant="other-tenant")
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == theirs
    assert states(ledger, mine) == {"throttled/paused": 3}
    # Resuming another scope does not lift the tenant's pause.
    assert control.resume(ledger, principal, tenant=TENANT, job_type="noop", reason=REASON).changed is False
    assert control.resume(ledger, principal, tenant=TENANT, reason=REASON).released == 3
    assert Scheduler(ledger).release_due() == 3
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == mine


VIEWER = Principal(subject="viewer", scopes=frozenset({Scope.READ}))
OUTSIDER = Principal(subject="outsider", scopes=frozenset(Scope), tenants=frozenset({"elsewhere"}))


def test_pause_needs_a_reason_and_the_operate_scope(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal)
    for reason in (None, "", "   "):
        with pytest.raises(errors.ReasonRequired, match="needs a reason"):
            control.pause(ledger, principal, tenant=TENANT, source="feed", reason=reason)
    with pytest.raises(errors.InvalidInput, match="256"):
        control.pause(ledger, principal, tenant=TENANT, source="feed", reason="x" * 257)
    for who in (VIEWER, OUTSIDER):
        with pytest.raises(errors.Forbidden):
            control.pause(ledger, who, tenant=TENANT, source="feed", reason=REASON)
        with pytest.raises(errors.Forbidden):
            control.pause(ledger, who, tenant=TENANT, reason=REASON)
    with pytest.raises(errors.NotFound):
        control.pause(ledger, principal, tenant=TENANT, source="nope", reason=REASON)
    with pytest.raises(errors.InvalidInput):
        control.pause(ledger, principal, tenant=TENANT, source="feed", job_type="noop", reason=REASON)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pauses")).scalar_one() == 0
    assert [a for a in audit_actions(ledger) if a[0] != "source.add"] == [], "a refused call left an audit row"
    # Nothing was paused: a job of the source starts.
    [job_id] = submit(ledger, principal, source="feed")
    assert [r["id"] for r in claim(ledger)] == [job_id]


# -- blackouts -----------------------------------------------------------------------------


def test_one_off_blackout_holds_jobs_until_its_end_and_removal_releases_them(
    ledger: sa.Engine, principal: Principal
) -> None:
    add_source(ledger, principal)
    add_source(ledger, principal, "other")
    now = db_now(ledger)
    end = (now + dt.timedelta(minutes=30)).replace(microsecond=0)
    b = control.add_blackout(
        ledger,
        principal,
        tenant=TENANT,
        source="feed",
        starts_at=now - dt.timedelta(seconds=5),
        ends_at=end,
        reason="vendor window",
    )
    held = submit(ledger, principal, 2, source="feed")
    free = submit(ledger, principal, 1, source="other") + submit(ledger, principal, 1)
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == sorted(free)
    for j in jobs(ledger, held).values():
        assert (j["state"], j["wait_reason"], j["not_before"], j["attempt"]) == ("throttled", "blackout", end, 0)
    assert Scheduler(ledger).release_due() == 0
    with ledger.connect() as conn:
        listed = queries.blackouts(conn, principal, tenant=TENANT)
        assert [(x["id"], x["source"], x["active"], x["window_end"]) for x in listed] == [
            (b.id, "feed", True, end.isoformat())
        ]
        assert queries.source(conn, principal, tenant=TENANT, name="feed")["health"] == "blackout"

    r = control.remove_blackout(ledger, principal, b.id, reason="window cancelled")
    assert (r.removed, r.released) == (True, 2)
    assert Scheduler(ledger).release_due() == 2
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == held
    assert [a[0] for a in audit_actions(ledger) if a[0].startswith("blackout")] == ["blackout.add", "blackout.remove"]
    with pytest.raises(errors.NotFound):
        control.remove_blackout(ledger, principal, b.id, reason=REASON)


def test_tenant_blackout_ends_on_its_own(ledger: sa.Engine, principal: Principal) -> None:
    now = db_now(ledger)
    end = now + dt.timedelta(seconds=1.0)
    control.add_blackout(ledger, principal, tenant=TENANT, starts_at=now, ends_at=end, reason=REASON)
    ids = submit(ledger, principal, 3)
    other = submit(ledger, principal, 1, tenant="other-tenant")
    assert [r["id"] for r in claim(ledger, limit=10)] == other
    assert {j["not_before"] for j in jobs(ledger, ids).values()} == {end}

    def released() -> list[sa.RowMapping]:
        Scheduler(ledger).release_due()
        return claim(ledger, limit=10)

    got = wait_until(released, timeout=5, what="the blackout to end")
    assert sorted(r["id"] for r in got) == ids
    assert all(j["started_at"] >= end for j in jobs(ledger, ids).values()), "a job started inside the blackout"


def test_cron_blackout_window_is_computed_and_moved_on(ledger: sa.Engine, principal: Principal) -> None:
    from core.domain import cron

    now = dt.datetime.now(dt.UTC)
    b = control.add_blackout(
        ledger, principal, tenant=TENANT, cron_expr="*/5 * * * *", duration_s=60, reason="hourly sync", now=now
    )
    start, end = cron.window_at(cron.parse("*/5 * * * *"), dt.timedelta(seconds=60), now)
    assert (b.window_start, b.window_end) == (start.isoformat(), end.isoformat())
    assert end - start == dt.timedelta(seconds=60) and start.minute % 5 == 0 and start.second == 0

    # Its window is over (as if the scheduler had been away): the next pass moves it on.
    execute(
        ledger,
        "UPDATE blackouts SET window_start = now() - interval '2 hours', window_end = now() - interval '119 minutes'",
    )
    sched = Scheduler(ledger)
    assert sched.move_blackouts() == 1
    assert sched.move_blackouts() == 0
    with ledger.connect() as conn:
        [row] = queries.blackouts(conn, principal, tenant=TENANT)
    moved_start, moved_end = cron.window_at(
        cron.parse("*/5 * * * *"), dt.timedelta(seconds=60), dt.datetime.now(dt.UTC)
    )
    window = (dt.datetime.fromisoformat(row["window_start"]), dt.datetime.fromisoformat(row["window_end"]))
    assert window[1] > db_now(ledger)
    assert window in {(start, end), (moved_start, moved_end)}

    # A window active now holds the tenant's jobs until its end.
    execute(
        ledger,
        "UPDATE blackouts SET window_start = now() - interval '1 minute', window_end = now() + interval '1 hour'",
    )
    [job_id] = submit(ledger, principal)
    assert claim(ledger) == []
    j = job(ledger, job_id)
    assert j["wait_reason"] == "blackout" and j["not_before"] > db_now(ledger) + dt.timedelta(minutes=59)


def test_blackout_input_is_checked(ledger: sa.Engine, principal: Principal) -> None:
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    with pytest.raises(errors.InvalidInput, match="before it starts"):
        control.add_blackout(ledger, principal, tenant=TENANT, starts_at=now + hour, ends_at=now, reason=REASON)
    with pytest.raises(errors.InvalidInput, match="in the past"):
        control.add_blackout(
            ledger, principal, tenant=TENANT, starts_at=now - 2 * hour, ends_at=now - hour, reason=REASON
        )
    with pytest.raises(errors.InvalidInput):
        control.add_blackout(ledger, principal, tenant=TENANT, cron_expr="not a cron", duration_s=60, reason=REASON)
    with pytest.raises(errors.InvalidInput, match="duration"):
        control.add_blackout(ledger, principal, tenant=TENANT, cron_expr="0 2 * * *", reason=REASON)
    with pytest.raises(errors.ReasonRequired):
        control.add_blackout(ledger, principal, tenant=TENANT, starts_at=now, ends_at=now + hour, reason=None)
    with pytest.raises(errors.Forbidden):
        control.add_blackout(ledger, VIEWER, tenant=TENANT, starts_at=now, ends_at=now + hour, reason=REASON)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM blackouts")).scalar_one() == 0
    assert audit_actions(ledger) == []


# -- circuit breaker -----------------------------------------------------------------------


def set_circuit(engine: sa.Engine, name: str = "feed", **fields: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    execute(engine, f"UPDATE sources SET {sets} WHERE name = :name", name=name, **fields)


def wait_past(engine: sa.Engine, when: dt.datetime, what: str) -> None:
    wait_until(lambda: db_now(engine) >= when, timeout=10, interval=0.02, what=what)


def test_circuit_opens_holds_probes_and_closes(ledger: sa.Engine, principal: Principal) -> None:
    src = add_source(ledger, principal)
    set_circuit(ledger, cb_window=10, cb_min_outcomes=4, cb_failure_ratio=0.5, cb_cooldown_s=2.0, cb_probes=2)
    sid = src.id

    record(ledger, sid, ["ok", "fail", "fail"])
    s = source_row(ledger)
    assert (s["circuit_state"], s["circuit_window"]) == ("closed", "011"), "opened before cb_min_outcomes"
    record(ledger, sid, ["fail"])
    s = source_row(ledger)
    assert (s["circuit_state"], s["opened_total"]) == ("open", 1)
    assert (s["circuit_until"] - s["circuit_since"]).total_seconds() == pytest.approx(2.0, abs=0.01)
    with ledger.connect() as conn:
        assert queries.source(conn, principal, tenant=TENANT, name="feed")["health"] == "circuit_open"

    # Open: every job of the source waits until the cooldown ends.
    ids = submit(ledger, principal, 5, source="feed")
    assert claim(ledger, limit=10) == []
    for j in jobs(ledger, ids).values():
        assert (j["state"], j["wait_reason"], j["not_before"], j["attempt"]) == (
            "throttled",
            "circuit_open",
            s["circuit_until"],
            0,
        )
    # Outcomes of runs that started before it opened change nothing.
    record(ledger, sid, ["ok"])
    assert source_row(ledger)["circuit_state"] == "open"

    # After the cooldown, exactly cb_probes jobs are let through and the circuit is half-open.
    wait_past(ledger, s["circuit_until"], "the cooldown to end")
    assert Scheduler(ledger).release_due() == 5
    probes = claim(ledger, limit=10)
    assert len(probes) == 2
    s = source_row(ledger)
    assert (s["circuit_state"], s["circuit_probes"]) == ("half_open", 0)
    assert claim(ledger, limit=10) == [], "more probes than cb_probes"
    held = [i for i in ids if i not in {p["id"] for p in probes}]
    assert states(ledger, held) == {"throttled/circuit_open": 3}

    # A probe fails: open again, for another cooldown (shortened here to keep the test quick).
    set_circuit(ledger, cb_cooldown_s=0.3)
    record(ledger, sid, ["fail"])
    s = source_row(ledger)
    assert (s["circuit_state"], s["opened_total"]) == ("open", 2)
    assert (s["circuit_until"] - s["circuit_since"]).total_seconds() == pytest.approx(0.3, abs=0.01)
    succeed(ledger, probes)

    # The next probe succeeds: closed, and the jobs it held may go at once.
    wait_past(ledger, s["circuit_until"], "the second cooldown to end")
    execute(ledger, "UPDATE jobs SET not_before = now() WHERE state = 'throttled'")
    Scheduler(ledger).release_due()
    probes = claim(ledger, limit=10)
    assert len(probes) == 2 and source_row(ledger)["circuit_state"] == "half_open"
    held = [i for i in ids if job(ledger, i)["state"] == "throttled"]
    assert len(held) == 1
    execute(ledger, "UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = :id", id=held[0])
    record(ledger, sid, ["ok"])
    s = source_row(ledger)
    assert (s["circuit_state"], s["circuit_until"], s["circuit_window"]) == ("closed", None, "")
    assert job(ledger, held[0])["not_before"] <= db_now(ledger), "closing did not release the held job"
    assert Scheduler(ledger).release_due() == 1
    assert [r["id"] for r in claim(ledger)] == held
    assert {j["attempt"] for j in jobs(ledger, ids).values()} == {1}


def test_reset_circuit_closes_it_by_hand(ledger: sa.Engine, principal: Principal) -> None:
    src = add_source(ledger, principal)
    set_circuit(ledger, cb_min_outcomes=2, cb_cooldown_s=600)
    record(ledger, src.id, ["fail", "fail"])
    assert source_row(ledger)["circuit_state"] == "open"
    ids = submit(ledger, principal, 2, source="feed")
    assert claim(ledger, limit=5) == []
    with pytest.raises(errors.ReasonRequired):
        control.reset_circuit(ledger, principal, tenant=TENANT, source="feed", reason=None)
    with pytest.raises(errors.Forbidden):
        control.reset_circuit(ledger, VIEWER, tenant=TENANT, source="feed", reason=REASON)
    assert source_row(ledger)["circuit_state"] == "open"

    r = control.reset_circuit(ledger, principal, tenant=TENANT, source="feed", reason="upstream fixed", ticket="INC-7")
    assert (r.old_state, r.state, r.released) == ("open", "closed", 2)
    assert source_row(ledger)["circuit_state"] == "closed"
    assert Scheduler(ledger).release_due() == 2
    assert sorted(r["id"] for r in claim(ledger, limit=5)) == ids
    assert ("circuit.reset", "source feed", "upstream fixed") in audit_actions(ledger)


# -- adaptive rate (AIMD) ------------------------------------------------------------------


def test_aimd_halves_on_429_and_climbs_back_on_successes(ledger: sa.Engine, principal: Principal) -> None:
    src = add_source(ledger, principal, rate=10.0, burst=5.0)
    bid = source_row(ledger)["bucket_id"]
    execute(ledger, "UPDATE buckets SET aimd_k = 3, aimd_step = 0.2 WHERE id = :id", id=bid)
    sid = src.id
    started_before = db_now(ledger)

    record(ledger, sid, ["throttled"], retry_after=[1.5], started=[started_before])
    b = bucket_row(ledger, bid)
    assert (b["rate"], b["tokens"], b["ceiling"], b["upstream_429_total"]) == (5.0, 0.0, 10.0, 1)
    # Blocked for Retry-After; decreased_at marks the end of that block.
    assert b["updated_at"] == b["decreased_at"], "not blocked"
    assert 1.5 <= (b["decreased_at"] - started_before).total_seconds() < 2.5
    # Blocked until Retry-After: a claim now is told to come back after it, at the new rate.
    [job_id] = submit(ledger, principal, source="feed")
    assert claim(ledger) == []
    j = job(ledger, job_id)
    assert (j["state"], j["wait_reason"]) == ("throttled", "rate_limited")
    assert j["not_before"] >= b["updated_at"] + dt.timedelta(seconds=1 / 5.0) - dt.timedelta(milliseconds=5)

    # A 429 for a request sent before the slow-down says nothing about the new rate.
    record(ledger, sid, ["throttled"], retry_after=[1.0], started=[started_before])
    b = bucket_row(ledger, bid)
    assert (b["rate"], b["upstream_429_total"]) == (5.0, 2)

    # Every aimd_k successes add aimd_step * base_rate, up to 0.9 * the rate that was refused.
    record(ledger, sid, ["ok"] * 3)
    assert bucket_row(ledger, bid)["rate"] == pytest.approx(7.0)
    record(ledger, sid, ["ok"] * 2)
    assert bucket_row(ledger, bid)["rate"] == pytest.approx(7.0)
    record(ledger, sid, ["ok"])
    assert bucket_row(ledger, bid)["rate"] == pytest.approx(9.0)
    record(ledger, sid, ["ok"] * 9)
    assert bucket_row(ledger, bid)["rate"] == pytest.approx(9.0), "climbed past 0.9 x the refused rate"

    # A fresh 429 halves again, but never below min_rate.
    execute(ledger, "UPDATE buckets SET min_rate = 6 WHERE id = :id", id=bid)
    after_block = bucket_row(ledger, bid)["decreased_at"] + dt.timedelta(milliseconds=1)
    record(ledger, sid, ["throttled"], retry_after=[0.0], started=[after_block])
    assert bucket_row(ledger, bid)["rate"] == pytest.approx(6.0)

    with ledger.connect() as conn:
        rows = queries.throttles(conn, principal, tenant=TENANT, source="feed")
    changes = [(r["old_rate"], r["new_rate"], r["reason"].split(":")[0]) for r in reversed(rows)]
    assert changes == [
        (None, 10.0, "configured by sources add"),
        (10.0, 5.0, "upstream 429"),
        (5.0, pytest.approx(7.0), "successes"),
        (pytest.approx(7.0), pytest.approx(9.0), "successes"),
        (pytest.approx(9.0), 6.0, "upstream 429"),
    ]
    assert {r["actor"] for r in rows[:-1]} == {"tests:pump"}


def test_manual_throttle_sets_the_rate_and_needs_the_quota_scope(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, rate=10.0, burst=5.0)
    operator = Principal(subject="operator", scopes=frozenset({Scope.READ, Scope.OPERATE}))
    with pytest.raises(errors.Forbidden):
        control.throttle_source(ledger, operator, tenant=TENANT, source="feed", rate=1.0, reason=REASON)
    with pytest.raises(errors.ReasonRequired):
        control.throttle_source(ledger, principal, tenant=TENANT, source="feed", rate=1.0, reason=None)
    with pytest.raises(errors.InvalidInput):
        control.throttle_source(ledger, principal, tenant=TENANT, source="feed", rate=0, reason=REASON)
    r = control.throttle_source(ledger, principal, tenant=TENANT, source="feed", rate=1.0, burst=1.0, reason="slow")
    assert (r.old_rate, r.rate) == (10.0, 1.0)
    b = bucket_row(ledger, source_row(ledger)["bucket_id"])
    assert (b["rate"], b["base_rate"], b["capacity"]) == (1.0, 1.0, 1.0)
    ids = submit(ledger, principal, 3, source="feed")
    assert len(claim(ledger, limit=3)) == 1, "the new burst of 1 was not applied"
    assert states(ledger, ids) == {"running": 1, "throttled/rate_limited": 2}
    assert ("throttle", "source feed", "slow") in audit_actions(ledger)


# -- backpressure ---------------------------------------------------------------------------


def test_backpressure_refuse_names_the_limit_and_inserts_nothing(ledger: sa.Engine, principal: Principal) -> None:
    control.set_backlog_limit(ledger, principal, tenant=TENANT, limit=5, policy="refuse", reason=REASON)
    submit(ledger, principal, 4)
    with pytest.raises(errors.Backpressure) as raised:
        submit(ledger, principal, 3)
    exc = raised.value
    assert (exc.tenant, exc.limit, exc.backlog) == (TENANT, 5, 4)
    assert "limit 5" in str(exc) and "4 job(s) waiting" in str(exc)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 4, "a refused batch left jobs"
    submit(ledger, principal, 1)  # exactly at the limit is fine
    with pytest.raises(errors.Backpressure):
        submit(ledger, principal, 1)
    # Other tenants are not affected; running jobs do not count as backlog.
    submit(ledger, principal, 3, tenant="other-tenant")
    claim(ledger, limit=2)
    assert len(submit(ledger, principal, 1)) == 1


def test_backpressure_defer_accepts_the_excess_as_waiting(ledger: sa.Engine, principal: Principal) -> None:
    control.set_backlog_limit(ledger, principal, tenant=TENANT, limit=3, policy="defer", reason=REASON)
    ids = submit(ledger, principal, 5)
    got = jobs(ledger, ids)
    assert [got[i]["state"] for i in ids] == ["queued"] * 3 + ["throttled"] * 2
    assert {got[i]["wait_reason"] for i in ids[3:]} == {"backpressure"}
    assert all(got[i]["not_before"] is not None for i in ids[3:])
    with ledger.connect() as conn:
        # The insert that found the limit (and inserted nothing) left no trace either.
        submits = conn.execute(
            sa.text("SELECT count(*) FROM job_history WHERE event = 'submit' AND job_id = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
        assert submits == 5
        assert queries.waiting_by_reason(conn, principal, tenant=TENANT)["backpressure"] == 2
        [limits] = queries.backlog_limits(conn, principal, tenant=TENANT)
    assert (limits["backlog"], limits["deferred"], limits["backlog_policy"]) == (3, 2, "defer")
    # Deferred jobs do not count against the limit, and do not run while it is full.
    assert len(submit(ledger, principal, 1)) == 1
    sched = Scheduler(ledger)
    assert sched.release_backpressure() == 0, "released while the backlog is at its limit"
    sched.release_due()
    assert states(ledger, ids[3:]) == {"throttled/backpressure": 2}
    assert sorted(r["id"] for r in claim(ledger, limit=10)) == ids[:3]


def test_backpressure_deferred_jobs_are_released_as_the_backlog_drains(ledger: sa.Engine, principal: Principal) -> None:
    control.set_backlog_limit(ledger, principal, tenant=TENANT, limit=3, policy="defer", reason=REASON)
    ids = submit(ledger, principal, 5)
    sched = Scheduler(ledger)
    # Two of the backlog start: room for both deferred jobs.
    assert [r["id"] for r in claim(ledger, limit=2)] == ids[:2]
    assert sched.release_backpressure() == 2
    sched.release_due()
    assert states(ledger, ids[3:]) == {"queued": 2}, "deferred jobs were not released as the backlog drained"
    assert sorted(r["id"] for r in claim(ledger, limit=5)) == [ids[2], *ids[3:]]
    assert {j["attempt"] for j in jobs(ledger, ids).values()} == {1}


def test_backlog_limit_needs_the_quota_scope(ledger: sa.Engine, principal: Principal) -> None:
    with pytest.raises(errors.Forbidden):
        control.set_backlog_limit(ledger, VIEWER, tenant=TENANT, limit=1, reason=REASON)
    with pytest.raises(errors.InvalidInput):
        control.set_backlog_limit(ledger, principal, tenant=TENANT, limit=1, policy="drop", reason=REASON)
    with pytest.raises(errors.ReasonRequired):
        control.set_backlog_limit(ledger, principal, tenant=TENANT, limit=1, reason="")
    submit(ledger, principal, 3)  # no limit was set
    assert [a[0] for a in audit_actions(ledger)] == ["submit"]


# -- the CLI contract ----------------------------------------------------------------------


def orch(services: Services, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ORCH_DATABASE_URL": services.database_url,
        "ORCH_REDIS_URL": services.redis_url,
        "ORCH_BROKER_NAMESPACE": session_namespace("flow-cli"),
        "PYTHONPATH": str(ROOT),
    }
    if token is not None:
        env["ORCH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def orch_all(services: Services, *commands: Sequence[str], token: str | None = None) -> list[Any]:
    """Run independent commands at once (each `orch` process costs a second of start-up)."""
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: orch(services, *args, token=token), commands))


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fails(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_cli_sources_pause_submit_show_resume(services: Services, ledger: sa.Engine) -> None:
    t = "cli-flow"
    added = ok_json(
        orch(
            services,
            "sources",
            "add",
            "--tenant",
            t,
            "--name",
            "nvd",
            "--host",
            "nvd.example.org",
            "--rate",
            "5",
            "--burst",
            "2",
            "--max-active",
            "3",
            "--reason",
            "onboarding",
            "--json",
        )
    )
    assert (added["name"], added["host"], added["rate"], added["burst"], added["max_active"], added["created"]) == (
        "nvd",
        "nvd.example.org",
        5.0,
        2.0,
        3,
        True,
    )
    listed, no_reason, bad_rate, no_source, no_source_submit = orch_all(
        services,
        ["sources", "list", "--json"],
        ["sources", "pause", "nvd", "--tenant", t],
        ["sources", "throttle", "nvd", "--tenant", t, "--rate", "0", "--reason", "x"],
        ["sources", "show", "nope", "--tenant", t],
        ["submit", "--tenant", t, "--type", "noop", "--source", "nope"],
    )
    [src] = ok_json(listed)["sources"]
    assert (src["tenant"], src["name"], src["health"], src["rate"], src["capacity"]) == (t, "nvd", "ok", 5.0, 2.0)
    assert (src["circuit_state"], src["active"], src["max_active"]) == ("closed", 0, 3)
    fails(no_reason, 7, "needs a reason")
    fails(bad_rate, 2, "rate must be")
    fails(no_source, 3, "no source 'nope'")
    fails(no_source_submit, 3, "no source 'nope'")

    paused = ok_json(
        orch(
            services,
            "sources",
            "pause",
            "nvd",
            "--tenant",
            t,
            "--reason",
            "vendor outage",
            "--ticket",
            "CHG-9",
            "--json",
        )
    )
    assert paused["changed"] is True
    [job_id] = ok_json(orch(services, "submit", "--tenant", t, "--type", "noop", "--source", "nvd", "--json"))[
        "job_ids"
    ]
    assert claim(ledger) == []  # a worker's claim: admission holds it

    shown_job, text, shown_source = orch_all(
        services,
        ["jobs", "show", str(job_id), "--json"],
        ["jobs", "show", str(job_id)],
        ["sources", "show", "nvd", "--tenant", t, "--json"],
    )
    job_json = ok_json(shown_job)["job"]
    assert (job_json["state"], job_json["wait_reason"], job_json["source"]) == ("throttled", "paused", "nvd")
    assert dt.datetime.fromisoformat(job_json["not_before"]) > dt.datetime.now(dt.UTC)
    assert text.returncode == 0 and "waits: paused" in text.stdout, text.stdout
    shown = ok_json(shown_source)
    assert (shown["health"], shown["paused_reason"], shown["waiting"]) == ("paused", "vendor outage", {"paused": 1})
    assert [(p["source"], p["reason"], p["ticket"]) for p in shown["pauses"]] == [("nvd", "vendor outage", "CHG-9")]
    assert (shown["tokens"], shown["capacity"], shown["circuit_state"], shown["quotas"]) == (2.0, 2.0, "closed", [])
    assert [(x["old_rate"], x["new_rate"]) for x in shown["throttles"]] == [(None, 5.0)]

    resumed = ok_json(orch(services, "sources", "resume", "nvd", "--tenant", t, "--reason", "back", "--json"))
    assert (resumed["changed"], resumed["released"]) == (True, 1)
    throttled, reset = orch_all(
        services,
        ["sources", "throttle", "nvd", "--tenant", t, "--rate", "2", "--reason", "429s", "--json"],
        ["sources", "reset-circuit", "nvd", "--tenant", t, "--reason", "manual", "--json"],
    )
    assert (ok_json(throttled)["old_rate"], ok_json(throttled)["rate"]) == (5.0, 2.0)
    assert (ok_json(reset)["old_state"], ok_json(reset)["state"]) == ("closed", "closed")
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT rate FROM buckets")).scalar_one() == 2.0
    actions = [a[0] for a in audit_actions(ledger)]
    assert actions[:4] == ["source.add", "pause", "submit", "resume"]  # refused calls wrote none
    assert sorted(actions[4:]) == ["circuit.reset", "throttle"]


def test_cli_blackouts_quotas_backpressure_and_scopes(
    services: Services, ledger: sa.Engine, principal: Principal
) -> None:
    t = "cli-flow"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start, end = (now - dt.timedelta(minutes=1)).isoformat(), (now + dt.timedelta(hours=1)).isoformat()
    viewer = control.create_token(
        ledger, principal, subject="viewer", scopes=frozenset({Scope.READ}), tenants=None, reason="tests"
    )
    backwards, no_reason, added, quota = orch_all(
        services,
        ["blackouts", "add", "--tenant", t, "--start", end, "--end", start, "--reason", "x"],
        ["blackouts", "add", "--tenant", t, "--start", start, "--end", end],
        ["blackouts", "add", "--tenant", t, "--start", start, "--end", end, "--reason", "freeze", "--json"],
        [
            "quotas",
            "set",
            "--tenant",
            t,
            "--job-type",
            "noop",
            "--max-active",
            "2",
            "--backlog-limit",
            "1",
            "--reason",
            "fair share",
            "--json",
        ],
    )
    fails(backwards, 2, "before it starts")
    fails(no_reason, 7, "needs a reason")
    blackout = ok_json(added)
    assert dt.datetime.fromisoformat(blackout["window_end"]) == now + dt.timedelta(hours=1)
    q = ok_json(quota)
    assert (q["quota"]["max_active"], q["backlog"]["backlog_limit"], q["backlog"]["backlog_policy"]) == (
        2,
        1,
        "refuse",
    )
    pause_denied, quota_denied, viewer_list = orch_all(
        services,
        ["pause", "--tenant", t, "--reason", "x"],
        ["quotas", "set", "--tenant", t, "--job-type", "noop", "--max-active", "9", "--reason", "x"],
        ["sources", "list", "--json"],
        token=viewer,
    )
    fails(pause_denied, 4, "orch:operate")
    fails(quota_denied, 4, "orch:quota")
    assert ok_json(viewer_list) == {"sources": []}

    blackouts, quotas_listed, first_submit = orch_all(
        services,
        ["blackouts", "list", "--tenant", t, "--json"],
        ["quotas", "list", "--json"],
        ["submit", "--tenant", t, "--type", "noop", "--json"],
    )
    [listed] = ok_json(blackouts)["blackouts"]
    assert (listed["id"], listed["active"], listed["source"], listed["reason"]) == (
        blackout["id"],
        True,
        None,
        "freeze",
    )
    listed_q = ok_json(quotas_listed)
    assert [(x["tenant"], x["job_type"], x["max_active"], x["active"]) for x in listed_q["quotas"]] == [
        (t, "noop", 2, 0)
    ]
    assert [(x["tenant"], x["backlog_limit"]) for x in listed_q["backlog_limits"]] == [(t, 1)]
    ok_json(first_submit)

    removed, refused = orch_all(
        services,
        ["blackouts", "remove", str(blackout["id"]), "--reason", "thaw", "--json"],
        ["submit", "--tenant", t, "--type", "noop"],
    )
    assert ok_json(removed)["removed"] is True
    fails(refused, 8, "limit 1")
    fails(orch(services, "blackouts", "remove", str(blackout["id"]), "--reason", "again"), 3, "no blackout")
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pauses")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT max_active FROM quotas")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 1


# -- sources sharing a host; per-source slots; quota changes --------------------------------


def test_sources_of_one_host_share_one_bucket(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, "advisories", rate=1.0, burst=2.0)
    add_source(ledger, principal, "vex")  # same host, no rate of its own
    add_source(ledger, principal, "advisories", tenant="other-tenant", rate=1.0, burst=2.0)
    mine = {source_row(ledger, "advisories")["bucket_id"], source_row(ledger, "vex")["bucket_id"]}
    assert len(mine) == 1 and None not in mine, "sources of one host have separate buckets"
    assert source_row(ledger, "advisories", "other-tenant")["bucket_id"] not in mine, "tenants share a bucket"
    ids = submit(ledger, principal, 2, source="advisories") + submit(ledger, principal, 2, source="vex")
    theirs = submit(ledger, principal, 2, source="advisories", tenant="other-tenant")
    got = sorted(r["id"] for r in claim(ledger, limit=10))
    assert got == sorted(ids[:2] + theirs), "the host's burst of 2 was exceeded by its two sources"
    assert states(ledger, ids[2:]) == {"throttled/rate_limited": 2}


def test_source_max_active_caps_its_running_jobs(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, max_active=2)
    ids = submit(ledger, principal, 12, source="feed")
    free = submit(ledger, principal, 3)  # no source: not capped
    peak: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with ledger.connect() as conn:
            while not stop.is_set():
                peak.append(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM jobs WHERE source_id IS NOT NULL AND state IN ('leased', 'running')"
                        )
                    ).scalar_one()
                )
                conn.commit()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = run_claimers(ledger, len(ids) + len(free), 6, limit=2, hold_s=0.03)
    finally:
        stop.set()
        sampler.join(10)
    assert sorted(started) == sorted(ids + free)
    assert max(peak) == 2, f"peak of the source's running jobs: {max(peak)}, max_active 2"
    with ledger.connect() as conn:
        assert queries.source(conn, principal, tenant=TENANT, name="feed")["active"] == 0


def test_raising_a_quota_lets_waiting_jobs_go_at_once(ledger: sa.Engine, principal: Principal) -> None:
    control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=1, reason=REASON)
    ids = submit(ledger, principal, 3)
    assert [r["id"] for r in claim(ledger, limit=3)] == ids[:1]
    assert states(ledger, ids[1:]) == {"throttled/quota": 2}
    r = control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=2, reason="more")
    assert r.released == 2
    assert Scheduler(ledger).release_due() == 2
    assert [r["id"] for r in claim(ledger, limit=3)] == ids[1:2]
    # Removing the quota lifts the cap.
    r = control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", reason="no cap")
    assert (r.changed, r.released) == (True, 1)
    assert Scheduler(ledger).release_due() == 1
    assert [r["id"] for r in claim(ledger, limit=3)] == ids[2:]
    with ledger.connect() as conn:
        assert queries.quotas(conn, principal, tenant=TENANT) == []


def test_changing_a_sources_rate_logs_the_old_rate(ledger: sa.Engine, principal: Principal) -> None:
    add_source(ledger, principal, rate=10.0, burst=5.0)
    updated = add_source(ledger, principal, rate=4.0, burst=2.0)
    assert updated.created is False
    b = bucket_row(ledger, source_row(ledger)["bucket_id"])
    assert (b["rate"], b["base_rate"], b["capacity"]) == (4.0, 4.0, 2.0)
    with ledger.connect() as conn:
        rows = queries.throttles(conn, principal, tenant=TENANT, source="feed")
    assert [(r["old_rate"], r["new_rate"]) for r in reversed(rows)] == [(None, 10.0), (10.0, 4.0)]


# -- lifting a hold releases every job it held -----------------------------------------------

HELD = 10_050  # more than any one statement of the old wake (10,000) let go


def _hold_all(ledger: sa.Engine, ids: Sequence[int]) -> None:
    """Run claims until admission has sent every one of `ids` back to wait."""
    with ledger.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for _ in range(len(ids) // 2000 + 2):
            got = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=2000, owner="t", job_types=TYPES)
            assert got == []


def _due_now(ledger: sa.Engine, ids: Sequence[int], reason: str) -> int:
    with ledger.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND state = 'throttled' AND wait_reason = :r"
                    " AND not_before <= now()"
                ),
                {"ids": list(ids), "r": reason},
            ).scalar_one()
        )


def test_resume_releases_every_held_job_however_many(ledger: sa.Engine, principal: Principal) -> None:
    control.pause(ledger, principal, tenant=TENANT, reason=REASON)
    ids = submit(ledger, principal, HELD)
    _hold_all(ledger, ids)
    assert states(ledger, ids) == {"throttled/paused": HELD}
    r = control.resume(ledger, principal, tenant=TENANT, reason=REASON)
    assert (r.changed, r.released) == (True, HELD)
    assert _due_now(ledger, ids, "paused") == HELD
    # The scheduler then moves them in bounded passes until none is left.
    sched = Scheduler(ledger)
    released = 0
    while (n := sched.release_due()) > 0:
        released += n
    assert released == HELD
    assert states(ledger, ids) == {"queued": HELD}


def test_removing_a_blackout_releases_every_held_job_in_its_own_transaction(
    ledger: sa.Engine, principal: Principal
) -> None:
    now = db_now(ledger)
    b = control.add_blackout(
        ledger, principal, tenant=TENANT, starts_at=now, ends_at=now + dt.timedelta(hours=1), reason=REASON
    )
    ids = submit(ledger, principal, HELD)
    _hold_all(ledger, ids)
    assert states(ledger, ids) == {"throttled/blackout": HELD}
    r = control.remove_blackout(ledger, principal, b.id, reason=REASON)
    assert (r.removed, r.released) == (True, HELD)
    assert _due_now(ledger, ids, "blackout") == HELD
    # The audit row says how many went, written in the same transaction as the wake.
    with ledger.connect() as conn:
        details = conn.execute(sa.text("SELECT details FROM audit_log WHERE action = 'blackout.remove'")).scalar_one()
    assert details == {"released": HELD}


def test_a_replay_keeps_its_jobs_source(ledger: sa.Engine, principal: Principal) -> None:
    src = add_source(ledger, principal)
    (job_id,) = submit(ledger, principal, 1, source="feed")
    fail_final(ledger, claim(ledger, limit=1))
    new_id = control.retry(ledger, principal, job_id, doorbell=control.NoDoorbell(), reason="feed fixed")
    replayed = job(ledger, new_id)
    assert (replayed["replay_of"], replayed["source_id"]) == (job_id, src.id)
