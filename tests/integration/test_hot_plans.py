"""The worker's hot statements reach the jobs they change by primary key, however many other
jobs are in the same state: a partial index of running jobs must not drive the join (with
thousands running, every batch of outcomes would read all of them)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from core.ledger import jobs as ledger_jobs
from core.ledger.statements import transition


def _plan(conn: sa.Connection, name: str, params: dict[str, object]) -> str:
    rows = conn.execute(sa.text("EXPLAIN " + transition(name).text), params)
    return "\n".join(r[0] for r in rows)


def test_outcomes_find_their_jobs_by_primary_key(ledger: sa.Engine, principal: Principal) -> None:
    specs = [control.JobSpec("plans", "noop")] * 2000
    control.submit_many(ledger, principal, specs, doorbell=control.NoDoorbell())
    with ledger.begin() as conn:
        running = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=2000, owner="w", job_types=["noop"])
    assert len(running) == 2000
    with ledger.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE jobs"))
        ids = [running[0]["id"], running[1]["id"]]
        leases = [running[0]["lease_id"], running[1]["lease_id"]]
        plans = {
            "succeed_jobs": _plan(
                conn, "succeed_jobs", {"id": ids, "lease_id": leases, "result": [None, None], "actor": "w"}
            ),
            "succeed_and_claim_jobs": _plan(
                conn,
                "succeed_and_claim_jobs",
                {
                    "id": ids,
                    "lease_id": leases,
                    "queue": "default",
                    "limit": 1,
                    "owner": "w",
                    "actor": "w",
                    "job_types": ["noop"],
                },
            ),
            "cancel_running_jobs": _plan(conn, "cancel_running_jobs", {"id": ids, "lease_id": leases, "actor": "w"}),
        }
    for name, plan in plans.items():
        assert "jobs_active_type_idx" not in plan and "jobs_lease_expiry_idx" not in plan, f"{name}:\n{plan}"
        assert "jobs_pkey" in plan, f"{name}:\n{plan}"
    # And they do what they say: both jobs succeed, a stranger's lease changes nothing.
    with ledger.begin() as conn:
        done = ledger_jobs.succeed_jobs(conn, [*ids, running[2]["id"]], [*leases, uuid.uuid4()], actor="w")
    assert sorted(r["id"] for r in done) == sorted(ids)


def test_every_transition_statement_fits_the_drivers_query_cache() -> None:
    """psycopg parses a query's placeholders once and caches the result only up to a length:
    a hot statement over it pays the parse on every execution."""
    import psycopg._queries

    from core.ledger import statements

    assert statements.CLIENT_CACHED_LENGTH == psycopg._queries.MAX_CACHED_STATEMENT_LENGTH
    for name in statements.specs():
        sent = transition(name).text
        assert len(sent) <= statements.CLIENT_CACHED_LENGTH, f"{name}: {len(sent)} characters"
        assert sent.startswith(f"/* {name} */")
