"""DAG runs against a real PostgreSQL: the database's trigger-rule verdict equals the Python
one, bad runs write nothing, two parents ending at once release their child exactly once,
failures and skips propagate in the finishing transaction (a 300-job chain included), replay
rewires the failed part in the same run, cancel, idempotency keys, tenants, results, spawn,
and the scheduler's repair of an unrung release."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import JobSpec, RunSpec
from core.domain import dag, errors
from core.domain.auth import ALL_SCOPES, Principal, Scope
from core.ledger import jobs as L
from core.ledger import runs as ledger_runs

T = "dag-t"
WORKER = "worker-tests"
TYPES = ["noop", "test.emit", "test.sum_parents"]


def job(key: str, *after: str, rule: str = "all_success", job_type: str = "noop", **kw: Any) -> JobSpec:
    return JobSpec(T, job_type, kw.pop("payload", {}), key=key, after=after, trigger_rule=rule, **kw)


def submit(engine: sa.Engine, principal: Principal, *jobs: JobSpec, **kw: Any) -> control.RunResult:
    return control.submit_run(
        engine, principal, RunSpec(T, kw.pop("name", "pipe"), list(jobs), **kw), control.NoDoorbell()
    )


def states(engine: sa.Engine, run_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        return {r["key"]: r["state"] for r in ledger_runs.run_job_rows(conn, run_id)}


def run_state(engine: sa.Engine, run_id: int) -> str:
    with engine.connect() as conn:
        row = ledger_runs.run_row(conn, run_id)
    assert row is not None
    return str(row["state"])


def claim(engine: sa.Engine, limit: int = 100) -> list[sa.RowMapping]:
    with engine.begin() as conn:
        return L.claim_and_start_jobs(conn, queue="default", limit=limit, owner=WORKER, job_types=TYPES)


def finish(engine: sa.Engine, rows: Sequence[sa.RowMapping], *, fail: bool = False, result: str | None = None) -> None:
    if not rows:
        return
    ids, leases = [r["id"] for r in rows], [r["lease_id"] for r in rows]
    with engine.begin() as conn:
        if fail:
            n = len(rows)
            L.fail_final_jobs(conn, ids, leases, ["unknown"] * n, ["boom"] * n, ["fatal"] * n, actor=WORKER)
        else:
            L.succeed_jobs(conn, ids, leases, actor=WORKER, results=[result] * len(rows))


def work(engine: sa.Engine, fail: set[int] = frozenset(), rounds: int = 50) -> None:
    """Run every ready job until none is left; jobs whose id is in `fail` dead-letter."""
    for _ in range(rounds):
        rows = claim(engine)
        if not rows:
            return
        finish(engine, [r for r in rows if r["id"] not in fail])
        finish(engine, [r for r in rows if r["id"] in fail], fail=True)


def history(engine: sa.Engine, job_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT event, to_state FROM job_history WHERE job_id = :id ORDER BY id"), {"id": job_id}
        )
        return [(r[0], r[1]) for r in rows]


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- the verdict ------------------------------------------------------------------------------


def test_the_database_verdict_is_the_python_verdict(ledger: sa.Engine) -> None:
    cases = [
        (rule, total, ok, failed, skipped)
        for rule in dag.TRIGGER_RULES
        for total in range(5)
        for ok, failed, skipped in itertools.product(range(5), repeat=3)
        if ok + failed + skipped <= total
    ]
    with ledger.connect() as conn:
        got = conn.execute(
            sa.text(
                "SELECT orch_trigger_verdict(r, t, o, f, s) FROM unnest(CAST(:r AS text[]), CAST(:t AS int[]),"
                " CAST(:o AS int[]), CAST(:f AS int[]), CAST(:s AS int[])) WITH ORDINALITY AS x(r, t, o, f, s, n)"
                " ORDER BY n"
            ),
            {k: [c[i] for c in cases] for i, k in enumerate("rtofs")},
        ).scalars()
        db = list(got)
    py = [dag.verdict(dag.TriggerRule(r), t, o, f, s) for r, t, o, f, s in cases]
    assert db == [None if v is None else v.value for v in py]


# -- submit -------------------------------------------------------------------------------------


def test_submit_starts_roots_and_holds_children(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("fetch"), job("parse", "fetch"), job("index", "parse"))
    assert states(ledger, r.run_id) == {"fetch": "queued", "parse": "pending", "index": "pending"}
    assert run_state(ledger, r.run_id) == "running"
    work(ledger)
    assert states(ledger, r.run_id) == dict.fromkeys(("fetch", "parse", "index"), "succeeded")
    assert run_state(ledger, r.run_id) == "succeeded"
    with ledger.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT payload->>'state' FROM events WHERE kind = 'run.state' ORDER BY id")
        ).scalars()
        assert list(kinds) == ["running", "succeeded"]
        assert conn.execute(sa.text("SELECT state, finished FROM run_counters")).all() == [("succeeded", 1)]


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([job("a", "c"), job("b", "a"), job("c", "b")], "cycle"),
        ([job("a"), job("b", "nope")], "'nope', which is not a job of the run"),
        ([job("a"), job("a")], "duplicate job key 'a'"),
        ([job("a", rule="whenever")], "unknown trigger rule 'whenever'"),
        ([job("a", job_type="no.such.type")], "unknown job type"),
        ([JobSpec(T, "noop")], "has no key"),
        ([], "at least one job"),
    ],
)
def test_bad_runs_write_nothing(ledger: sa.Engine, principal: Principal, jobs: list[JobSpec], message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        control.submit_run(ledger, principal, RunSpec(T, "bad", jobs), control.NoDoorbell())
    assert count(ledger, "runs") == count(ledger, "jobs") == count(ledger, "run_jobs") == 0


def test_a_run_over_its_size_limit_is_refused(ledger: sa.Engine, principal: Principal) -> None:
    with pytest.raises(errors.InvalidInput, match="at most 3"):
        submit(ledger, principal, *[job(f"j{i}") for i in range(4)], max_jobs=3)
    assert count(ledger, "jobs") == 0


def test_idempotency_key_returns_the_run_or_conflicts(ledger: sa.Engine, principal: Principal) -> None:
    first = submit(ledger, principal, job("a"), job("b", "a"), idempotency_key="nightly-1")
    again = submit(ledger, principal, job("a"), job("b", "a"), idempotency_key="nightly-1")
    assert (again.run_id, again.jobs, again.created) == (first.run_id, first.jobs, False)
    with pytest.raises(errors.IdempotencyConflict):
        submit(ledger, principal, job("a"), job("b"), idempotency_key="nightly-1")
    assert count(ledger, "runs") == 1


def test_a_principal_sees_and_steers_only_its_tenants_runs(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"))
    other = Principal("other", frozenset(ALL_SCOPES), frozenset({"someone-else"}))
    with ledger.connect() as conn:
        with pytest.raises(errors.NotFound):
            queries.get_run(conn, other, r.run_id)
        assert queries.list_runs(conn, other) == []
    with pytest.raises(errors.NotFound):
        control.cancel_run(ledger, other, r.run_id, reason="not mine")
    with pytest.raises(errors.Forbidden):
        control.submit_run(ledger, other, RunSpec(T, "x", [job("a")]), control.NoDoorbell())
    reader = Principal("reader", frozenset({Scope.READ}), None)
    with pytest.raises(errors.Forbidden):
        control.cancel_run(ledger, reader, r.run_id, reason="read only")


# -- release ------------------------------------------------------------------------------


def test_two_parents_ending_at_once_release_their_child_exactly_once(ledger: sa.Engine, principal: Principal) -> None:
    for _ in range(15):
        r = submit(ledger, principal, job("p1"), job("p2"), job("child", "p1", "p2"))
        rows = {row["id"]: row for row in claim(ledger)}
        p1, p2 = rows[r.jobs["p1"]], rows[r.jobs["p2"]]
        barrier = threading.Barrier(2)

        def end(row: sa.RowMapping, barrier: threading.Barrier = barrier) -> None:
            with ledger.begin() as conn:
                barrier.wait()
                L.succeed_jobs(conn, [row["id"]], [row["lease_id"]], actor=WORKER)

        threads = [threading.Thread(target=end, args=(p,)) for p in (p1, p2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert history(ledger, r.jobs["child"]) == [("submit", "pending"), ("deps_met", "queued")]


def test_a_parent_ending_while_another_commits_is_counted(ledger: sa.Engine, principal: Principal) -> None:
    """The second finisher waits on the child's counts and adds to the first one's."""
    r = submit(ledger, principal, job("p1"), job("p2"), job("child", "p1", "p2"))
    rows = {row["id"]: row for row in claim(ledger)}
    p1, p2 = rows[r.jobs["p1"]], rows[r.jobs["p2"]]
    done = threading.Event()

    def second() -> None:
        time.sleep(0.2)
        with ledger.begin() as conn:
            L.succeed_jobs(conn, [p2["id"]], [p2["lease_id"]], actor=WORKER)
        done.set()

    t = threading.Thread(target=second)
    with ledger.begin() as conn:
        L.succeed_jobs(conn, [p1["id"]], [p1["lease_id"]], actor=WORKER)
        t.start()
        time.sleep(0.6)
        assert not done.is_set(), "the second finisher should wait for the first's lock on the child"
    t.join()
    assert states(ledger, r.run_id)["child"] == "queued"


def test_a_run_ended_by_two_finishers_at_once_sees_both(ledger: sa.Engine, principal: Principal) -> None:
    """The last two jobs of a run end in two transactions at once, a dead letter and a
    success: the one that ends the run waits for the other's lock on the run and judges it on
    what both committed (failed), not on the snapshot it took before the wait."""
    r = submit(ledger, principal, job("a"), job("b"))
    rows = {row["id"]: row for row in claim(ledger)}
    a, b = rows[r.jobs["a"]], rows[r.jobs["b"]]
    done = threading.Event()

    def second() -> None:
        with ledger.begin() as conn:
            L.succeed_jobs(conn, [b["id"]], [b["lease_id"]], actor=WORKER)
        done.set()

    t = threading.Thread(target=second)
    with ledger.begin() as conn:
        L.fail_final_jobs(conn, [a["id"]], [a["lease_id"]], ["unknown"], ["boom"], ["fatal"], actor=WORKER)
        t.start()
        time.sleep(0.6)
        assert not done.is_set(), "the second finisher should wait for the first's lock on the run"
    t.join()
    assert states(ledger, r.run_id) == {"a": "dead_lettered", "b": "succeeded"}
    assert run_state(ledger, r.run_id) == "failed"


def test_failures_and_skips_propagate_by_each_childs_rule(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(
        ledger,
        principal,
        job("fetch"),
        job("parse", "fetch"),
        job("cleanup", "parse", rule="all_done"),
        job("alert", "fetch", rule="one_failed"),
        job("report", "alert"),
        job("tolerant", "alert", rule="none_failed"),
        job("optional", "fetch", allow_failure=True),
    )
    work(ledger, fail={r.jobs["fetch"], r.jobs["optional"]})
    assert states(ledger, r.run_id) == {
        "fetch": "dead_lettered",
        "parse": "upstream_failed",
        "cleanup": "succeeded",
        "alert": "succeeded",
        "report": "succeeded",
        "tolerant": "succeeded",
        "optional": "upstream_failed",
    }
    # The final all_done job succeeded, yet the run failed: every job counts.
    assert run_state(ledger, r.run_id) == "failed"

    ok = submit(
        ledger,
        principal,
        job("a"),
        job("alert", "a", rule="one_failed"),
        job("after", "alert"),
        job("anyway", "alert", rule="none_failed"),
        name="skips",
    )
    work(ledger)
    assert states(ledger, ok.run_id) == {
        "a": "succeeded",
        "alert": "skipped",
        "after": "skipped",
        "anyway": "succeeded",
    }
    assert run_state(ledger, ok.run_id) == "succeeded"
    assert ("skip", "skipped") in history(ledger, ok.jobs["alert"])


def test_a_release_finds_its_rows_by_key_whatever_the_session_planned_first(
    ledger: sa.Engine, principal: Principal
) -> None:
    """orch_dag_advance v4 (docs/adr/0027): in a session whose first release was its biggest,
    so that the generic plans it keeps were costed after that call, every success finds
    its children and run by key, not by scanning the (here tiny) tables only the release
    reads. (The success statement itself may scan `jobs` on a table this small.)"""
    kids = [f"k{i}" for i in range(40)]
    r = submit(ledger, principal, job("root"), *(job(k, "root") for k in kids), job("join", *kids))
    # Scans counted for the transaction so far (pg_stat_xact_*): the difference across the
    # success is the success's own.
    scans = sa.text(
        "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables"
        " WHERE relname IN ('run_jobs', 'runs', 'dag_edges', 'dag_released')"
    )
    seen: list[int] = []
    with ledger.connect() as conn:
        for _ in range(len(kids) + 2):
            with conn.begin():
                rows = L.claim_and_start_jobs(conn, queue="default", limit=1, owner=WORKER, job_types=TYPES)
                assert len(rows) == 1
                before = conn.execute(scans).scalar_one()
                L.succeed_jobs(conn, [rows[0]["id"]], [rows[0]["lease_id"]], actor=WORKER)
                seen.append(int(conn.execute(scans).scalar_one() - before))
    assert run_state(ledger, r.run_id) == "succeeded"
    assert seen == [0] * len(seen)


def test_a_long_chain_fails_upstream_in_the_finishing_statement(ledger: sa.Engine, principal: Principal) -> None:
    keys = [f"s{i}" for i in range(300)]
    r = submit(ledger, principal, job(keys[0]), *[job(k, keys[i]) for i, k in enumerate(keys[1:])])
    [root] = claim(ledger)
    finish(ledger, [root], fail=True)
    got = states(ledger, r.run_id)
    assert got.pop("s0") == "dead_lettered"
    assert set(got.values()) == {"upstream_failed"}
    assert run_state(ledger, r.run_id) == "failed"


def test_results_are_stored_with_the_success_and_redacted_when_shown(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"), job("b", "a"))
    [a] = claim(ledger)
    finish(ledger, [a], result='{"rows": 3, "api_token": "hunter2"}')
    with ledger.connect() as conn:
        parents = ledger_runs.parents_of(conn, r.jobs["b"])
        shown = queries.get_job(conn, principal, r.jobs["a"])
    assert [(p["key"], p["result"]) for p in parents] == [("a", {"rows": 3, "api_token": "hunter2"})]
    assert shown["result"]["rows"] == 3 and shown["result"]["api_token"] != "hunter2"
    assert shown["run_key"] == "a"


# -- replay, cancel -------------------------------------------------------------------------------


def test_replay_reruns_the_failed_part_in_the_same_run(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("fetch"), job("parse", "fetch"), job("index", "parse"), job("side", "fetch"))
    work(ledger, fail={r.jobs["parse"]})
    assert states(ledger, r.run_id) == {
        "fetch": "succeeded",
        "parse": "dead_lettered",
        "index": "upstream_failed",
        "side": "succeeded",
    }
    assert run_state(ledger, r.run_id) == "failed"
    with pytest.raises(errors.ReasonRequired):
        control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), reason=None)

    plan = control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), dry_run=True, reason=None)
    assert (plan.to_run, plan.kept, plan.new_jobs) == (["parse", "index"], ["fetch", "side"], {})
    assert run_state(ledger, r.run_id) == "failed"

    plan = control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), reason="schema fixed", ticket="OPS-1")
    assert plan.attempt == 2 and set(plan.new_jobs) == {"parse", "index"}
    assert run_state(ledger, r.run_id) == "running"
    assert states(ledger, r.run_id) == {
        "fetch": "succeeded",
        "parse": "queued",
        "index": "pending",
        "side": "succeeded",
    }
    with ledger.connect() as conn:
        rows = {row["key"]: row for row in ledger_runs.run_job_rows(conn, r.run_id)}
        assert rows["parse"]["replay_of"] == r.jobs["parse"]
        assert rows["fetch"]["id"] == r.jobs["fetch"]  # kept, not re-run
        parents = {p["key"]: p["id"] for p in ledger_runs.parents_of(conn, plan.new_jobs["parse"])}
        assert parents == {"fetch": r.jobs["fetch"]}
        # The superseded jobs stay in the ledger, with their history.
        assert conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": r.jobs["parse"]}).scalar() == (
            "dead_lettered"
        )
    work(ledger)
    assert run_state(ledger, r.run_id) == "succeeded"
    with pytest.raises(errors.InvalidTransition):
        control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), reason="again")
    # A succeeded run is replayed only in part, by name: downstream succeeded jobs run again.
    plan = control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), from_keys=["parse"], reason="re-parse")
    assert plan.to_run == ["parse", "index"] and plan.attempt == 3
    work(ledger)
    assert run_state(ledger, r.run_id) == "succeeded"
    with pytest.raises(errors.InvalidInput, match="no job with key"):
        control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), from_keys=["nope"], reason="x")


def test_cancel_ends_waiting_jobs_and_asks_running_ones_to_stop(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"), job("b", "a"), job("c"))
    rows = {row["id"]: row for row in claim(ledger, limit=1)}
    assert set(rows) == {r.jobs["a"]}
    with pytest.raises(errors.ReasonRequired):
        control.cancel_run(ledger, principal, r.run_id, reason=" ")
    result = control.cancel_run(ledger, principal, r.run_id, reason="bad deploy")
    assert (result.canceled, result.cancel_requested, result.state) == (2, 1, "running")
    assert states(ledger, r.run_id) == {"a": "running", "b": "canceled", "c": "canceled"}
    a = rows[r.jobs["a"]]
    with ledger.begin() as conn:
        L.cancel_running_jobs(conn, [a["id"]], [a["lease_id"]], actor=WORKER)
    assert run_state(ledger, r.run_id) == "canceled"
    with pytest.raises(errors.InvalidTransition):
        control.cancel_run(ledger, principal, r.run_id, reason="twice")
    plan = control.replay_run(ledger, principal, r.run_id, control.NoDoorbell(), reason="redeploy")
    assert plan.to_run == ["a", "b", "c"] and plan.kept == []
    work(ledger)
    assert run_state(ledger, r.run_id) == "succeeded"


def test_run_jobs_are_replayed_with_their_run_not_alone(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"))
    work(ledger, fail={r.jobs["a"]})
    with pytest.raises(errors.InvalidTransition, match="orch runs replay"):
        control.retry(ledger, principal, r.jobs["a"], doorbell=control.NoDoorbell(), reason="x")
    with pytest.raises(errors.InvalidTransition, match="orch runs replay"):
        control.replay_many(ledger, principal, [r.jobs["a"]], doorbell=control.NoDoorbell(), reason="x")


# -- spawn and the scheduler's repair ---------------------------------------------------------------


def test_spawned_jobs_join_the_run_and_the_join_waits_for_them(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("index"), job("join", "index", job_type="test.sum_parents"))
    [index] = claim(ledger)
    specs = [JobSpec(T, "test.emit", {"value": i}, key=f"doc-{i}", after=("index",)) for i in range(3)]
    made, _ = control.spawn(ledger, job_id=index["id"], lease_id=index["lease_id"], specs=specs, actor=WORKER)
    assert sorted(made) == ["doc-0", "doc-1", "doc-2"]
    # A retried handler spawning the same keys gets the same jobs.
    again, _ = control.spawn(ledger, job_id=index["id"], lease_id=index["lease_id"], specs=specs, actor=WORKER)
    assert again == made
    with pytest.raises(errors.InvalidInput, match="already"):
        control.spawn(
            ledger, job_id=index["id"], lease_id=index["lease_id"], specs=[JobSpec(T, "noop", key="join")], actor=WORKER
        )
    with pytest.raises(errors.LeaseLost):
        control.spawn(ledger, job_id=index["id"], lease_id=uuid.uuid4(), specs=specs, actor=WORKER)
    finish(ledger, [index])
    assert states(ledger, r.run_id)["join"] == "pending"
    docs = claim(ledger)
    assert {d["id"] for d in docs} == set(made.values())
    finish(ledger, docs[:2])
    assert states(ledger, r.run_id)["join"] == "pending"
    finish(ledger, docs[2:])
    assert states(ledger, r.run_id)["join"] == "queued"
    with ledger.connect() as conn:
        parents = sorted(p["key"] for p in ledger_runs.parents_of(conn, r.jobs["join"]))
    assert parents == ["doc-0", "doc-1", "doc-2", "index"]
    work(ledger)
    assert run_state(ledger, r.run_id) == "succeeded"
    with ledger.connect() as conn:
        assert queries.get_run(conn, principal, r.run_id)["jobs_total"] == 5


def test_spawn_respects_the_runs_size_limit(ledger: sa.Engine, principal: Principal) -> None:
    submit(ledger, principal, job("index"), max_jobs=3)
    [index] = claim(ledger)
    specs = [JobSpec(T, "noop", key=f"d{i}") for i in range(3)]
    with pytest.raises(errors.InvalidInput, match="at most 3"):
        control.spawn(ledger, job_id=index["id"], lease_id=index["lease_id"], specs=specs, actor=WORKER)
    assert count(ledger, "jobs") == 1


def test_the_scheduler_rings_releases_nobody_rang(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"), job("b", "a"))
    [a] = claim(ledger)
    finish(ledger, [a])  # a worker that died before ringing: b is released but unrung
    with ledger.begin() as conn:
        assert ledger_runs.ring_stale_unrung(conn, grace_s=60, limit=10) == []
        conn.execute(sa.text("UPDATE dag_released SET at = now() - interval '5 minutes'"))
        assert ledger_runs.ring_stale_unrung(conn, grace_s=60, limit=10) == [(r.jobs["b"], "default")]
        assert ledger_runs.ring_stale_unrung(conn, grace_s=0, limit=10) == []


def test_show_has_the_critical_path_and_the_graph_exports(ledger: sa.Engine, principal: Principal) -> None:
    r = submit(ledger, principal, job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c"))
    work(ledger)
    with ledger.connect() as conn:
        run = queries.get_run(conn, principal, r.run_id)
        g = queries.run_graph(conn, principal, r.run_id)
    assert run["link"] == f"/Runs?run={r.run_id}"
    assert run["critical_path"]["keys"][0] == "a" and run["critical_path"]["keys"][-1] == "d"
    assert {j["key"]: j["parents"] for j in run["jobs"]} == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert sorted(g.edges()) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    assert g.nodes["d"]["generation"] == 2
    assert '"a" -> "b"' in queries.graph_dot(g)
    data = queries.graph_json(g)
    assert {n["id"] for n in data["nodes"]} == {"a", "b", "c", "d"} and len(data["edges"]) == 4
