"""Retention against the real ledger: what goes (finished work past its tenant's retention,
with its history, logs, artifacts and results; old outbox events) and what never does (dead
letters, part of a run, a job a kept job replays, windows, the audit log)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import retention
from core.domain import errors
from core.domain.auth import Principal, Scope
from tests.conftest import Services
from tests.integration.test_backfills import TYPE, claim, finish
from tests.integration.test_cli import ok_json, orch
from worker.runtime.relay import Relay


def prune(engine: sa.Engine, **kw: Any) -> retention.PruneResult:
    return retention.prune(engine, default_days=30, outbox_days=7, batch=kw.pop("batch", 1000), **kw)


def jobs(engine: sa.Engine, principal: Principal, n: int, tenant: str = "acme") -> list[int]:
    specs = [control.JobSpec(tenant, TYPE, {"n": i}) for i in range(n)]
    return control.submit_many(engine, principal, specs, doorbell=control.NoDoorbell()).job_ids


def age(engine: sa.Engine, ids: list[int], days: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET finished_at = now() - make_interval(days => :d) WHERE id = ANY(:i)"),
            {"d": days, "i": ids},
        )


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def work(engine: sa.Engine, fail: set[int] = frozenset()) -> None:
    while rows := claim(engine):
        finish(engine, [r for r in rows if r["id"] not in fail])
        finish(engine, [r for r in rows if r["id"] in fail], fail=True)


def test_old_finished_jobs_go_with_their_history_and_dead_letters_stay(ledger: sa.Engine, principal: Principal) -> None:
    old, recent = jobs(ledger, principal, 5), jobs(ledger, principal, 2)
    work(ledger, fail={old[0]})
    with ledger.begin() as conn:
        conn.execute(sa.text("INSERT INTO job_logs (job_id, attempt, message) VALUES (:j, 1, 'x')"), {"j": old[1]})
    age(ledger, old, 40)
    age(ledger, recent, 3)
    waiting = jobs(ledger, principal, 1)
    result = prune(ledger)
    assert result.removed["jobs"] == 4 and result.removed["logs"] == 1 and result.removed["history"] >= 4 * 4
    remaining = count(ledger, "SELECT count(*) FROM jobs")
    assert remaining == 1 + 2 + 1  # the dead letter, the recent ones, the waiting one
    assert count(ledger, "SELECT count(*) FROM jobs WHERE id = :i AND state = 'dead_lettered'", i=old[0]) == 1
    assert count(ledger, "SELECT count(*) FROM job_history WHERE job_id = :i", i=old[0]) >= 3
    assert count(ledger, "SELECT count(*) FROM job_history WHERE job_id = ANY(:i)", i=old[1:]) == 0
    assert count(ledger, "SELECT count(*) FROM jobs WHERE id = :i", i=waiting[0]) == 1
    with ledger.connect() as conn:
        totals = {r["kind"]: r["removed"] for r in conn.execute(sa.text("SELECT * FROM prune_counters")).mappings()}
    assert totals["jobs"] == 4
    assert prune(ledger).removed["jobs"] == 0  # nothing more


def test_a_tenant_keeps_its_own_retention(ledger: sa.Engine, principal: Principal) -> None:
    a, b = jobs(ledger, principal, 2, "acme"), jobs(ledger, principal, 2, "globex")
    work(ledger)
    age(ledger, a + b, 40)
    retention.set_tenant_retention(ledger, principal, "globex", 90, reason="contract")
    with pytest.raises(errors.InvalidInput):
        retention.set_tenant_retention(ledger, principal, "globex", 0, reason="r")
    with pytest.raises(errors.ReasonRequired):
        retention.set_tenant_retention(ledger, principal, "globex", 10, reason=None)
    assert prune(ledger).removed["jobs"] == 2
    assert count(ledger, "SELECT count(*) FROM jobs WHERE id = ANY(:i)", i=b) == 2


def test_runs_go_as_a_unit_and_never_with_a_dead_letter(ledger: sa.Engine, principal: Principal) -> None:
    def run(name: str) -> control.RunResult:
        spec = control.RunSpec(
            "acme",
            name,
            [control.JobSpec("acme", TYPE, key="a"), control.JobSpec("acme", TYPE, key="b", after=("a",))],
        )
        return control.submit_run(ledger, principal, spec, control.NoDoorbell())

    ok, bad, young = run("ok"), run("bad"), run("young")
    work(ledger, fail={bad.jobs["b"]})
    every = [*ok.jobs.values(), *bad.jobs.values(), young.jobs["a"]]
    age(ledger, every, 40)
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET finished_at = now() - interval '40 days'"))
    result = prune(ledger)
    assert (result.removed["runs"], result.removed["jobs"]) == (1, 2)
    assert count(ledger, "SELECT count(*) FROM runs") == 2
    assert count(ledger, "SELECT count(*) FROM run_jobs WHERE run_id = :r", r=bad.run_id) == 2
    assert count(ledger, "SELECT count(*) FROM run_jobs WHERE run_id = :r", r=young.run_id) == 2
    assert count(ledger, "SELECT count(*) FROM dag_edges WHERE run_id = :r", r=ok.run_id) == 0


def test_a_replayed_job_stays_while_its_replay_does(ledger: sa.Engine, principal: Principal) -> None:
    (first,) = jobs(ledger, principal, 1)
    work(ledger, fail={first})
    replay = control.replay_many(ledger, principal, [first], doorbell=control.NoDoorbell(), reason="again")[first]
    work(ledger)
    with ledger.begin() as conn:  # an operator removed the dead letter's state: it succeeded on a retry
        conn.execute(sa.text("UPDATE jobs SET state = 'succeeded' WHERE id = :i"), {"i": first})
    age(ledger, [first], 40)
    assert prune(ledger).removed["jobs"] == 0  # its replay is recent: both stay
    age(ledger, [replay], 40)
    assert prune(ledger, batch=1).removed["jobs"] == 2  # the replay first, then the job it replayed
    assert count(ledger, "SELECT count(*) FROM jobs") == 0


def test_windows_audit_and_recent_events_stay(ledger: sa.Engine, principal: Principal) -> None:
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    spec = control.BackfillSpec("acme", control.Target.of_job(TYPE), day, day + dt.timedelta(hours=2))
    control.create_backfill(ledger, principal, spec, reason="r", ticket="T")
    from tests.integration.test_backfills import run_backfill

    run_backfill(ledger, principal)
    with ledger.connect() as conn:
        ids = [int(i) for i in conn.execute(sa.text("SELECT id FROM jobs")).scalars()]
    age(ledger, ids, 40)
    with ledger.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET at = now() - interval '8 days' WHERE id = (SELECT min(id) FROM events)")
        )
    Relay(ledger).run_once()  # only numbered events are pruned
    audit = count(ledger, "SELECT count(*) FROM audit_log")
    events = count(ledger, "SELECT count(*) FROM events")
    result = prune(ledger)
    assert result.removed["jobs"] == 2 and result.removed["events"] == 1
    assert count(ledger, "SELECT count(*) FROM windows WHERE state = 'succeeded'") == 2
    assert count(ledger, "SELECT count(*) FROM audit_log") == audit
    assert count(ledger, "SELECT count(*) FROM events") == events - 1
    again = control.create_backfill(ledger, principal, spec, reason="r", ticket="T", dry_run=True)
    assert again.skipped_done == 2 and again.to_run == 0


def test_events_go_from_the_start_of_the_stream_and_never_leave_a_hole(ledger: sa.Engine) -> None:
    insert = sa.text("INSERT INTO events (tenant_id, kind, payload, at) VALUES (NULL, :k, '{}', now() - :age)")
    with ledger.begin() as conn:
        for kind, age_days in (("old", 9), ("young", 1), ("late", 9)):  # "late" committed after "young"
            conn.execute(insert, {"k": kind, "age": dt.timedelta(days=age_days)})
    Relay(ledger).run_once()
    with ledger.begin() as conn:
        conn.execute(insert, {"k": "unnumbered", "age": dt.timedelta(days=9)})
    assert prune(ledger, dry_run=True).removed["events"] == 1
    assert prune(ledger).removed["events"] == 1
    with ledger.connect() as conn:
        kept = conn.execute(sa.text("SELECT kind, seq FROM events ORDER BY id")).all()
    # "late" stays behind "young" (a hole at its number would be a silent gap), and an event
    # nobody numbered yet is never pruned.
    assert [(k, s) for k, s in kept] == [("young", 2), ("late", 3), ("unnumbered", None)]


def test_dry_run_counts_and_removes_nothing(ledger: sa.Engine, principal: Principal) -> None:
    ids = jobs(ledger, principal, 3)
    work(ledger)
    age(ledger, ids, 40)
    dry = prune(ledger, dry_run=True)
    assert dry.as_dict()["removed"]["jobs"] == 3 and dry.as_dict()["removed"]["history"] is None
    assert count(ledger, "SELECT count(*) FROM jobs") == 3


def test_by_hand_needs_operate_on_every_tenant_and_is_audited(ledger: sa.Engine, principal: Principal) -> None:
    one = Principal("op", frozenset({Scope.OPERATE, Scope.READ}), frozenset({"acme"}))
    with pytest.raises(errors.Forbidden):
        retention.prune_by_hand(ledger, one, default_days=30, outbox_days=7, dry_run=False)
    retention.prune_by_hand(ledger, principal, default_days=30, outbox_days=7, dry_run=False, reason="tidy")
    with ledger.connect() as conn:
        (row,) = [r for r in queries.audit_log(conn, principal, limit=10) if r["action"] == "ledger.prune"]
    assert row["reason"] == "tidy"


def test_cli_prune_json(services: Services, ledger: sa.Engine, principal: Principal) -> None:
    ids = jobs(ledger, principal, 2)
    work(ledger)
    age(ledger, ids, 40)
    dry = ok_json(orch(services, "ledger", "prune", "--dry-run", "--json"))
    assert dry["dry_run"] is True and dry["removed"]["jobs"] == 2
    done = ok_json(orch(services, "ledger", "prune", "--json"))
    assert done["removed"]["jobs"] == 2 and done["complete"] is True
    text = orch(services, "ledger", "prune")
    assert text.returncode == 0 and text.stdout.startswith("removed: 0 jobs")
    kept = ok_json(orch(services, "ledger", "retention", "--tenant", "acme", "--days", "90", "--reason", "r", "--json"))
    assert kept == {"tenant": "acme", "retention_days": 90}
    bad = orch(services, "ledger", "retention", "--tenant", "acme", "--reason", "r")
    assert bad.returncode == 2 and "--days N or --default" in bad.stderr
