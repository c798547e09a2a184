"""End to end: real `orch worker` and `orch scheduler` processes against real PostgreSQL and
Redis run jobs through their whole life: success, SDK reports, retries, Retry-After, dead
letters, cancellation and replay.

One worker pool (2 processes x 4 threads) and one scheduler serve the whole module (starting
processes is the slow part); every test starts from an empty ledger (`ledger` fixture).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from tests.conftest import Services, Stack, running_stack, wait_until

pytestmark = pytest.mark.slow

TENANT = "acme"
PROCESSES = 2
THREADS = 4


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(services: Services, engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logdir = tmp_path_factory.mktemp("lifecycle")
    with running_stack(services, logdir, processes=PROCESSES, threads=THREADS) as s:
        yield s


def submit(
    engine: sa.Engine,
    principal: Principal,
    job_type: str,
    payloads: Sequence[dict[str, Any]],
    *,
    doorbell: control.Doorbell,
    max_attempts: int | None = None,
) -> list[int]:
    specs = [control.JobSpec(TENANT, job_type, p, max_attempts=max_attempts) for p in payloads]
    return control.submit_many(engine, principal, specs, doorbell=doorbell).job_ids


def states(engine: sa.Engine, ids: Sequence[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state FROM jobs WHERE id = ANY(:ids)"), {"ids": list(ids)})
        return {int(r[0]): str(r[1]) for r in rows}


def job(engine: sa.Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        return dict(row)


def history(engine: sa.Engine, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT job_id, from_state, event, to_state, at, actor, reason, attempt FROM job_history"
                " WHERE job_id = ANY(:ids) ORDER BY job_id, id"
            ),
            {"ids": list(ids)},
        ).mappings()
        for r in rows:
            out[int(r["job_id"])].append(dict(r))
    return out


def events(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event"] for r in rows]


TERMINAL = {"succeeded", "dead_lettered", "canceled", "upstream_failed"}


def wait_terminal(engine: sa.Engine, stack: Stack, ids: Sequence[int], *, timeout: float) -> dict[int, str]:
    def done() -> dict[int, str] | None:
        stack.check_alive()
        got = states(engine, ids)
        return got if len(got) == len(ids) and set(got.values()) <= TERMINAL else None

    try:
        final: dict[int, str] = wait_until(done, timeout=timeout, interval=0.1, what=f"{len(ids)} job(s) to finish")
        return final
    except pytest.fail.Exception:
        counts: dict[str, int] = {}
        for s in states(engine, ids).values():
            counts[s] = counts.get(s, 0) + 1
        pytest.fail(f"jobs did not finish in {timeout}s: {counts}\n{stack.logs()}")


# -- tests --------------------------------------------------------------------------------


def test_noop_jobs_run_end_to_end_with_exact_history(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    ids = submit(ledger, principal, "noop", [{"i": i} for i in range(200)], doorbell=stack.doorbell)
    assert len(set(ids)) == 200
    final = wait_terminal(ledger, stack, ids, timeout=60)
    assert set(final.values()) == {"succeeded"}, final

    expected = [
        (None, "submit", "queued"),
        ("queued", "claim", "leased"),
        ("leased", "ack", "running"),
        ("running", "succeed", "succeeded"),
    ]
    hist = history(ledger, ids)
    bad = {
        i: [(r["from_state"], r["event"], r["to_state"]) for r in rows]
        for i, rows in hist.items()
        if [(r["from_state"], r["event"], r["to_state"]) for r in rows] != expected
    }
    assert not bad, f"{len(bad)} job(s) with another history, e.g. {next(iter(bad.items()))}"
    with ledger.connect() as conn:
        attempts = conn.execute(
            sa.text("SELECT attempt, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY attempt"), {"ids": ids}
        ).all()
    assert [tuple(a) for a in attempts] == [(1, 200)]


def test_sdk_progress_log_and_artifact(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    text = "advisory feed page 1 \u2603"
    [job_id] = submit(ledger, principal, "test.report", [{"text": text}], doorbell=stack.doorbell)
    assert wait_terminal(ledger, stack, [job_id], timeout=30) == {job_id: "succeeded"}

    row = job(ledger, job_id)
    assert row["progress"] == pytest.approx(1.0)
    with ledger.connect() as conn:
        logs = conn.execute(
            sa.text("SELECT attempt, level, message FROM job_logs WHERE job_id = :id"), {"id": job_id}
        ).all()
        arts = (
            conn.execute(
                sa.text("SELECT name, media_type, sha256, size_bytes, data, attempt FROM artifacts WHERE job_id = :id"),
                {"id": job_id},
            )
            .mappings()
            .all()
        )
    assert [tuple(r) for r in logs] == [(1, "info", f"attempt 1 of tenant {TENANT}")]
    assert len(arts) == 1
    art = arts[0]
    data = text.encode()
    assert art["name"] == "result.txt"
    assert art["media_type"] == "text/plain"
    assert art["sha256"] == hashlib.sha256(data).hexdigest()
    assert bytes(art["data"]) == data
    assert art["size_bytes"] == len(data)
    assert art["attempt"] == 1


def test_retries_and_dead_letters(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    bell = stack.doorbell
    [retryable] = submit(
        ledger,
        principal,
        "fail",
        [{"retryable": True, "error_class": "http_5xx", "message": "upstream 503"}],
        doorbell=bell,
        max_attempts=3,
    )
    [fatal] = submit(
        ledger,
        principal,
        "fail",
        [{"retryable": False, "error_class": "schema_mismatch", "message": "bad shape"}],
        doorbell=bell,
    )
    flaky = submit(
        ledger, principal, "flaky", [{"fail_ratio": 0.5, "i": i} for i in range(30)], doorbell=bell, max_attempts=10
    )

    final = wait_terminal(ledger, stack, [retryable, fatal], timeout=30)
    assert final == {retryable: "dead_lettered", fatal: "dead_lettered"}

    hist = history(ledger, [retryable, fatal])
    ev = events(hist[retryable])
    assert ev.count("ack") == 3, ev
    assert ev.count("fail_retryable") == 2, ev
    assert ev.count("fail_final") == 1, ev
    assert ev.count("due") == 2, ev
    assert ev[-1] == "fail_final", ev
    assert "exhausted" in (hist[retryable][-1]["reason"] or ""), hist[retryable][-1]
    r = job(ledger, retryable)
    assert (r["attempt"], r["max_attempts"], r["error_class"]) == (3, 3, "http_5xx")
    assert r["last_error"] == "upstream 503"

    assert events(hist[fatal]) == ["submit", "claim", "ack", "fail_final"]
    f = job(ledger, fatal)
    assert (f["attempt"], f["error_class"], f["last_error"]) == (1, "schema_mismatch", "bad shape")

    # flaky: each attempt fails with probability 0.5; with 10 attempts nearly all succeed.
    # Wait for most (the tail of an unlucky job can be long), then check what we have.
    def most_succeeded() -> int:
        stack.check_alive()
        n = sum(1 for s in states(ledger, flaky).values() if s == "succeeded")
        return n if n >= 25 else 0

    try:
        wait_until(most_succeeded, timeout=40, interval=0.2, what="25 of 30 flaky jobs to succeed")
    except pytest.fail.Exception:
        pytest.fail(f"flaky jobs: {states(ledger, flaky)}\n{stack.logs()}")
    fh = history(ledger, flaky)
    retried = 0
    for job_id, rows in fh.items():
        ev = events(rows)
        if ev[-1] == "succeed":
            assert ev.count("succeed") == 1 and ev.count("ack") == ev.count("fail_retryable") + 1, (job_id, ev)
        elif ev[-1] == "fail_final":  # ten failures in a row: possible, if unlikely
            assert (ev.count("ack"), ev.count("fail_retryable")) == (10, 9), (job_id, ev)
        retried += "fail_retryable" in ev
    assert retried > 0, "with fail_ratio 0.5 some of 30 jobs must have been retried"


def test_retry_after_is_honoured(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    [job_id] = submit(ledger, principal, "test.retry_after", [{"retry_after": 1.5}], doorbell=stack.doorbell)
    assert wait_terminal(ledger, stack, [job_id], timeout=30) == {job_id: "succeeded"}
    rows = history(ledger, [job_id])[job_id]
    assert events(rows) == ["submit", "claim", "ack", "fail_retryable", "due", "claim", "ack", "succeed"], rows
    failed_at = rows[3]["at"]
    assert rows[3]["reason"].startswith("http_429"), rows[3]
    reclaimed_at = rows[5]["at"]
    gap = (reclaimed_at - failed_at).total_seconds()
    assert gap >= 1.5, f"re-claimed {gap:.3f}s after the failure, Retry-After was 1.5s"
    assert gap < 10, f"re-claimed only {gap:.3f}s after the failure"
    assert job(ledger, job_id)["attempt"] == 2


def test_cancel_running_job(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    [job_id] = submit(ledger, principal, "sleep", [{"seconds": 30}], doorbell=stack.doorbell)
    wait_until(lambda: states(ledger, [job_id])[job_id] == "running", timeout=20, what="the sleep job to run")
    assert control.cancel(ledger, principal, job_id, reason="operator changed their mind") == "cancel_requested"
    assert job(ledger, job_id)["cancel_requested"] is True
    # `sleep` heartbeats every 10 s and the heartbeat carries the flag: allow one period.
    try:
        wait_until(
            lambda: states(ledger, [job_id])[job_id] == "canceled",
            timeout=15,
            interval=0.1,
            what="the running job to stop",
        )
    except pytest.fail.Exception:
        pytest.fail(f"job {job_id} is {states(ledger, [job_id])[job_id]}\n{stack.logs()}")
    rows = history(ledger, [job_id])[job_id]
    assert events(rows) == ["submit", "claim", "ack", "cancel"], rows
    assert (rows[-1]["from_state"], rows[-1]["to_state"]) == ("running", "canceled")
    started = rows[2]["at"]
    assert (rows[-1]["at"] - started).total_seconds() < 20, "canceled long before the 30 s sleep would end"
    assert job(ledger, job_id)["finished_at"] is not None


def test_cancel_honoured_by_a_handler_that_returns(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    """test.short_lease heartbeats every 0.5 s and *returns* when should_cancel() is true."""
    [job_id] = submit(ledger, principal, "test.short_lease", [{"seconds": 30}], doorbell=stack.doorbell)
    wait_until(lambda: states(ledger, [job_id])[job_id] == "running", timeout=20, what="the job to run")
    assert control.cancel(ledger, principal, job_id, reason="stop it") == "cancel_requested"
    final = wait_terminal(ledger, stack, [job_id], timeout=10)
    assert final == {job_id: "canceled"}, events(history(ledger, [job_id])[job_id])


def test_replay_of_dead_lettered_job(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    [dead] = submit(
        ledger, principal, "fail", [{"retryable": False, "error_class": "parse_error"}], doorbell=stack.doorbell
    )
    assert wait_terminal(ledger, stack, [dead], timeout=30) == {dead: "dead_lettered"}

    new_id = control.retry(ledger, principal, dead, doorbell=stack.doorbell, reason="fixed upstream")
    assert new_id != dead
    new = job(ledger, new_id)
    assert new["replay_of"] == dead
    assert new["payload"] == job(ledger, dead)["payload"]
    # The replay runs (and, the handler being deterministic, dead-letters again) ...
    assert wait_terminal(ledger, stack, [new_id], timeout=30) == {new_id: "dead_lettered"}
    assert events(history(ledger, [new_id])[new_id]) == ["submit", "claim", "ack", "fail_final"]
    # ... and the original's history is untouched.
    assert events(history(ledger, [dead])[dead]) == ["submit", "claim", "ack", "fail_final"]
    assert states(ledger, [dead]) == {dead: "dead_lettered"}


def test_replay_runs_to_success(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    """A canceled job replayed is a new job that runs to success (a handler that can succeed)."""
    [job_id] = submit(ledger, principal, "noop", [{"x": 1}], doorbell=control.NoDoorbell())
    # Not rung: the scheduler re-rings it only after a grace of seconds, so it is still queued.
    assert control.cancel(ledger, principal, job_id, reason="not now") == "canceled"
    assert events(history(ledger, [job_id])[job_id]) == ["submit", "cancel"]
    new_id = control.retry(ledger, principal, job_id, doorbell=stack.doorbell, reason="replay")
    assert new_id != job_id
    assert job(ledger, new_id)["replay_of"] == job_id
    assert wait_terminal(ledger, stack, [new_id], timeout=30) == {new_id: "succeeded"}
    assert states(ledger, [job_id]) == {job_id: "canceled"}
