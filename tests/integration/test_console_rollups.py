"""The console's rollups against the real ledger (core/ledger/rollups.py, migration 0008):
job counts and burn rates equal a direct count of the jobs before the scheduler rolled them
up, after, after more jobs finished, after retention deleted some, after a dead letter was
replayed, and with two schedulers rolling up at once; dead-letter clusters list their newest
ids, bounded."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import retention
from core.domain import slo
from core.domain.auth import Principal
from core.ledger import jobs as ledger_jobs
from core.ledger import rollups
from core.ledger.reads import failures as failure_reads
from tests.integration.test_backfills import claim, finish
from tests.integration.test_retention import age, count, jobs, prune, work
from worker.runtime import scheduler as scheduler_mod


def roll_up(engine: sa.Engine, **kw: Any) -> rollups.RollupResult:
    return rollups.roll_up(engine, grace_s=0.0, **kw)


def direct_states(engine: sa.Engine, tenant: str | None = None) -> dict[str, int]:
    where = "" if tenant is None else "WHERE tenant_id = (SELECT id FROM tenants WHERE name = :t)"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT state, count(*) FROM jobs {where} GROUP BY 1"), {"t": tenant})
        return {str(s): int(n) for s, n in rows}


def stats(engine: sa.Engine, principal: Principal, tenant: str | None = None) -> dict[str, int]:
    with engine.connect() as conn:
        by_state = queries.job_stats(conn, principal, tenant=tenant)["by_state"]
    return {s: n for s, n in by_state.items() if n}


def direct_burn(engine: sa.Engine) -> dict[tuple[str, str, str], tuple[int, int]]:
    counts = ", ".join(
        f"count(*) FILTER (WHERE j.finished_at > now() - interval '{s} seconds') AS total_{n},"
        f" count(*) FILTER (WHERE j.state = 'dead_lettered' AND j.finished_at > now() - interval '{s} seconds')"
        f" AS failed_{n}"
        for n, s in slo.WINDOWS.items()
    )
    sql = f"""SELECT t.name AS tenant, j.job_type, {counts} FROM jobs j JOIN tenants t ON t.id = j.tenant_id
              WHERE j.finished_at > now() - interval '3 days' AND j.state IN ('succeeded', 'dead_lettered')
              GROUP BY 1, 2"""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql)).mappings().all()
    return {(r["tenant"], r["job_type"], n): (r[f"total_{n}"], r[f"failed_{n}"]) for r in rows for n in slo.WINDOWS}


def burn(engine: sa.Engine, principal: Principal) -> dict[tuple[str, str, str], tuple[int, int]]:
    with engine.connect() as conn:
        rows = queries.burn_rates(conn, principal)
    return {(r["tenant"], r["job_type"], r["window"]): (r["total"], r["failed"]) for r in rows}


def assert_exact(engine: sa.Engine, principal: Principal) -> None:
    for tenant in (None, "acme", "globex"):
        assert stats(engine, principal, tenant) == direct_states(engine, tenant), tenant
    assert burn(engine, principal) == direct_burn(engine)


def rolled_totals(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT state, sum(jobs) FROM job_state_totals GROUP BY 1"))
        return {str(s): int(n) for s, n in rows if n}


def ledger_of_mixed_outcomes(engine: sa.Engine, principal: Principal) -> dict[str, list[int]]:
    """acme: 6 succeeded, 2 dead-lettered, 1 canceled, 2 queued; globex: 3 succeeded."""
    acme, globex = jobs(engine, principal, 9), jobs(engine, principal, 3, "globex")
    control.cancel(engine, principal, acme[8], reason="not needed")
    work(engine, fail={acme[0], acme[1]})
    waiting = jobs(engine, principal, 2)
    return {"acme": acme, "globex": globex, "waiting": waiting}


def test_counts_are_exact_before_and_after_the_rollup_and_right_after_a_finish(
    ledger: sa.Engine, principal: Principal
) -> None:
    made = ledger_of_mixed_outcomes(ledger, principal)
    age(ledger, made["acme"][:4], 2)  # finished two days ago: in the 3d window, in old buckets
    assert rolled_totals(ledger) == {}
    assert_exact(ledger, principal)  # nothing rolled up yet: all of it from the jobs
    result = roll_up(ledger)
    assert result.complete and result.jobs == 12
    assert rolled_totals(ledger) == {"succeeded": 9, "canceled": 1}
    assert_exact(ledger, principal)
    # Jobs that finish after the rollup count at once (the tail since the mark) ...
    work(ledger, fail={made["waiting"][0]})
    assert stats(ledger, principal, "acme")["dead_lettered"] == 3
    assert_exact(ledger, principal)
    # ... and once rolled up, exactly once.
    assert roll_up(ledger).jobs == 2
    assert rolled_totals(ledger) == {"succeeded": 10, "canceled": 1}
    assert_exact(ledger, principal)
    assert roll_up(ledger).jobs == 0  # nothing changed: nothing to do


def test_the_rollup_is_bounded_per_transaction_and_resumes(ledger: sa.Engine, principal: Principal) -> None:
    ledger_of_mixed_outcomes(ledger, principal)
    result = roll_up(ledger, batch=3)
    assert result.complete and result.jobs == 12 and result.transactions >= 2
    assert_exact(ledger, principal)
    jobs(ledger, principal, 5)
    while rows := claim(ledger, limit=1):  # one finish time each (the 2 waiting ones too)
        finish(ledger, rows)
    partial = roll_up(ledger, batch=1, budget_s=0.0)  # stops after one transaction
    assert not partial.complete and partial.jobs == 1
    assert_exact(ledger, principal)
    assert roll_up(ledger).jobs == 6
    assert_exact(ledger, principal)


def test_the_horizon_waits_for_an_open_transaction(ledger: sa.Engine, principal: Principal) -> None:
    """A transaction that started before a finish may commit one older than the grace: the
    mark stays before the start of every open transaction."""
    with ledger.connect() as other:
        other.execute(sa.text("SELECT 1"))  # opens a transaction, left open
        started = other.execute(sa.text("SELECT now()")).scalar_one()
        ids = jobs(ledger, principal, 2)
        work(ledger)
        roll_up(ledger)
        with ledger.connect() as conn:
            until = conn.execute(sa.text("SELECT until FROM rollup_marks")).scalar_one()
        assert until <= started
        assert rolled_totals(ledger) == {}
        assert stats(ledger, principal)["succeeded"] == 2
        other.rollback()
    roll_up(ledger)
    assert rolled_totals(ledger) == {"succeeded": len(ids)}
    assert_exact(ledger, principal)


def test_the_tidy_step_holds_no_rollup_lock_while_it_waits_for_jobs(ledger: sa.Engine) -> None:
    """The BRIN summary waits for jobs' SHARE UPDATE EXCLUSIVE lock behind whoever holds jobs
    (a TRUNCATE, an ALTER); meanwhile that holder can still take job_finish_rollups. With the
    prune and the summary in one transaction, the prune's lock made this a deadlock (a
    test's TRUNCATE of every table met the scheduler's step so)."""
    errors: list[BaseException] = []
    with ledger.connect() as holder:
        holder.execute(sa.text("SET lock_timeout = '20s'"))
        holder.execute(sa.text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))

        def tidy() -> None:
            try:
                rollups.tidy(ledger)
            except BaseException as exc:  # the test asserts on it
                errors.append(exc)

        step = threading.Thread(target=tidy)
        step.start()
        waiting = False
        for _ in range(400):  # until the step waits for the lock on jobs (at most 20 s)
            with ledger.connect() as probe:
                waiting = bool(
                    probe.execute(
                        sa.text(
                            "SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted"
                            " AND relation = 'jobs'::regclass AND mode = 'ShareUpdateExclusiveLock')"
                        )
                    ).scalar_one()
                )
            if waiting:
                break
            step.join(0.05)
        assert waiting, "the step never waited for jobs"
        holder.execute(sa.text("LOCK TABLE job_finish_rollups IN ACCESS EXCLUSIVE MODE"))
        holder.commit()
    step.join(30)
    assert not step.is_alive()
    assert errors == []


def test_retention_takes_what_it_deletes_off_the_rollups(ledger: sa.Engine, principal: Principal) -> None:
    made = ledger_of_mixed_outcomes(ledger, principal)
    age(ledger, made["acme"][:7], 40)  # 2 dead letters (kept), 5 succeeded (pruned)
    age(ledger, made["acme"][7:9], 2)  # 1 succeeded, 1 canceled, in the 3d window
    roll_up(ledger)
    assert rolled_totals(ledger) == {"succeeded": 9, "canceled": 1}
    retention_days = 1
    retention.set_tenant_retention(ledger, principal, "acme", retention_days, reason="short")
    removed = prune(ledger).removed
    assert removed["jobs"] == 7  # the 40- and 2-day-old ones that are not dead letters
    assert rolled_totals(ledger) == {"succeeded": 3}  # globex's
    assert_exact(ledger, principal)
    with ledger.connect() as conn:
        buckets = conn.execute(sa.text("SELECT sum(succeeded), sum(canceled) FROM job_finish_rollups")).one()
    assert tuple(int(x) for x in buckets) == (3, 0)


def test_retention_before_the_first_rollup_takes_nothing_off(ledger: sa.Engine, principal: Principal) -> None:
    """Jobs deleted before they were rolled up never were in the rollups."""
    made = ledger_of_mixed_outcomes(ledger, principal)
    age(ledger, made["acme"][2:5], 40)
    assert prune(ledger).removed["jobs"] == 3
    assert rolled_totals(ledger) == {}
    assert_exact(ledger, principal)
    roll_up(ledger)
    assert rolled_totals(ledger) == {"succeeded": 6, "canceled": 1}
    assert_exact(ledger, principal)


def test_a_replayed_dead_letter_is_counted_where_it_is(ledger: sa.Engine, principal: Principal) -> None:
    made = ledger_of_mixed_outcomes(ledger, principal)
    roll_up(ledger)
    new = control.retry(ledger, principal, made["acme"][0], doorbell=control.NoDoorbell(), reason="feed fixed")
    assert count(ledger, "SELECT count(*) FROM jobs WHERE id = :i AND state = 'queued'", i=new) == 1
    assert_exact(ledger, principal)
    work(ledger)
    roll_up(ledger)
    assert_exact(ledger, principal)


def test_two_schedulers_rolling_up_at_once_count_every_job_once(ledger: sa.Engine, principal: Principal) -> None:
    ledger_of_mixed_outcomes(ledger, principal)
    errors: list[BaseException] = []
    done = threading.Event()

    def scheduler() -> None:
        try:
            while not done.is_set():
                roll_up(ledger, batch=2)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):  # jobs finish while both roll up
            jobs(ledger, principal, 3)
            work(ledger)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    roll_up(ledger)
    assert rolled_totals(ledger) == {"succeeded": 9 + 2 + 12, "canceled": 1}  # the 2 waiting ones ran too
    assert count(ledger, "SELECT sum(succeeded) FROM job_finish_rollups") == 23
    assert_exact(ledger, principal)


def test_a_finish_committed_after_the_horizon_was_read_waits_for_the_next_step(
    ledger: sa.Engine, principal: Principal
) -> None:
    """The horizon is read in a statement before the rollup's own (rollup_horizon): a
    finishing transaction open then holds it back, so its finishes are rolled up by a later
    step instead of being passed over. (Read inside the rollup statement, a transaction that
    committed between that statement's snapshot and its read of pg_stat_activity was in
    neither, and its finishes were never counted: the two-scheduler test above caught it.)"""
    jobs(ledger, principal, 2)
    rows = claim(ledger)
    with ledger.connect() as finisher:
        tx = finisher.begin()
        ledger_jobs.succeed_jobs(
            finisher, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="t", results=[None, None]
        )
        with ledger.begin() as conn:
            rollups.ensure_rollup_mark(conn)
            until = rollups.lock_rollup_mark(conn)
            horizon = rollups.rollup_horizon(conn, grace_s=0.0)
            tx.commit()  # after the horizon was read, before the rollup's snapshot
            row = rollups.roll_up_finished(conn, until, limit=100, horizon=horizon)
    assert row["jobs"] == 0  # not yet: they finished at or after the horizon
    roll_up(ledger)
    assert rolled_totals(ledger) == {"succeeded": 2}
    assert_exact(ledger, principal)


def test_the_scheduler_rolls_up_every_few_seconds(ledger: sa.Engine, principal: Principal) -> None:
    from core.settings import Settings

    settings = Settings(database_url=str(ledger.url.render_as_string(hide_password=False)))
    s = scheduler_mod.Scheduler(ledger, None, control.NoDoorbell(), settings)  # type: ignore[arg-type]
    jobs(ledger, principal, 2)
    work(ledger)
    with ledger.begin() as conn:  # as if they finished a minute ago (past the grace)
        conn.execute(sa.text("UPDATE jobs SET finished_at = now() - interval '1 minute'"))
    s.roll_up()
    assert rolled_totals(ledger) == {"succeeded": 2}
    jobs(ledger, principal, 1)
    work(ledger)
    s.roll_up()  # within ROLLUP_EVERY_S of the last: nothing
    assert rolled_totals(ledger) == {"succeeded": 2}
    assert stats(ledger, principal)["succeeded"] == 3


def test_dead_letter_clusters_list_their_newest_ids_bounded(
    ledger: sa.Engine, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = jobs(ledger, principal, 5)
    work(ledger, fail=set(ids[:4]))
    with ledger.connect() as conn:
        (cluster,) = queries.dead_letter_clusters(conn, principal)
    assert cluster["count"] == 4 and cluster["job_ids"] == sorted(ids[:4], reverse=True)
    assert cluster["message"] and cluster["last_seen"]
    monkeypatch.setattr(failure_reads, "CLUSTER_IDS", 2)
    with ledger.connect() as conn:
        (cluster,) = queries.dead_letter_clusters(conn, principal, tenant="acme")
        assert queries.dead_letter_clusters(conn, principal, tenant="globex") == []
    assert cluster["count"] == 4 and cluster["job_ids"] == [ids[3], ids[2]]
