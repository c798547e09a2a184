"""DAG runs with real `orch worker` and `orch scheduler` processes: a whole run passing results
downstream, a failing middle job and its replay to success, fan-out with a join, and a canceled
run whose running job stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.control import JobSpec, RunSpec
from core.domain.auth import Principal
from tests.conftest import Services, Stack, running_stack, wait_until

pytestmark = pytest.mark.slow

T = "dag-workers"


@pytest.fixture(scope="module")
def stack(services: Services, engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        services,
        tmp_path_factory.mktemp("dag-workers"),
        processes=2,
        threads=4,
        ORCH_HANDLER_MODULES="tests.job_handlers",
    ) as s:
        yield s


def job(key: str, job_type: str, *after: str, **kw: Any) -> JobSpec:
    return JobSpec(T, job_type, kw.pop("payload", {}), key=key, after=after, **kw)


def run(engine: sa.Engine, principal: Principal, stack: Stack, *jobs: JobSpec) -> control.RunResult:
    return control.submit_run(engine, principal, RunSpec(T, "pipeline", list(jobs)), stack.doorbell)


def wait_run(engine: sa.Engine, principal: Principal, stack: Stack, run_id: int, state: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        stack.check_alive()
        with engine.connect() as conn:
            r = queries.get_run(conn, principal, run_id)
        return r if r["state"] != "running" else None

    try:
        got = wait_until(ended, timeout=60, what=f"run {run_id} to end")
    except pytest.fail.Exception:
        with engine.connect() as conn:
            r = queries.get_run(conn, principal, run_id)
        pytest.fail(f"run {run_id} still running: {r['counts']}\n{stack.logs()}")
    assert got["state"] == state, f"{got['state']}: {[(j['key'], j['state'], j['last_error']) for j in got['jobs']]}"
    return got


def result(engine: sa.Engine, principal: Principal, job_id: int) -> Any:
    with engine.connect() as conn:
        return queries.get_job(conn, principal, job_id)["result"]


def test_a_run_passes_results_downstream(ledger: sa.Engine, principal: Principal, stack: Stack) -> None:
    r = run(
        ledger,
        principal,
        stack,
        job("a", "test.emit", payload={"value": 1}),
        job("b", "test.emit", payload={"value": 2}),
        job("sum", "test.sum_parents", "a", "b"),
    )
    done = wait_run(ledger, principal, stack, r.run_id, "succeeded")
    assert {j["key"]: j["state"] for j in done["jobs"]} == dict.fromkeys(("a", "b", "sum"), "succeeded")
    assert result(ledger, principal, r.jobs["sum"]) == {"value": 3, "from": ["a", "b"]}


def test_a_failing_middle_job_fails_the_run_and_a_replay_succeeds(
    ledger: sa.Engine, principal: Principal, stack: Stack, tmp_path: Path
) -> None:
    flag = tmp_path / "schema-fixed"
    r = run(
        ledger,
        principal,
        stack,
        job("fetch", "test.emit", payload={"value": 5}),
        job("parse", "test.fail_unless_file", "fetch", payload={"flag": str(flag), "value": 7}),
        job("index", "test.sum_parents", "parse"),
        job("audit", "noop", "fetch"),
    )
    failed = wait_run(ledger, principal, stack, r.run_id, "failed")
    assert {j["key"]: j["state"] for j in failed["jobs"]} == {
        "fetch": "succeeded",
        "parse": "dead_lettered",
        "index": "upstream_failed",
        "audit": "succeeded",
    }
    flag.write_text("yes")
    plan = control.replay_run(ledger, principal, r.run_id, stack.doorbell, reason="schema fixed")
    assert plan.to_run == ["parse", "index"] and plan.kept == ["fetch", "audit"]
    done = wait_run(ledger, principal, stack, r.run_id, "succeeded")
    assert done["attempt"] == 2
    by_key = {j["key"]: j for j in done["jobs"]}
    assert by_key["fetch"]["id"] == r.jobs["fetch"] and by_key["parse"]["replay_of"] == r.jobs["parse"]
    assert result(ledger, principal, by_key["index"]["id"]) == {"value": 7, "from": ["parse"]}


def test_fan_out_and_a_join(ledger: sa.Engine, principal: Principal, stack: Stack) -> None:
    r = run(
        ledger,
        principal,
        stack,
        job("split", "test.fan_out", payload={"n": 40}),
        job("join", "test.sum_parents", "split"),
    )
    done = wait_run(ledger, principal, stack, r.run_id, "succeeded")
    assert done["jobs_total"] == 42
    joined = result(ledger, principal, r.jobs["join"])
    assert joined["value"] == sum(range(40))
    assert joined["from"] == sorted(["split", *[f"part-{i}" for i in range(40)]])


def test_canceling_a_run_stops_its_running_job(ledger: sa.Engine, principal: Principal, stack: Stack) -> None:
    r = run(
        ledger,
        principal,
        stack,
        job("slow", "sleep", payload={"seconds": 30}),
        job("after", "noop", "slow"),
    )

    def running() -> bool:
        with ledger.connect() as conn:
            return queries.get_job(conn, principal, r.jobs["slow"])["state"] == "running"

    wait_until(running, timeout=30, what="the slow job to run")
    result_ = control.cancel_run(ledger, principal, r.run_id, reason="wrong input")
    assert (result_.canceled, result_.cancel_requested) == (1, 1)
    done = wait_run(ledger, principal, stack, r.run_id, "canceled")
    assert {j["key"]: j["state"] for j in done["jobs"]} == {"slow": "canceled", "after": "canceled"}
