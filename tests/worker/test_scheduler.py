"""The scheduler as real processes: advisory-lock leader election among replicas, fail-over
when the leader is killed, and ringing jobs whose submitter rang no doorbell."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from tests.conftest import Services, orch_env, start_orch, stop_process, wait_until
from worker.runtime.scheduler import LEADER_LOCK_KEY

pytestmark = pytest.mark.slow

LEADER_LINE = "is the scheduler leader"
Launch = Callable[[list[str], dict[str, str], str], tuple[subprocess.Popen[bytes], Path]]
TERMINAL = {"succeeded", "dead_lettered", "canceled", "upstream_failed"}


def tail(path: Path, lines: int = 120) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log {path}: {exc})"
    return f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    started: list[subprocess.Popen[bytes]] = []

    def _launch(args: list[str], env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        proc = start_orch(args, env, log)
        started.append(proc)
        return proc, log

    yield _launch
    for proc in started:
        stop_process(proc)


def lock_holders(engine: sa.Engine) -> list[dict[str, Any]]:
    """Sessions of this database holding the scheduler's advisory lock, with their client ports."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT l.pid, a.client_port, a.application_name FROM pg_locks l"
                " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :k AND l.objsubid = 1"
                "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"k": LEADER_LOCK_KEY},
        ).mappings()
        return [dict(r) for r in rows]


def client_ports(pid: int) -> set[int]:
    try:
        return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.laddr}
    except psutil.Error:
        return set()


def holder_is(engine: sa.Engine, proc: subprocess.Popen[bytes]) -> bool:
    holders = lock_holders(engine)
    if len(holders) != 1:
        return False
    port = holders[0]["client_port"]
    if port is None or port < 0:  # a Unix socket: cannot tie the session to a process
        return True
    return port in client_ports(proc.pid)


def states(engine: sa.Engine, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state FROM jobs WHERE id = ANY(:ids)"), {"ids": ids})
        return {int(r[0]): str(r[1]) for r in rows}


def all_succeeded(engine: sa.Engine, ids: list[int]) -> bool:
    got = states(engine, ids)
    return len(got) == len(ids) and set(got.values()) == {"succeeded"}


def _events_waiting(ledger: sa.Engine) -> bool:
    from core.ledger import events

    with ledger.connect() as conn:
        return events.waiting(conn)


def test_one_leader_failover_and_rerung_doorbells(
    services: Services,
    ledger: sa.Engine,
    principal: Principal,
    namespace: str,
    launch: Launch,
) -> None:
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S="2")
    worker, worker_log = launch(["worker", "--processes", "1", "--threads", "4"], env, "worker")
    s1, log1 = launch(["scheduler"], env, "scheduler-1")
    s2, log2 = launch(["scheduler"], env, "scheduler-2")
    scheds = [(s1, log1), (s2, log2)]

    def logs() -> str:
        return "\n".join(tail(p) for p in (log1, log2, worker_log))

    def settled() -> bool:
        texts = [read(log1), read(log2)]
        return sum(LEADER_LINE in t for t in texts) == 1 and sum("standing by" in t for t in texts) == 1

    try:
        wait_until(settled, timeout=45, what="one leader and one standby")
    except pytest.fail.Exception:
        pytest.fail(f"no single leader\n{logs()}")
    assert all(p.poll() is None for p, _ in scheds), logs()
    (leader, leader_log), (standby, standby_log) = sorted(scheds, key=lambda s: LEADER_LINE not in read(s[1]))
    assert f":{leader.pid} {LEADER_LINE}" in read(leader_log), logs()  # the actor names the process
    holders = lock_holders(ledger)
    assert len(holders) == 1, f"advisory lock holders: {holders}\n{logs()}"
    assert holder_is(ledger, leader), f"the lock is held by {holders}, not by the leader's session\n{logs()}"

    # Jobs submitted with no doorbell are rung by the leader (after its grace) and run.
    wait_until(
        lambda: " ready: queues=" in read(worker_log) or worker.poll() is not None,
        timeout=45,
        what="the worker to be ready",
    )
    assert worker.poll() is None, logs()
    before = control.submit_many(
        ledger, principal, [control.JobSpec("acme", "noop", {"i": i}) for i in range(10)], doorbell=control.NoDoorbell()
    ).job_ids
    try:
        wait_until(lambda: all_succeeded(ledger, before), timeout=30, what="jobs rung by the first leader")
    except pytest.fail.Exception:
        pytest.fail(f"{states(ledger, before)}\n{logs()}")

    # Kill the leader: its session ends, the standby takes the lock within a poll or two.
    leader.send_signal(signal.SIGKILL)
    leader.wait(10)
    killed_at = time.monotonic()
    try:
        wait_until(
            lambda: LEADER_LINE in read(standby_log) and holder_is(ledger, standby),
            timeout=15,
            interval=0.05,
            what="the standby to take over",
        )
    except pytest.fail.Exception:
        pytest.fail(f"no takeover; lock holders {lock_holders(ledger)}\n{logs()}")
    takeover_s = time.monotonic() - killed_at
    assert takeover_s < 6.0, f"takeover took {takeover_s:.1f}s"
    assert len(lock_holders(ledger)) == 1

    after = control.submit_many(
        ledger, principal, [control.JobSpec("acme", "noop", {"j": i}) for i in range(10)], doorbell=control.NoDoorbell()
    ).job_ids
    try:
        wait_until(lambda: all_succeeded(ledger, after), timeout=30, what="jobs rung by the new leader")
    except pytest.fail.Exception:
        pytest.fail(f"{states(ledger, after)}\n{logs()}")
    with ledger.connect() as conn:
        succeeds = conn.execute(
            sa.text("SELECT count(*) FROM job_history WHERE job_id = ANY(:ids) AND event = 'succeed'"),
            {"ids": before + after},
        ).scalar_one()
    assert succeeds == 20
    # The new leader's relay numbered every outbox event, the old leader's too: one gap-free
    # sequence across the takeover.
    wait_until(lambda: not _events_waiting(ledger), timeout=10, what="the relay to number the events")
    with ledger.connect() as conn:
        ranges = [(r[0], r[1]) for r in conn.execute(sa.text("SELECT seq - n + 1, seq FROM events ORDER BY seq"))]
    # A row of n events (a job batch) holds the numbers seq - n + 1 .. seq.
    assert len(ranges) >= 2 and all(first == prev + 1 for (_, prev), (first, _) in itertools.pairwise(ranges))
    assert standby.poll() is None and worker.poll() is None, logs()
    assert stop_process(standby) == 0, logs()
    assert stop_process(worker) == 0, logs()


def test_leader_that_loses_its_session_steps_down(
    services: Services, ledger: sa.Engine, namespace: str, launch: Launch
) -> None:
    """The leader's lock session is cut (as by a network partition or an admin's
    pg_terminate_backend) while its process lives: the standby takes over and the old leader
    goes back to standing by, so there is again exactly one leader."""
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2")
    s1, log1 = launch(["scheduler"], env, "scheduler-1")
    s2, log2 = launch(["scheduler"], env, "scheduler-2")

    def logs() -> str:
        return "\n".join(tail(p) for p in (log1, log2))

    try:
        wait_until(
            lambda: (
                sum(LEADER_LINE in read(p) for p in (log1, log2)) == 1
                and sum("standing by" in read(p) for p in (log1, log2)) == 1
            ),
            timeout=45,
            what="one leader and one standby",
        )
    except pytest.fail.Exception:
        pytest.fail(f"no single leader\n{logs()}")
    (leader, leader_log), (standby, standby_log) = sorted(
        [(s1, log1), (s2, log2)], key=lambda s: LEADER_LINE not in read(s[1])
    )
    [holder] = lock_holders(ledger)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": holder["pid"]}).scalar_one()
    try:
        wait_until(
            lambda: LEADER_LINE in read(standby_log) and holder_is(ledger, standby),
            timeout=15,
            what="the standby to take over",
        )
        # The old leader notices on its next lock check (at most ~5 s) and stands by again.
        wait_until(
            lambda: (
                read(leader_log).count("standing by") >= 1
                and read(leader_log).rfind("standing by") > read(leader_log).rfind(LEADER_LINE)
            ),
            timeout=15,
            what="the old leader to stand by",
        )
    except pytest.fail.Exception:
        pytest.fail(f"lock holders {lock_holders(ledger)}\n{logs()}")
    assert holder_is(ledger, standby), lock_holders(ledger)
    assert leader.poll() is None and standby.poll() is None, logs()
