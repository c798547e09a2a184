"""The ledger against a real PostgreSQL: submit, claim, ack, finish, reap, release, cancel,
retry and the read API, including concurrent claimers and a zombie worker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain import errors
from core.domain.auth import Principal
from core.domain.states import State
from core.ledger import jobs as ledger_jobs

ALL_TYPES = [
    "noop",
    "sleep",
    "fail",
    "flaky",
    "test.report",
    "test.retry_after",
    "test.short_lease",
]
QUEUE = "default"
OWNER = "tests:worker"


# -- helpers ------------------------------------------------------------------------------


def _submit(
    engine: sa.Engine,
    principal: Principal,
    n: int = 1,
    *,
    job_type: str = "noop",
    tenant: str = "acme",
    priority: int = 0,
    max_attempts: int | None = None,
) -> list[int]:
    specs = [
        control.JobSpec(
            tenant=tenant,
            job_type=job_type,
            payload={"i": i},
            priority=priority,
            max_attempts=max_attempts,
        )
        for i in range(n)
    ]
    result = control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell())
    assert all(result.created)
    return result.job_ids


def _claim(
    engine: sa.Engine, limit: int = 100, *, job_types: Sequence[str] = ALL_TYPES, owner: str = OWNER
) -> list[Mapping[str, Any]]:
    with engine.begin() as conn:
        return ledger_jobs.claim_jobs(conn, queue=QUEUE, limit=limit, owner=owner, job_types=job_types)


def _ack(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    with engine.begin() as conn:
        return ledger_jobs.ack_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor=OWNER)


def _start(engine: sa.Engine, principal: Principal, **kw: Any) -> Mapping[str, Any]:
    """Submit, claim and ack one job; returns its claim row (id, lease_id, ...)."""
    (job_id,) = _submit(engine, principal, **kw)
    (row,) = _claim(engine)
    assert row["id"] == job_id
    assert len(_ack(engine, [row])) == 1
    return row


def _job(engine: sa.Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
    return dict(row)


def _history(engine: sa.Engine, job_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT from_state, event, to_state, actor, reason, attempt FROM job_history"
                " WHERE job_id = :id ORDER BY id"
            ),
            {"id": job_id},
        ).mappings()
        return [dict(r) for r in rows]


def _events(engine: sa.Engine, job_id: int) -> list[str]:
    return [h["event"] for h in _history(engine, job_id)]


def _expire_lease(engine: sa.Engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": job_id},
        )


def _count(engine: sa.Engine, where: str = "true") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM jobs WHERE {where}")).scalar_one())


# -- submit -------------------------------------------------------------------------------


def test_submit_many_inserts_queued_jobs_in_input_order(ledger: sa.Engine, principal: Principal) -> None:
    specs = [control.JobSpec(tenant="acme", job_type="noop", payload={"i": i}, priority=i % 3) for i in range(25)]
    result = control.submit_many(ledger, principal, specs, doorbell=control.NoDoorbell())
    assert len(result.job_ids) == 25
    assert result.created == [True] * 25
    assert len(set(result.job_ids)) == 25
    with ledger.connect() as conn:
        rows = (
            conn.execute(sa.text("SELECT id, state, payload, priority, attempt, job_type FROM jobs")).mappings().all()
        )
        history = (
            conn.execute(sa.text("SELECT job_id, from_state, event, to_state, actor FROM job_history")).mappings().all()
        )
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == set(result.job_ids)
    for i, job_id in enumerate(result.job_ids):
        row = by_id[job_id]
        assert row["payload"] == {"i": i}, "ids are not in input order"
        assert row["priority"] == i % 3
        assert row["state"] == "queued"
        assert row["attempt"] == 0
    assert sorted(h["job_id"] for h in history) == sorted(result.job_ids)
    for h in history:
        assert (h["from_state"], h["event"], h["to_state"]) == (None, "submit", "queued")
        assert h["actor"] == principal.subject


def test_submit_empty_batch_inserts_nothing(ledger: sa.Engine, principal: Principal) -> None:
    result = control.submit_many(ledger, principal, [], doorbell=control.NoDoorbell())
    assert result.job_ids == [] and result.created == []
    assert _count(ledger) == 0


def test_submit_rings_the_doorbell_for_created_jobs_only(ledger: sa.Engine, principal: Principal) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.rung: list[tuple[int, str]] = []

        def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
            self.rung.extend(jobs)

    bell = Recorder()
    spec = control.JobSpec(tenant="acme", job_type="noop", payload={"a": 1}, idempotency_key="k1")
    first = control.submit(ledger, principal, spec, doorbell=bell)
    assert bell.rung == [(first, QUEUE)]
    assert control.submit(ledger, principal, spec, doorbell=bell) == first
    assert bell.rung == [(first, QUEUE)], "a repeated idempotent submit rang again"


def test_idempotent_resubmit_returns_the_existing_job(ledger: sa.Engine, principal: Principal) -> None:
    spec = control.JobSpec(tenant="acme", job_type="noop", payload={"a": 1, "b": 2}, idempotency_key="key-1")
    first = control.submit_many(ledger, principal, [spec], doorbell=control.NoDoorbell())
    assert first.created == [True]
    # The same payload with its keys in another order is the same payload.
    again = control.JobSpec(tenant="acme", job_type="noop", payload={"b": 2, "a": 1}, idempotency_key="key-1")
    fresh = control.JobSpec(tenant="acme", job_type="noop", payload={"c": 3})
    second = control.submit_many(ledger, principal, [fresh, again], doorbell=control.NoDoorbell())
    assert second.job_ids[1] == first.job_ids[0]
    assert second.created == [True, False]
    assert _count(ledger) == 2
    assert _events(ledger, first.job_ids[0]) == ["submit"]
    # The key is per tenant: another tenant may use it for a job of its own.
    other = control.JobSpec(tenant="other", job_type="noop", payload={"a": 1, "b": 2}, idempotency_key="key-1")
    third = control.submit_many(ledger, principal, [other], doorbell=control.NoDoorbell())
    assert third.created == [True]
    assert third.job_ids[0] != first.job_ids[0]


def test_idempotency_conflict_inserts_nothing_of_the_batch(ledger: sa.Engine, principal: Principal) -> None:
    spec = control.JobSpec(tenant="acme", job_type="noop", payload={"a": 1}, idempotency_key="key-1")
    (existing,) = control.submit_many(ledger, principal, [spec], doorbell=control.NoDoorbell()).job_ids
    batch = [
        control.JobSpec(tenant="acme", job_type="noop", payload={"new": 1}),
        control.JobSpec(tenant="newtenant", job_type="noop", payload={"new": 2}),
        control.JobSpec(tenant="acme", job_type="noop", payload={"a": 2}, idempotency_key="key-1"),
    ]
    with pytest.raises(errors.IdempotencyConflict) as info:
        control.submit_many(ledger, principal, batch, doorbell=control.NoDoorbell())
    assert info.value.existing_job_id == existing
    assert "key-1" in str(info.value)
    assert _count(ledger) == 1
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_history")).scalar_one() == 1
        tenants = conn.execute(sa.text("SELECT name FROM tenants")).scalars().all()
    assert tenants == ["acme"], "the conflicting batch created a tenant"


def test_idempotency_conflict_on_job_type(ledger: sa.Engine, principal: Principal) -> None:
    spec = control.JobSpec(tenant="acme", job_type="noop", payload={"a": 1}, idempotency_key="k")
    existing = control.submit(ledger, principal, spec, doorbell=control.NoDoorbell())
    other = control.JobSpec(tenant="acme", job_type="sleep", payload={"a": 1}, idempotency_key="k")
    with pytest.raises(errors.IdempotencyConflict) as info:
        control.submit(ledger, principal, other, doorbell=control.NoDoorbell())
    assert info.value.existing_job_id == existing
    assert _count(ledger) == 1


def test_unknown_job_type_is_refused(ledger: sa.Engine, principal: Principal) -> None:
    specs = [
        control.JobSpec(tenant="acme", job_type="noop"),
        control.JobSpec(tenant="acme", job_type="no.such.type"),
    ]
    with pytest.raises(errors.UnknownJobType, match=r"no\.such\.type") as info:
        control.submit_many(ledger, principal, specs, doorbell=control.NoDoorbell())
    assert "noop" in str(info.value), "the message should list the known types"
    assert _count(ledger) == 0


@pytest.mark.parametrize("tenant", ["", "-starts-with-dash", "has space", "x" * 64, "semi;colon", "ünï"])
def test_bad_tenant_name_is_refused(ledger: sa.Engine, principal: Principal, tenant: str) -> None:
    with pytest.raises(errors.InvalidInput, match="tenant"):
        control.submit(
            ledger,
            principal,
            control.JobSpec(tenant=tenant, job_type="noop"),
            doorbell=control.NoDoorbell(),
        )
    assert _count(ledger) == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"priority": 1001}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"idempotency_key": ""}, "idempotency"),
    ],
)
def test_bad_spec_values_are_refused(ledger: sa.Engine, principal: Principal, kw: dict[str, Any], match: str) -> None:
    spec = control.JobSpec(tenant="acme", job_type="noop", **kw)
    with pytest.raises(errors.InvalidInput, match=match):
        control.submit(ledger, principal, spec, doorbell=control.NoDoorbell())
    assert _count(ledger) == 0


def test_forbidden_tenant_is_refused(ledger: sa.Engine) -> None:
    from core.domain.auth import ALL_SCOPES

    narrow = Principal(subject="u", scopes=ALL_SCOPES, tenants=frozenset({"acme"}))
    with pytest.raises(errors.Forbidden):
        control.submit(
            ledger,
            narrow,
            control.JobSpec(tenant="other", job_type="noop"),
            doorbell=control.NoDoorbell(),
        )
    assert _count(ledger) == 0


# -- claim, ack, finish -------------------------------------------------------------------


def test_claim_honours_priority_then_id(ledger: sa.Engine, principal: Principal) -> None:
    low = _submit(ledger, principal, 3, priority=-5)
    mid = _submit(ledger, principal, 3, priority=0)
    high = _submit(ledger, principal, 3, priority=7)
    expected = high + mid + low
    # One at a time: the exact order.
    order = []
    for _ in expected:
        (row,) = _claim(ledger, limit=1)
        order.append(row["id"])
    assert order == expected
    assert _claim(ledger, limit=1) == []


def test_claim_takes_the_best_jobs_up_to_the_limit(ledger: sa.Engine, principal: Principal) -> None:
    low = _submit(ledger, principal, 4, priority=1)
    high = _submit(ledger, principal, 4, priority=2)
    rows = _claim(ledger, limit=6)
    assert {r["id"] for r in rows} == set(high + low[:2])
    for r in rows:
        assert r["lease_id"] is not None
        job = _job(ledger, r["id"])
        assert job["state"] == "leased"
        assert job["lease_owner"] == OWNER
        assert job["lease_id"] == r["lease_id"]
        assert job["lease_expires_at"] is not None
        assert job["attempt"] == 0, "claiming is not an attempt"
        assert _events(ledger, r["id"]) == ["submit", "claim"]
    assert {r["id"] for r in _claim(ledger, limit=100)} == set(low[2:])


def test_claim_skips_job_types_not_listed(ledger: sa.Engine, principal: Principal) -> None:
    sleeps = _submit(ledger, principal, 3, job_type="sleep", priority=10)
    noops = _submit(ledger, principal, 2, job_type="noop")
    rows = _claim(ledger, job_types=["noop", "fail"])
    assert {r["id"] for r in rows} == set(noops)
    assert all(r["job_type"] == "noop" for r in rows)
    assert all(_job(ledger, j)["state"] == "queued" for j in sleeps)
    assert _claim(ledger, job_types=[]) == []
    assert {r["id"] for r in _claim(ledger, job_types=["sleep"])} == set(sleeps)


def test_claim_returns_what_a_worker_needs(ledger: sa.Engine, principal: Principal) -> None:
    (job_id,) = _submit(ledger, principal, job_type="sleep", tenant="acme")
    (row,) = _claim(ledger)
    assert row["id"] == job_id
    assert row["tenant"] == "acme"
    assert row["job_type"] == "sleep"
    assert row["payload"] == {"i": 0}
    assert row["cancel_requested"] is False


def test_ack_counts_the_attempt(ledger: sa.Engine, principal: Principal) -> None:
    _submit(ledger, principal, 2)
    rows = _claim(ledger)
    acked = _ack(ledger, rows)
    assert {r["id"] for r in acked} == {r["id"] for r in rows}
    for r in rows:
        job = _job(ledger, r["id"])
        assert job["state"] == "running"
        assert job["attempt"] == 1
        assert job["started_at"] is not None
        assert _history(ledger, r["id"])[-1]["attempt"] == 1
    # A second ack of the same lease changes nothing (the job is no longer leased).
    assert _ack(ledger, rows) == []
    assert all(_job(ledger, r["id"])["attempt"] == 1 for r in rows)


def test_ack_with_a_wrong_lease_changes_nothing(ledger: sa.Engine, principal: Principal) -> None:
    _submit(ledger, principal)
    (row,) = _claim(ledger)
    with ledger.begin() as conn:
        assert ledger_jobs.ack_jobs(conn, [row["id"]], [uuid.uuid4()], actor=OWNER) == []
    assert _job(ledger, row["id"])["state"] == "leased"
    assert _job(ledger, row["id"])["attempt"] == 0


def test_succeed_with_the_right_lease(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal)
    with ledger.begin() as conn:
        done = ledger_jobs.succeed_jobs(conn, [row["id"]], [row["lease_id"]], actor=OWNER)
    assert [d["id"] for d in done] == [row["id"]]
    job = _job(ledger, row["id"])
    assert job["state"] == "succeeded"
    assert job["finished_at"] is not None
    assert _events(ledger, row["id"]) == ["submit", "claim", "ack", "succeed"]


def test_succeed_with_a_wrong_lease_changes_nothing(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal)
    with ledger.begin() as conn:
        assert ledger_jobs.succeed_jobs(conn, [row["id"]], [uuid.uuid4()], actor="zombie") == []
    job = _job(ledger, row["id"])
    assert job["state"] == "running"
    assert job["lease_id"] == row["lease_id"]
    assert "succeed" not in _events(ledger, row["id"])


def test_batch_finish_moves_only_the_rows_whose_lease_matches(ledger: sa.Engine, principal: Principal) -> None:
    _submit(ledger, principal, 3)
    rows = _claim(ledger)
    _ack(ledger, rows)
    leases = [rows[0]["lease_id"], uuid.uuid4(), rows[2]["lease_id"]]
    with ledger.begin() as conn:
        done = ledger_jobs.succeed_jobs(conn, [r["id"] for r in rows], leases, actor=OWNER)
    assert {d["id"] for d in done} == {rows[0]["id"], rows[2]["id"]}
    assert _job(ledger, rows[1]["id"])["state"] == "running"


def test_fail_retryable_then_release_when_due(ledger: sa.Engine, principal: Principal) -> None:
    now_row = _start(ledger, principal)
    (later_id,) = _submit(ledger, principal)
    (later_row,) = _claim(ledger)
    assert later_row["id"] == later_id
    _ack(ledger, [later_row])
    with ledger.begin() as conn:
        moved = ledger_jobs.fail_retryable_jobs(
            conn,
            [now_row["id"], later_row["id"]],
            [now_row["lease_id"], later_row["lease_id"]],
            [0.0, 3600.0],
            ["http_5xx", "http_429"],
            ["upstream said 503", "upstream said 429"],
            actor=OWNER,
        )
    assert {m["id"] for m in moved} == {now_row["id"], later_id}
    job = _job(ledger, now_row["id"])
    assert job["state"] == "retrying"
    assert job["error_class"] == "http_5xx"
    assert job["not_before"] is not None
    assert _history(ledger, now_row["id"])[-1]["reason"].startswith("http_5xx: upstream said 503")

    with ledger.begin() as conn:
        released = ledger_jobs.release_due_jobs(conn, limit=100, actor="scheduler")
    assert [r["id"] for r in released] == [now_row["id"]], "only the job whose not_before passed"
    job = _job(ledger, now_row["id"])
    assert job["state"] == "queued"
    assert job["not_before"] is None
    assert job["attempt"] == 1
    last = _history(ledger, now_row["id"])[-1]
    assert (last["from_state"], last["event"], last["to_state"]) == ("retrying", "due", "queued")
    assert _job(ledger, later_id)["state"] == "retrying"
    # Released, it can be claimed again with a fresh lease.
    (again,) = _claim(ledger)
    assert again["id"] == now_row["id"]
    assert again["lease_id"] != now_row["lease_id"]


def test_fail_final_dead_letters(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal)
    with ledger.begin() as conn:
        moved = ledger_jobs.fail_final_jobs(
            conn,
            [row["id"]],
            [row["lease_id"]],
            ["parse_error"],
            ["bad input"],
            ["not retryable"],
            actor=OWNER,
        )
    assert [m["id"] for m in moved] == [row["id"]]
    job = _job(ledger, row["id"])
    assert job["state"] == "dead_lettered"
    assert job["error_class"] == "parse_error"
    assert job["last_error"] == "bad input"
    assert _history(ledger, row["id"])[-1]["reason"] == "not retryable: parse_error: bad input"


# -- concurrency --------------------------------------------------------------------------


def test_concurrent_claimers_lease_every_job_exactly_once(ledger: sa.Engine, principal: Principal) -> None:
    n_jobs, n_threads = 400, 8
    submitted = set(_submit(ledger, principal, n_jobs))
    claimed: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(n_threads)
    deadline = time.monotonic() + 20

    def worker(owner: str) -> None:
        mine: list[int] = []
        claimed[owner] = mine
        try:
            start.wait(timeout=10)
            while time.monotonic() < deadline:
                rows = _claim(ledger, limit=5, owner=owner)
                mine.extend(r["id"] for r in rows)
                if not rows and _count(ledger, "state = 'queued'") == 0:
                    return
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert not failures, failures
    everything = [j for ids in claimed.values() for j in ids]
    assert len(everything) == len(set(everything)), "a job was leased twice"
    assert set(everything) == submitted, f"missing: {sorted(submitted - set(everything))[:10]}"
    assert sum(1 for ids in claimed.values() if ids) > 1, "only one thread claimed anything"
    with ledger.connect() as conn:
        owners = dict(conn.execute(sa.text("SELECT id, lease_owner FROM jobs WHERE state = 'leased'")).all())
        claims = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT job_id) FROM job_history WHERE event = 'claim'")
        ).one()
        leases = conn.execute(sa.text("SELECT count(DISTINCT lease_id) FROM jobs")).scalar_one()
    assert len(owners) == n_jobs
    for owner, ids in claimed.items():
        assert all(owners[j] == owner for j in ids), f"{owner} got a job whose lease is someone else's"
    assert tuple(claims) == (n_jobs, n_jobs)
    assert leases == n_jobs


# -- zombies and the reaper -----------------------------------------------------------------


def test_zombie_worker_loses_its_lease(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal, max_attempts=3)
    _expire_lease(ledger, row["id"])
    with ledger.begin() as conn:
        reaped = ledger_jobs.reap_running_jobs(conn, limit=100, actor="scheduler")
    assert [r["id"] for r in reaped] == [row["id"]]
    job = _job(ledger, row["id"])
    assert job["state"] == "retrying"
    assert job["error_class"] == "lease_expired"
    assert "lease expired" in job["last_error"]
    assert job["not_before"] is not None
    assert job["finished_at"] is None
    last = _history(ledger, row["id"])[-1]
    assert (last["from_state"], last["event"], last["to_state"]) == (
        "running",
        "lease_expired",
        "retrying",
    )

    # The zombie wakes up and reports success with its old lease: nothing changes.
    with ledger.begin() as conn:
        assert ledger_jobs.succeed_jobs(conn, [row["id"]], [row["lease_id"]], actor="zombie") == []
        assert ledger_jobs.renew_leases(conn, [row["id"]], [row["lease_id"]], [30.0]) == {}
    assert _job(ledger, row["id"])["state"] == "retrying"
    assert "succeed" not in _events(ledger, row["id"])

    # Nor after the job was released and claimed by another worker.
    with ledger.begin() as conn:
        ledger_jobs.release_due_jobs(conn, limit=100, actor="scheduler")
    (fresh,) = _claim(ledger, owner="other")
    _ack(ledger, [fresh])
    with ledger.begin() as conn:
        assert ledger_jobs.succeed_jobs(conn, [row["id"]], [row["lease_id"]], actor="zombie") == []
    job = _job(ledger, row["id"])
    assert job["state"] == "running"
    assert job["lease_owner"] == "other"
    assert job["attempt"] == 2
    assert "succeed" not in _events(ledger, row["id"])


def test_reap_ignores_live_leases(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal)
    _submit(ledger, principal)
    _claim(ledger)
    with ledger.begin() as conn:
        assert ledger_jobs.reap_running_jobs(conn, limit=100, actor="scheduler") == []
        assert ledger_jobs.reap_leased_jobs(conn, limit=100, actor="scheduler") == []
    assert _job(ledger, row["id"])["state"] == "running"


def test_reap_on_the_last_attempt_dead_letters(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal, max_attempts=1)
    _expire_lease(ledger, row["id"])
    with ledger.begin() as conn:
        reaped = ledger_jobs.reap_running_jobs(conn, limit=100, actor="scheduler")
    assert [r["id"] for r in reaped] == [row["id"]]
    job = _job(ledger, row["id"])
    assert job["state"] == "dead_lettered"
    assert job["error_class"] == "lease_expired"
    assert job["finished_at"] is not None
    assert job["not_before"] is None
    last = _history(ledger, row["id"])[-1]
    assert (last["from_state"], last["event"], last["to_state"]) == (
        "running",
        "lease_expired",
        "dead_lettered",
    )
    assert "last attempt (1/1)" in last["reason"]


def test_reap_leased_requeues_without_counting_an_attempt(ledger: sa.Engine, principal: Principal) -> None:
    _submit(ledger, principal)
    (row,) = _claim(ledger)
    _expire_lease(ledger, row["id"])
    with ledger.begin() as conn:
        assert ledger_jobs.reap_running_jobs(conn, limit=100, actor="scheduler") == []
        reaped = ledger_jobs.reap_leased_jobs(conn, limit=100, actor="scheduler")
    assert [r["id"] for r in reaped] == [row["id"]]
    job = _job(ledger, row["id"])
    assert job["state"] == "queued"
    assert job["attempt"] == 0
    assert job["lease_id"] is None
    assert job["lease_expires_at"] is None
    last = _history(ledger, row["id"])[-1]
    assert (last["from_state"], last["event"], last["to_state"]) == (
        "leased",
        "lease_expired",
        "queued",
    )
    # The old lease can no longer start the job.
    assert _ack(ledger, [row]) == []
    assert _job(ledger, row["id"])["attempt"] == 0


# -- control: cancel and retry --------------------------------------------------------------


def test_cancel_a_queued_job(ledger: sa.Engine, principal: Principal) -> None:
    (job_id,) = _submit(ledger, principal)
    assert control.cancel(ledger, principal, job_id, reason="not needed any more") == "canceled"
    job = _job(ledger, job_id)
    assert job["state"] == "canceled"
    assert job["finished_at"] is not None
    last = _history(ledger, job_id)[-1]
    assert (last["from_state"], last["event"], last["to_state"]) == ("queued", "cancel", "canceled")
    assert last["reason"] == "not needed any more"
    assert last["actor"] == principal.subject
    assert _claim(ledger) == []
    # A canceled job cannot be canceled again.
    with pytest.raises(errors.InvalidTransition):
        control.cancel(ledger, principal, job_id, reason="again")


def test_cancel_a_running_job_asks_the_handler(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal)
    assert control.cancel(ledger, principal, row["id"], reason="stop") == "cancel_requested"
    job = _job(ledger, row["id"])
    assert job["state"] == "running"
    assert job["cancel_requested"] is True
    with ledger.begin() as conn:
        assert ledger_jobs.renew_leases(conn, [row["id"]], [row["lease_id"]], [30.0]) == {row["id"]: True}
        moved = ledger_jobs.cancel_running_jobs(conn, [row["id"]], [row["lease_id"]], actor=OWNER)
    assert [m["id"] for m in moved] == [row["id"]]
    assert _job(ledger, row["id"])["state"] == "canceled"
    assert _events(ledger, row["id"])[-1] == "cancel"


def test_cancel_unknown_job(ledger: sa.Engine, principal: Principal) -> None:
    with pytest.raises(errors.NotFound):
        control.cancel(ledger, principal, 987654, reason="missing")


def test_cancel_refuses_an_overlong_reason(ledger: sa.Engine, principal: Principal) -> None:
    (job_id,) = _submit(ledger, principal)
    with pytest.raises(errors.InvalidInput, match="reason"):
        control.cancel(ledger, principal, job_id, reason="x" * 257)
    assert _job(ledger, job_id)["state"] == "queued"


def test_retry_a_dead_lettered_job_replays_it(ledger: sa.Engine, principal: Principal) -> None:
    row = _start(ledger, principal, job_type="fail", max_attempts=2)
    with ledger.begin() as conn:
        ledger_jobs.fail_final_jobs(
            conn,
            [row["id"]],
            [row["lease_id"]],
            ["http_4xx"],
            ["404"],
            ["not retryable"],
            actor=OWNER,
        )
    before = _job(ledger, row["id"])
    history_before = _history(ledger, row["id"])

    new_id = control.retry(ledger, principal, row["id"], doorbell=control.NoDoorbell(), reason="fixed upstream")
    assert new_id != row["id"]
    new = _job(ledger, new_id)
    assert new["replay_of"] == row["id"]
    assert new["state"] == "queued"
    assert new["attempt"] == 0
    assert new["job_type"] == "fail"
    assert new["payload"] == before["payload"]
    assert new["payload_digest"] == before["payload_digest"]
    assert new["max_attempts"] == 2
    assert new["tenant_id"] == before["tenant_id"]
    (created,) = _history(ledger, new_id)
    assert (created["from_state"], created["event"], created["to_state"]) == (
        None,
        "submit",
        "queued",
    )
    assert created["reason"] == "fixed upstream"
    # The original is untouched: same row, same history.
    assert _job(ledger, row["id"]) == before
    assert _history(ledger, row["id"]) == history_before


def test_retry_refuses_a_live_job(ledger: sa.Engine, principal: Principal) -> None:
    (job_id,) = _submit(ledger, principal)
    with pytest.raises(errors.InvalidTransition):
        control.retry(ledger, principal, job_id, doorbell=control.NoDoorbell(), reason="retry")
    assert _count(ledger) == 1


# -- queries ------------------------------------------------------------------------------


def test_job_stats_totals(ledger: sa.Engine, principal: Principal) -> None:
    _submit(ledger, principal, 5, tenant="acme")
    _submit(ledger, principal, 2, tenant="other")
    _claim(ledger, limit=3)
    (canceled,) = _submit(ledger, principal, tenant="acme")
    control.cancel(ledger, principal, canceled, reason="setup")
    with ledger.connect() as conn:
        stats = queries.job_stats(conn, principal)
        acme = queries.job_stats(conn, principal, tenant="acme")
        other = queries.job_stats(conn, principal, tenant="other")
    assert stats["total"] == 8
    assert stats["by_state"]["leased"] == 3
    assert stats["by_state"]["queued"] == 4
    assert stats["by_state"]["canceled"] == 1
    assert stats["by_state"]["succeeded"] == 0
    assert set(stats["by_state"]) == {s.value for s in State}
    assert sum(stats["by_state"].values()) == stats["total"]
    assert acme["total"] == 6
    assert other["total"] == 2


def test_job_stats_of_an_empty_ledger(ledger: sa.Engine, principal: Principal) -> None:
    with ledger.connect() as conn:
        stats = queries.job_stats(conn, principal)
    assert stats["total"] == 0
    assert all(v == 0 for v in stats["by_state"].values())


def test_get_job(ledger: sa.Engine, principal: Principal) -> None:
    (job_id,) = _submit(ledger, principal, tenant="acme")
    with ledger.connect() as conn:
        job = queries.get_job(conn, principal, job_id)
        with pytest.raises(errors.NotFound, match="987654"):
            queries.get_job(conn, principal, 987654)
    assert job["id"] == job_id
    assert job["tenant"] == "acme"
    assert job["state"] == "queued"
    assert isinstance(job["created_at"], str)


def test_get_job_hides_other_tenants(ledger: sa.Engine, principal: Principal) -> None:
    from core.domain.auth import ALL_SCOPES

    (job_id,) = _submit(ledger, principal, tenant="other")
    narrow = Principal(subject="u", scopes=ALL_SCOPES, tenants=frozenset({"acme"}))
    with ledger.connect() as conn, pytest.raises(errors.NotFound):
        queries.get_job(conn, narrow, job_id)
