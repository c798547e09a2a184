"""Room reserved ahead (orch_admit v4, docs/adr/0026) against a real PostgreSQL: a claim with
ample room takes room for 64 more jobs into a reservation of its session, the session's next
claims admit from it without touching the bucket, the quota or the hour's starts, and every
cap still holds for every other claimer: reserved slots count as held, an expired
reservation gives them back, and a 429, a quota change or a pause stops its use.

A reservation belongs to a database session (pg_backend_pid()), so each claimer here keeps
one autocommit connection, as a worker's claimer lane does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from core.ledger import jobs as ledger_jobs
from tests.integration.test_flow_control import (
    QUEUE,
    REASON,
    TENANT,
    TYPES,
    Scheduler,
    add_source,
    bucket_row,
    execute,
    jobs,
    record,
    source_row,
    states,
    submit,
)

#: orch_admit v4's RESERVE_N: the room one reservation takes.
RESERVE_N = 64


@contextmanager
def session(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One claimer's database session (its reservations are its own)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


def claim(conn: sa.Connection, limit: int) -> list[int]:
    rows = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=limit, owner="tests:claimer", job_types=TYPES)
    return [int(r["id"]) for r in rows]


def reservations(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM admission_reservations ORDER BY id")).mappings()
        return [dict(r) for r in rows]


def hour_starts(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT coalesce(sum(starts), 0) FROM quota_starts")).scalar_one())


def running(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM jobs WHERE state = 'running'")).scalar_one())


def _approx(value: float) -> Any:
    return pytest.approx(value, abs=0.05)


def limited(engine: sa.Engine, principal: Principal, *, burst: float = 10_000.0, **quota: int) -> int:
    """A source whose bucket barely refills (0.001/s), so its tokens can be counted, and a
    quota on noop; returns the bucket's id."""
    add_source(engine, principal, rate=0.001, burst=burst)
    control.set_quota(engine, principal, tenant=TENANT, job_type="noop", reason=REASON, **quota)
    return int(source_row(engine)["bucket_id"])


def test_ample_room_is_reserved_and_the_next_claims_use_only_the_reservation(
    ledger: sa.Engine, principal: Principal
) -> None:
    bucket_id = limited(ledger, principal, max_active=1_000, max_per_hour=100_000)
    submit(ledger, principal, 10, source="feed")
    with session(ledger) as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert len(claim(conn, 1)) == 1
        [r] = reservations(ledger)
        assert (r["holder"], r["room"]) == (pid, RESERVE_N)
        assert r["quota_id"] is not None and r["bucket_id"] == bucket_id
        # The claim took its token and the reservation's, and counted both as starts.
        b = bucket_row(ledger, bucket_id)
        assert b["tokens"] == _approx(10_000 - 1 - RESERVE_N)
        assert hour_starts(ledger) == 1 + RESERVE_N
        # Counted in the minute the reservation expires: its starts may happen until then.
        with ledger.connect() as c:
            minutes = c.execute(sa.text("SELECT minute FROM quota_starts")).scalars().all()
            expiry_minute = c.execute(
                sa.text("SELECT date_trunc('minute', expires_at) FROM admission_reservations")
            ).scalar_one()
        assert minutes == [expiry_minute]
        updated_at = b["updated_at"]

        assert len(claim(conn, 3)) == 3
        assert len(claim(conn, 2)) == 2
        [r] = reservations(ledger)
        assert r["room"] == RESERVE_N - 5
        b = bucket_row(ledger, bucket_id)
        assert b["updated_at"] == updated_at, "a claim from the reservation wrote the bucket"
        assert b["tokens"] == _approx(10_000 - 1 - RESERVE_N)
        assert hour_starts(ledger) == 1 + RESERVE_N
    assert running(ledger) == 6


def test_tight_room_takes_the_exact_path_and_reserves_nothing(ledger: sa.Engine, principal: Principal) -> None:
    """Room for the batch but not for 4 x 64 more beyond it: no reservation, the bucket and
    the quota pay for the batch alone (version 3's exact path)."""
    bucket_id = limited(ledger, principal, burst=200.0, max_active=1_000)
    submit(ledger, principal, 3, source="feed")
    with session(ledger) as conn:
        assert len(claim(conn, 3)) == 3
    assert reservations(ledger) == []
    assert bucket_row(ledger, bucket_id)["tokens"] == _approx(197)
    # Ample tokens but few free slots: the reserved tokens go back.
    execute(ledger, "UPDATE buckets SET tokens = 10000, capacity = 10000")
    control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=100, reason=REASON)
    submit(ledger, principal, 2, source="feed")
    with session(ledger) as conn:
        assert len(claim(conn, 2)) == 2
    assert reservations(ledger) == []
    assert bucket_row(ledger, bucket_id)["tokens"] == _approx(9_998)


def test_reserved_slots_count_against_max_active_for_every_other_claimer(
    ledger: sa.Engine, principal: Principal
) -> None:
    max_active = 300
    limited(ledger, principal, max_active=max_active)
    ids = submit(ledger, principal, 600, source="feed")
    with session(ledger) as a, session(ledger) as b:
        assert len(claim(a, 1)) == 1  # A: 1 running, 64 reserved
        got_b = [len(claim(b, 100)) for _ in range(4)]
        # B sees 300 - 1 - 64 = 235 free slots: 100 (too few to reserve 64 more), 100, then 35.
        assert got_b == [100, 100, 35, 0]
        assert running(ledger) == 236
        # A's reserved room is still there for A alone.
        assert len(claim(a, RESERVE_N)) == RESERVE_N
        assert running(ledger) == max_active
        assert claim(a, 1) == [] and claim(b, 1) == []
    assert running(ledger) == max_active
    waiting = [j for j in jobs(ledger, ids).values() if j["state"] == "throttled"]
    assert waiting and {j["wait_reason"] for j in waiting} == {"quota"}


def test_an_expired_reservation_gives_its_slots_back(ledger: sa.Engine, principal: Principal) -> None:
    bucket_id = limited(ledger, principal, max_active=300)
    submit(ledger, principal, 400, source="feed")
    with session(ledger) as a, session(ledger) as b:
        assert len(claim(a, 1)) == 1
        execute(ledger, "UPDATE admission_reservations SET expires_at = now() - interval '1 second'")
        # Not used by its own session either: the claim takes tokens and room again.
        assert len(claim(a, 1)) == 1
        assert bucket_row(ledger, bucket_id)["tokens"] == _approx(10_000 - 2 * (1 + RESERVE_N))
        [r] = reservations(ledger)
        assert r["room"] == RESERVE_N
        execute(ledger, "UPDATE admission_reservations SET expires_at = now() - interval '1 second'")
        # A's 64 slots are free again: B gets all 298, and deletes A's reservation to count.
        assert sum(len(claim(b, 100)) for _ in range(3)) == 298
        assert reservations(ledger) == []
        assert claim(a, 1) == []
    assert running(ledger) == 300


def test_room_too_small_for_a_batch_is_given_up(ledger: sa.Engine, principal: Principal) -> None:
    """A claim that cannot admit from its reservation frees the slots left in it, so a
    session's last few reserved slots do not hold the quota below its cap."""
    limited(ledger, principal, max_active=300)
    submit(ledger, principal, 400, source="feed")
    with session(ledger) as a, session(ledger) as b:
        assert len(claim(a, 1)) == 1
        assert len(claim(a, RESERVE_N - 4)) == RESERVE_N - 4
        assert reservations(ledger)[0]["room"] == 4
        # 5 > 4: A gives the 4 up and, with 235 free, cannot reserve again (not ample).
        assert len(claim(a, 5)) == 5
        assert [r["room"] for r in reservations(ledger)] == [0]
        assert sum(len(claim(b, 100)) for _ in range(3)) == 300 - 1 - (RESERVE_N - 4) - 5
    assert running(ledger) == 300


def test_a_429_stops_the_use_of_a_reservation(ledger: sa.Engine, principal: Principal) -> None:
    bucket_id = limited(ledger, principal, max_active=1_000)
    ids = submit(ledger, principal, 3, source="feed")
    with session(ledger) as conn:
        assert len(claim(conn, 1)) == 1
        assert reservations(ledger)[0]["room"] == RESERVE_N
        record(ledger, int(source_row(ledger)["id"]), ["throttled"], retry_after=[30.0])
        assert bucket_row(ledger, bucket_id)["decreased_at"] is not None
        # The bucket is blocked for 30 s: the next claim asks it, and waits.
        assert claim(conn, 1) == []
    # The claim that could not admit from the reservation gave its room up.
    assert reservations(ledger)[0]["room"] == 0
    assert states(ledger, ids) == {"running": 1, "throttled/rate_limited": 1, "queued": 1}


def test_a_quota_change_stops_the_use_of_a_reservation(ledger: sa.Engine, principal: Principal) -> None:
    bucket_id = limited(ledger, principal, max_active=1_000)
    submit(ledger, principal, 5, source="feed")
    with session(ledger) as conn:
        assert len(claim(conn, 1)) == 1
        control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", max_active=1_001, reason=REASON)
        # Not from the old reservation: the claim took tokens again and a new reservation.
        assert len(claim(conn, 1)) == 1
        assert bucket_row(ledger, bucket_id)["tokens"] == _approx(10_000 - 2 * (1 + RESERVE_N))
        [r] = reservations(ledger)
        assert (r["room"], r["max_active"]) == (RESERVE_N, 1_001)
        # With the quota gone, neither that reservation nor its like is used or taken.
        control.set_quota(ledger, principal, tenant=TENANT, job_type="noop", reason=REASON)
        assert len(claim(conn, 1)) == 1
        [r] = reservations(ledger)
        assert (r["room"], r["quota_id"]) == (RESERVE_N, None)
        assert bucket_row(ledger, bucket_id)["tokens"] == _approx(10_000 - 3 * (1 + RESERVE_N))


def test_a_pause_holds_the_jobs_of_a_group_with_a_reservation(ledger: sa.Engine, principal: Principal) -> None:
    limited(ledger, principal, max_active=1_000)
    ids = submit(ledger, principal, 3, source="feed")
    with session(ledger) as conn:
        assert len(claim(conn, 1)) == 1
        control.pause(ledger, principal, tenant=TENANT, source="feed", reason=REASON)
        assert claim(conn, 2) == []
    assert states(ledger, ids) == {"running": 1, "throttled/paused": 2}
    assert reservations(ledger)[0]["room"] == 0


def test_caps_hold_with_reservations_under_concurrent_claimers(ledger: sa.Engine, principal: Principal) -> None:
    """Eight sessions claim until nothing is left to claim, jobs never finish: max_active is
    reached exactly and never passed; the bucket and the hour's starts are never passed
    either (room a reservation took and nobody used is lost, so they may fall short)."""
    max_active, burst, per_hour = 500, 900.0, 700
    bucket_id = limited(ledger, principal, burst=burst, max_active=max_active, max_per_hour=per_hour)
    submit(ledger, principal, 1_000, source="feed")
    barrier = threading.Barrier(8)
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        with session(ledger) as conn:
            barrier.wait(10)
            empty = 0
            while empty < 3:
                ids = claim(conn, 4)
                empty = 0 if ids else empty + 1
                with lock:
                    got.extend(ids)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == len(set(got)) == running(ledger)
    assert running(ledger) <= max_active, f"{running(ledger)} jobs hold slots of a quota of {max_active}"
    assert hour_starts(ledger) <= per_hour
    assert bucket_row(ledger, bucket_id)["tokens"] >= -1e-6
    assert reservations(ledger), "no claimer reserved room: the test did not exercise reservations"
    # Slots are never lost, only tokens and starts: release the reservations by expiry and
    # the free slots are the quota's whole remainder again.
    execute(ledger, "UPDATE admission_reservations SET expires_at = now() - interval '1 second'")
    execute(ledger, "UPDATE buckets SET tokens = 10000")
    execute(ledger, "DELETE FROM quota_starts")
    execute(ledger, "UPDATE jobs SET not_before = now() WHERE state = 'throttled'")
    assert Scheduler(ledger).release_due() > 0
    with session(ledger) as conn:
        while claim(conn, 50):
            pass
    assert running(ledger) == max_active


def test_the_scheduler_deletes_reservations_expired_a_minute_ago(ledger: sa.Engine, principal: Principal) -> None:
    """Reservations no claim deletes (a bucket's only, or a group nobody claims any more)."""
    limited(ledger, principal, max_active=1_000)
    submit(ledger, principal, 2, source="feed")
    with session(ledger) as a, session(ledger) as b:
        assert len(claim(a, 1)) == 1 and len(claim(b, 1)) == 1
    assert len(reservations(ledger)) == 2
    execute(ledger, "UPDATE admission_reservations SET expires_at = now() - interval '61 seconds' WHERE id = 1")
    Scheduler(ledger).s.sample_depth()
    assert [r["id"] for r in reservations(ledger)] == [2]
