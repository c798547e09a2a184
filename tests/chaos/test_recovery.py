"""Chaos: kill -9 a worker process mid-run, lose every doorbell in Redis mid-run, stop a pool
gracefully. Then count: every job finished, none lost, none completed twice."""

from __future__ import annotations

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
from worker.runtime import broker as broker_mod

pytestmark = pytest.mark.slow

TENANT = "acme"
Launch = Callable[[list[str], dict[str, str], str], tuple[subprocess.Popen[bytes], Path]]


# -- helpers ------------------------------------------------------------------------------


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 150) -> str:
    return f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(read(path).splitlines()[-lines:])


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


def worker_children(supervisor_pid: int) -> list[psutil.Process]:
    """The supervisor's worker processes (multiprocessing spawn children, not its resource tracker)."""
    out = []
    try:
        children = psutil.Process(supervisor_pid).children()
    except psutil.Error:
        return []
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline and child.status() != psutil.STATUS_ZOMBIE:
            out.append(child)
    return out


def states(engine: sa.Engine, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state FROM jobs WHERE id = ANY(:ids)"), {"ids": ids})
        return {int(r[0]): str(r[1]) for r in rows}


def count_states(engine: sa.Engine, ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states(engine, ids).values():
        counts[s] = counts.get(s, 0) + 1
    return counts


def event_counts(engine: sa.Engine, ids: list[int], event: str) -> dict[int, int]:
    """Per job, how many history rows of `event` it has (0 included)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT j.id, count(h.id) FROM jobs j"
                " LEFT JOIN job_history h ON h.job_id = j.id AND h.event = :event"
                " WHERE j.id = ANY(:ids) GROUP BY j.id"
            ),
            {"ids": ids, "event": event},
        )
        return {int(r[0]): int(r[1]) for r in rows}


def redis_state(broker: Any, namespace: str, queue: str = "default") -> str:
    """What the broker holds for `queue`: doorbells waiting, not yet acknowledged (.msgs),
    counted as outstanding by the scheduler, and fetched-but-unacked per consumer."""
    c = broker.client
    try:
        acks = {k.decode(): c.scard(k) for k in c.scan_iter(f"{namespace}:__acks__.*")}
        return (
            f"redis: {c.llen(f'{namespace}:{queue}')} waiting, {c.hlen(f'{namespace}:{queue}.msgs')} unacked, "
            f"{broker.outstanding(queue)} outstanding; unacked per consumer {acks}"
        )
    except Exception as exc:  # diagnostics only
        return f"redis: state unavailable ({exc})"


def wait_all_succeeded(engine: sa.Engine, ids: list[int], *, timeout: float, logs: Callable[[], str]) -> None:
    def done() -> bool:
        c = count_states(engine, ids)
        return c.get("succeeded", 0) == len(ids)

    try:
        wait_until(done, timeout=timeout, interval=0.1, what=f"{len(ids)} jobs to succeed")
    except pytest.fail.Exception:
        pytest.fail(f"not every job succeeded in {timeout}s: {count_states(engine, ids)}\n{logs()}")


def submit(
    engine: sa.Engine, principal: Principal, job_type: str, payloads: list[dict[str, Any]], doorbell: control.Doorbell
) -> list[int]:
    specs = [control.JobSpec(TENANT, job_type, p) for p in payloads]
    return control.submit_many(engine, principal, specs, doorbell=doorbell).job_ids


def wait_ready(log: Path, proc: subprocess.Popen[bytes], processes: int) -> None:
    wait_until(
        lambda: read(log).count(" ready: queues=") >= processes or proc.poll() is not None,
        timeout=60,
        what="the worker processes to be ready",
    )
    assert proc.poll() is None, f"worker exited with {proc.returncode}\n{tail(log)}"


# -- tests --------------------------------------------------------------------------------


def test_killed_worker_process_loses_no_job(
    services: Services, ledger: sa.Engine, principal: Principal, namespace: str, broker: Any, launch: Launch
) -> None:
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S="2")
    sup, sup_log = launch(["worker", "--processes", "2", "--threads", "8"], env, "worker")
    sched, sched_log = launch(["scheduler"], env, "scheduler")

    def logs() -> str:
        return redis_state(broker, namespace) + "\n" + tail(sup_log) + "\n" + tail(sched_log)

    wait_ready(sup_log, sup, 2)
    before = worker_children(sup.pid)
    assert len(before) == 2, f"worker children: {before}\n{logs()}"

    ids = submit(
        ledger,
        principal,
        "test.short_lease",
        [{"seconds": 1.5, "i": i} for i in range(40)],
        broker_mod.RedisDoorbell(broker),
    )

    # Wait until the victim runs jobs, then kill -9 it (lease owners are host:pid:wN).
    victim = before[0]
    marker = f":{victim.pid}:"

    def victim_jobs() -> list[int]:
        with ledger.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id FROM jobs WHERE id = ANY(:ids) AND state = 'running' AND lease_owner LIKE :m"),
                {"ids": ids, "m": f"%{marker}%"},
            )
            return [int(r[0]) for r in rows]

    wait_until(victim_jobs, timeout=30, what="the victim process to run jobs")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    held = victim_jobs()  # running, and their owner is dead: only the reaper can free them
    assert held, "the victim finished all its jobs before it was killed"

    # The supervisor replaces the dead process; the scheduler reaps its jobs once their
    # 2 s leases run out, and they run again elsewhere. Doorbells the dead process had
    # prefetched stop counting as outstanding once its consumer's Redis heartbeat is stale
    # (OrchRedisBroker.outstanding, 10 s), and the scheduler replaces them.
    wait_all_succeeded(ledger, ids, timeout=60, logs=logs)
    succeeds = event_counts(ledger, ids, "succeed")
    assert succeeds == {i: 1 for i in ids}, {i: n for i, n in succeeds.items() if n != 1}
    expired = event_counts(ledger, held, "lease_expired")
    assert all(expired[i] == 1 for i in held), f"jobs held by the killed process: {expired}\n{logs()}"
    with ledger.connect() as conn:
        reaped = conn.execute(
            sa.text(
                "SELECT from_state, to_state, actor FROM job_history"
                " WHERE job_id = ANY(:ids) AND event = 'lease_expired'"
            ),
            {"ids": held},
        ).all()
    assert {(r[0], r[1]) for r in reaped} == {("running", "retrying")}
    assert all(r[2].startswith("scheduler:") for r in reaped)

    try:
        wait_until(lambda: len(worker_children(sup.pid)) == 2, timeout=20, what="two worker processes again")
    except pytest.fail.Exception:
        pytest.fail(f"children: {worker_children(sup.pid)}\n{logs()}")
    after = {p.pid for p in worker_children(sup.pid)}
    assert victim.pid not in after and before[1].pid in after, (before, after)
    assert "restarting" in read(sup_log), logs()
    assert f"(pid {victim.pid}) died (signal 9); restarting" in read(sup_log), logs()
    assert sup.poll() is None and sched.poll() is None, logs()
    assert stop_process(sup) == 0, logs()


def test_lost_doorbells_are_rerung(
    services: Services, ledger: sa.Engine, principal: Principal, namespace: str, broker: Any, launch: Launch
) -> None:
    """Doorbells are wake-ups (ADR 0016): a thread that is draining its queue goes on without
    them, so the loss that matters is the one no draining thread covers: every doorbell gone
    before a worker took one. Only the scheduler's repair can start the jobs then."""
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S="2")
    sched, sched_log = launch(["scheduler"], env, "scheduler")
    wait_until(
        lambda: "is the scheduler leader" in read(sched_log) or sched.poll() is not None,
        timeout=60,
        what="the scheduler to lead",
    )
    ids = submit(
        ledger, principal, "sleep", [{"seconds": 0.01, "i": i} for i in range(300)], broker_mod.RedisDoorbell(broker)
    )
    # Redis restarts without persistence: every key of the namespace is gone.
    keys = broker.client.keys(namespace + ":*")
    assert keys, "no doorbells in Redis?"
    broker.client.delete(*keys)
    assert broker.outstanding("default") == 0
    sup, sup_log = launch(["worker", "--processes", "1", "--threads", "2"], env, "worker")

    def logs() -> str:
        return redis_state(broker, namespace) + "\n" + tail(sup_log) + "\n" + tail(sched_log)

    wait_ready(sup_log, sup, 1)
    wait_all_succeeded(ledger, ids, timeout=60, logs=logs)
    succeeds = event_counts(ledger, ids, "succeed")
    assert succeeds == {i: 1 for i in ids}, {i: n for i, n in succeeds.items() if n != 1}
    claims = event_counts(ledger, ids, "claim")
    assert claims == {i: 1 for i in ids}, {i: n for i, n in claims.items() if n != 1}
    assert "re-rang" in read(sched_log), logs()
    assert sup.poll() is None and sched.poll() is None, logs()


def test_sigterm_stops_the_pool_within_its_grace(
    services: Services, ledger: sa.Engine, principal: Principal, namespace: str, broker: Any, launch: Launch
) -> None:
    grace = 3.0
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S=str(grace))
    sup, sup_log = launch(["worker", "--processes", "2", "--threads", "2"], env, "worker")
    wait_ready(sup_log, sup, 2)
    children = worker_children(sup.pid)
    assert len(children) == 2

    [short, long] = submit(
        ledger, principal, "sleep", [{"seconds": 1.5}, {"seconds": 60}], broker_mod.RedisDoorbell(broker)
    )
    wait_until(lambda: set(states(ledger, [short, long]).values()) == {"running"}, timeout=30, what="both jobs to run")

    sup.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = sup.wait(grace + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the pool did not stop within {grace + 10}s of SIGTERM\n{tail(sup_log)}")
    took = time.monotonic() - started
    assert code == 0, f"exit code {code}\n{tail(sup_log)}"
    # The grace, plus the worker's 1 s stop poll and process exit.
    assert took < grace + 3.0, f"stopping took {took:.1f}s with a grace of {grace}s\n{tail(sup_log)}"
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, f"worker {child.pid} lingers"

    # The short job finished within the grace; the long one's lease was given up for the reaper.
    assert states(ledger, [short, long]) == {short: "succeeded", long: "running"}, tail(sup_log)
    with ledger.connect() as conn:
        released = conn.execute(
            sa.text("SELECT lease_expires_at <= now() FROM jobs WHERE id = :id"), {"id": long}
        ).scalar_one()
    assert released, f"the long job's lease was not released at shutdown\n{tail(sup_log)}"

    # A scheduler reaps it at once and it is ready to run again: nothing is lost.
    sched, sched_log = launch(["scheduler"], env, "scheduler")
    try:
        wait_until(lambda: states(ledger, [long])[long] == "queued", timeout=30, what="the long job to be requeued")
    except pytest.fail.Exception:
        pytest.fail(f"{states(ledger, [long])}\n{tail(sched_log)}")
    assert stop_process(sched) == 0, tail(sched_log)


def test_killed_supervisor_leaves_no_orphan_workers(
    services: Services, ledger: sa.Engine, principal: Principal, namespace: str, broker: Any, launch: Launch
) -> None:
    """kill -9 of the supervisor: its worker processes notice they are orphans, stop within
    their grace and give their leases up, so a scheduler requeues the job at once."""
    grace = 1.0
    env = orch_env(services, namespace, ORCH_SCHEDULER_INTERVAL_S="0.2", ORCH_SHUTDOWN_GRACE_S=str(grace))
    sup, sup_log = launch(["worker", "--processes", "2", "--threads", "2"], env, "worker")
    wait_ready(sup_log, sup, 2)
    children = worker_children(sup.pid)
    assert len(children) == 2
    [job_id] = submit(ledger, principal, "sleep", [{"seconds": 60}], broker_mod.RedisDoorbell(broker))
    wait_until(lambda: states(ledger, [job_id])[job_id] == "running", timeout=30, what="the job to run")

    sup.send_signal(signal.SIGKILL)
    sup.wait(10)
    _, alive = psutil.wait_procs(children, timeout=grace + 10)
    assert not alive, f"orphaned worker processes still running: {alive}\n{tail(sup_log)}"
    assert "supervisor gone; stopping" in read(sup_log), tail(sup_log)
    with ledger.connect() as conn:
        released = conn.execute(
            sa.text("SELECT lease_expires_at <= now() FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()
    assert released, f"the orphan did not give its lease up\n{tail(sup_log)}"
