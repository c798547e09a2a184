"""Flow control with real `orch worker` and `orch scheduler` processes against real PostgreSQL
and Redis (and a real HTTP upstream, the simulator): a bucket shared by worker processes, pause
and resume, a blackout, the circuit's walk, an upstream's 429s, and a worker killed while it
holds a quota slot.

One worker pool (2 processes x 4 threads) and one scheduler serve the module; every test
starts from an empty ledger and uses a tenant of its own.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from tests.conftest import Services, Stack, running_stack, wait_until
from tests.integration import test_flow_control as flow
from worker.devtools.upstream_sim import UpstreamSim

pytestmark = pytest.mark.slow

PROCESSES = 2
THREADS = 4
REASON = "tests"
TERMINAL = {"succeeded", "dead_lettered", "canceled", "upstream_failed"}


# -- the stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(services: Services, engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logdir = tmp_path_factory.mktemp("flow-workers")
    with running_stack(
        services,
        logdir,
        processes=PROCESSES,
        threads=THREADS,
        ORCH_HANDLER_MODULES="tests.job_handlers,tests.flow_handlers",
    ) as s:
        yield s


@pytest.fixture
def sim() -> Iterator[UpstreamSim]:
    with UpstreamSim() as s:
        yield s


# -- helpers ------------------------------------------------------------------------------


def submit(
    stack: Stack,
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    payloads: Sequence[dict[str, Any]],
    *,
    job_type: str = "noop",
    source: str | None = None,
) -> list[int]:
    specs = [control.JobSpec(tenant, job_type, p, source=source) for p in payloads]
    return control.submit_many(engine, principal, specs, doorbell=stack.doorbell).job_ids


def wait_succeeded(engine: sa.Engine, stack: Stack, ids: Sequence[int], *, timeout: float) -> None:
    def done() -> bool:
        stack.check_alive()
        return flow.states(engine, ids) == {"succeeded": len(ids)}

    try:
        wait_until(done, timeout=timeout, interval=0.05, what=f"{len(ids)} job(s) to succeed")
    except pytest.fail.Exception:
        errors = sorted({str(j["last_error"]) for j in flow.jobs(engine, ids).values() if j["last_error"]})
        pytest.fail(
            f"jobs did not all succeed in {timeout}s: {flow.states(engine, ids)}, errors {errors}\n{stack.logs()}"
        )


def events_per_job(engine: sa.Engine, ids: Sequence[int], event: str) -> dict[int, int]:
    counts = dict.fromkeys(ids, 0)
    for h in flow.history(engine, ids, event):
        counts[h["job_id"]] += 1
    return counts


def add_sim_source(
    engine: sa.Engine,
    principal: Principal,
    name: str,
    sim: UpstreamSim,
    *,
    tenant: str,
    rate: float | None = None,
    burst: float | None = None,
) -> control.SourceChange:
    """A source on the simulator's host:port. It listens on loopback, so the source allows
    private addresses (http_fetch refuses them otherwise)."""
    return control.add_source(
        engine,
        principal,
        tenant=tenant,
        name=name,
        host=f"127.0.0.1:{sim.port}",
        rate=rate,
        burst=burst,
        allow_private=True,
        reason=REASON,
    )


def first_ack(engine: sa.Engine, ids: Sequence[int]) -> dt.datetime | None:
    acks = flow.history(engine, ids, "ack")
    return min((a["at"] for a in acks), default=None)


# -- tests --------------------------------------------------------------------------------


def test_bucket_shared_by_worker_processes_never_over_grants(
    stack: Stack, ledger: sa.Engine, principal: Principal
) -> None:
    tenant, rate, burst, n_jobs = "wf-bucket", 10.0, 3.0, 60
    flow.add_source(ledger, principal, tenant=tenant, rate=rate, burst=burst)
    ids = submit(stack, ledger, principal, tenant, [{"i": i} for i in range(n_jobs)], source="feed")
    wait_succeeded(ledger, stack, ids, timeout=30)

    assert events_per_job(ledger, ids, "succeed") == dict.fromkeys(ids, 1), "a job finished twice"
    assert events_per_job(ledger, ids, "claim") == dict.fromkeys(ids, 1), "a job was claimed twice"
    with ledger.connect() as conn:
        processes = conn.execute(
            sa.text("SELECT count(DISTINCT split_part(lease_owner, ':', 2)) FROM jobs WHERE id = ANY(:ids)"),
            {"ids": ids},
        ).scalar_one()
    assert processes == PROCESSES, "the bucket was not shared by both worker processes"

    times = flow.grant_times(ledger, ids)
    bad = flow.over_grants(times, burst, rate, eps=0.01)
    assert not bad, f"more starts than capacity + rate * t in {len(bad)} span(s), e.g. {bad[:5]}"
    assert flow.max_in_window(times, 1.0) <= burst + rate
    # As busy as the bucket allows: the run takes what the refill rate needs, not much more.
    assert (n_jobs - burst) / rate - 0.01 <= max(times) <= (n_jobs - burst) / rate + 3.0
    denies = flow.history(ledger, ids, "deny")
    assert denies and all(d["reason"].startswith("rate_limited until ") for d in denies)
    assert {j["attempt"] for j in flow.jobs(ledger, ids).values()} == {1}, "throttling consumed an attempt"


def test_pause_stops_dispatch_and_resume_restarts_it(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    tenant = "wf-pause"
    flow.add_source(ledger, principal, tenant=tenant)
    control.pause(ledger, principal, tenant=tenant, source="feed", reason="vendor maintenance")
    ids = submit(stack, ledger, principal, tenant, [{"i": i} for i in range(10)], source="feed")
    # The workers tried every job and admission held each one.
    wait_until(
        lambda: flow.states(ledger, ids) == {"throttled/paused": 10},
        timeout=15,
        what="every job to wait as paused",
    )
    # While paused (checked over a second, through scheduler passes), nothing starts.
    watch_until = flow.db_now(ledger) + dt.timedelta(seconds=1.0)
    while flow.db_now(ledger) < watch_until:
        assert flow.states(ledger, ids) == {"throttled/paused": 10}
        assert first_ack(ledger, ids) is None, "a job started while its source was paused"
        threading.Event().wait(0.1)

    resumed_at = flow.db_now(ledger)
    r = control.resume(ledger, principal, tenant=tenant, source="feed", reason="maintenance over")
    assert (r.changed, r.released) == (True, 10)
    wait_succeeded(ledger, stack, ids, timeout=15)
    acks = [a["at"] for a in flow.history(ledger, ids, "ack")]
    assert len(acks) == 10 and min(acks) >= resumed_at
    assert (max(acks) - resumed_at).total_seconds() < 3.0, "resume did not restart dispatch promptly"
    assert {j["attempt"] for j in flow.jobs(ledger, ids).values()} == {1}


def test_blackout_holds_jobs_and_lets_them_go_at_its_end(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    tenant = "wf-blackout"
    flow.add_source(ledger, principal, tenant=tenant)
    now = flow.db_now(ledger)
    end = now + dt.timedelta(seconds=3)
    control.add_blackout(
        ledger, principal, tenant=tenant, source="feed", starts_at=now, ends_at=end, reason="vendor window"
    )
    ids = submit(stack, ledger, principal, tenant, [{"i": i} for i in range(10)], source="feed")
    other = submit(stack, ledger, principal, tenant, [{"other": True}])
    wait_succeeded(ledger, stack, other, timeout=10)  # the blackout is the source's only
    wait_until(
        lambda: flow.states(ledger, ids) == {"throttled/blackout": 10},
        timeout=10,
        what="every job of the source to wait for the blackout",
    )
    assert {j["not_before"] for j in flow.jobs(ledger, ids).values()} == {end}
    wait_succeeded(ledger, stack, ids, timeout=15)
    acks = [a["at"] for a in flow.history(ledger, ids, "ack")]
    assert min(acks) >= end, f"a job started {(end - min(acks)).total_seconds():.3f}s before the blackout ended"
    assert (max(acks) - end).total_seconds() < 2.0, "jobs were not let go promptly at the blackout's end"
    assert {j["attempt"] for j in flow.jobs(ledger, ids).values()} == {1}


class CircuitWatch:
    """Polls a source's circuit state and keeps the sequence of states it saw."""

    def __init__(self, engine: sa.Engine, source_id: int) -> None:
        self.engine = engine
        self.source_id = source_id
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                state = conn.execute(
                    sa.text("SELECT circuit_state FROM sources WHERE id = :id"), {"id": self.source_id}
                ).scalar_one()
                conn.commit()
                if not self.seen or self.seen[-1] != state:
                    self.seen.append(state)
                self._stop.wait(0.01)

    def __enter__(self) -> CircuitWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_circuit_walks_closed_open_half_open_closed(
    stack: Stack, ledger: sa.Engine, principal: Principal, sim: UpstreamSim
) -> None:
    tenant, n_jobs = "wf-circuit", 6
    sim.configure("cb", error_burst=1000)  # the upstream is down: every request gets a 503
    src = add_sim_source(ledger, principal, "cb", sim, tenant=tenant)
    flow.set_circuit(ledger, "cb", cb_window=6, cb_min_outcomes=3, cb_failure_ratio=0.5, cb_cooldown_s=1.0, cb_probes=1)
    payloads = [{"url": f"{sim.url}/feeds/cb/items?page={i + 1}", "timeout_s": 5} for i in range(n_jobs)]
    with CircuitWatch(ledger, src.id) as watch:
        ids = submit(stack, ledger, principal, tenant, payloads, job_type="http_fetch", source="cb")
        # Open, and the requests already sent have had their 503s (nothing else starts now).
        wait_until(
            lambda: "open" in watch.seen and "running" not in flow.states(ledger, ids),
            timeout=15,
            interval=0.01,
            what="the circuit to open",
        )
        failed = sim.stats()["cb"]["errors"]
        # The upstream recovers (slowly, so the half-open probe is seen).
        sim.configure("cb", error_burst=0, latency_s=0.5)
        wait_succeeded(ledger, stack, ids, timeout=20)
    assert watch.seen == ["closed", "open", "half_open", "closed"], watch.seen

    s = flow.source_row(ledger, "cb", tenant)
    assert (s["circuit_state"], s["opened_total"]) == ("closed", 1)
    assert failed >= 3, "the circuit opened before cb_min_outcomes failures"
    denied = flow.history(ledger, ids, "deny")
    assert denied and all(d["reason"].startswith("circuit_open until ") for d in denied)
    # Waiting on the circuit used no attempt: attempts are the first try plus one per 503.
    retries = events_per_job(ledger, ids, "fail_retryable")
    assert sum(retries.values()) == failed
    for j in flow.jobs(ledger, ids).values():
        assert j["attempt"] == 1 + retries[j["id"]], j
    # After the upstream recovered, each job reached it exactly once (the probe first).
    assert sim.stats()["cb"]["ok"] == n_jobs


def test_upstream_429_slows_the_bucket_without_using_attempts(
    stack: Stack, ledger: sa.Engine, principal: Principal, sim: UpstreamSim
) -> None:
    tenant, n_jobs = "wf-429", 16
    sim.configure("rl", rate_limit=4.0, burst=1.0, retry_after_s=0.5)  # the hidden limit
    add_sim_source(ledger, principal, "rl", sim, tenant=tenant, rate=20.0, burst=4.0)
    payloads = [{"url": f"{sim.url}/feeds/rl/items?page={i + 1}", "timeout_s": 5} for i in range(n_jobs)]
    ids = submit(stack, ledger, principal, tenant, payloads, job_type="http_fetch", source="rl")
    wait_succeeded(ledger, stack, ids, timeout=40)

    stats = sim.stats()["rl"]
    assert stats["ok"] == n_jobs and stats["errors"] == 0
    assert stats["throttled"] > 0, "the upstream never throttled: the test did not exercise AIMD"
    throttles = flow.history(ledger, ids, "throttle")
    assert len(throttles) == stats["throttled"], "every 429 sends its job back to wait"
    assert {(t["from_state"], t["to_state"]) for t in throttles} == {("running", "throttled")}
    assert {j["attempt"] for j in flow.jobs(ledger, ids).values()} == {1}, "a 429 used up an attempt"
    assert events_per_job(ledger, ids, "fail_retryable") == dict.fromkeys(ids, 0)

    bucket = flow.bucket_row(ledger, flow.source_row(ledger, "rl", tenant)["bucket_id"])
    assert bucket["upstream_429_total"] == stats["throttled"]
    assert bucket["rate"] < 20.0, "the adaptive rate did not come down"
    with ledger.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT old_rate, new_rate, actor FROM throttles WHERE reason LIKE 'upstream 429%' ORDER BY id")
        ).all()
    assert rows, "no throttles row for the rate decreases"
    assert all(r[1] == pytest.approx(max(0.1, r[0] / 2)) for r in rows)
    assert all(r[2].count(":") >= 2 for r in rows), "the actor is not the worker"


def test_http_fetch_refused_by_the_egress_policy_dead_letters_at_once(
    stack: Stack, ledger: sa.Engine, principal: Principal, sim: UpstreamSim
) -> None:
    tenant = "wf-egress"
    # The simulator's own host, but the source does not allow loopback addresses; and a job
    # without a source fetching it.
    control.add_source(ledger, principal, tenant=tenant, name="strict", host=f"127.0.0.1:{sim.port}", reason=REASON)
    payload = {"url": f"{sim.url}/feeds/egress/items", "timeout_s": 5}
    [unsourced] = submit(stack, ledger, principal, tenant, [payload], job_type="http_fetch")
    [strict] = submit(stack, ledger, principal, tenant, [payload], job_type="http_fetch", source="strict")
    ids = [unsourced, strict]

    def ended() -> bool:
        stack.check_alive()
        return flow.states(ledger, ids) == {"dead_lettered": 2}

    try:
        wait_until(ended, timeout=20, interval=0.05, what="both fetches to be dead-lettered")
    except pytest.fail.Exception:
        pytest.fail(f"{flow.states(ledger, ids)}\n{stack.logs()}")
    final = flow.jobs(ledger, ids)
    for job_id, hint in ((unsourced, "only jobs of a source added with --allow-private"), (strict, "source strict")):
        j = final[job_id]
        assert (j["attempt"], j["error_class"]) == (1, "egress_refused"), j
        assert j["last_error"].startswith(f"refused to fetch {sim.url}/feeds/egress/items: 127.0.0.1 is a loopback")
        assert hint in j["last_error"]
    assert events_per_job(ledger, ids, "fail_retryable") == dict.fromkeys(ids, 0)
    assert all(n == 0 for counts in sim.stats().values() for n in counts.values()), (
        "a refused fetch reached the upstream"
    )


def test_killed_worker_does_not_leak_its_quota_slot(stack: Stack, ledger: sa.Engine, principal: Principal) -> None:
    tenant = "wf-kill"
    control.set_quota(ledger, principal, tenant=tenant, job_type="flow.hold", max_active=1, reason=REASON)
    ids = submit(stack, ledger, principal, tenant, [{"seconds": 1.0, "i": i} for i in range(3)], job_type="flow.hold")
    peak: list[int] = []

    def running() -> list[dict[str, Any]]:
        got = [j for j in flow.jobs(ledger, ids).values() if j["state"] in ("leased", "running")]
        peak.append(len(got))
        return got

    [victim_job] = wait_until(running, timeout=15, what="a job to hold the quota's slot")
    victim_pid = int(victim_job["lease_owner"].split(":")[1])
    assert victim_pid not in (stack.worker.pid, os.getpid())
    os.kill(victim_pid, signal.SIGKILL)

    # Its slot stays taken only until the lease runs out and the scheduler reaps it; then the
    # killed job and the others run, one at a time.
    def all_done() -> bool:
        running()
        stack.check_alive()
        return flow.states(ledger, ids) == {"succeeded": 3}

    try:
        wait_until(all_done, timeout=30, interval=0.05, what="every job to succeed")
    except pytest.fail.Exception:
        pytest.fail(f"{flow.states(ledger, ids)}\n{stack.logs()}")
    assert max(peak) == 1, "the quota let two jobs run at once"
    expired = events_per_job(ledger, ids, "lease_expired")
    assert expired == {i: int(i == victim_job["id"]) for i in ids}, expired
    assert events_per_job(ledger, ids, "succeed") == dict.fromkeys(ids, 1)
    final = flow.jobs(ledger, ids)
    assert final[victim_job["id"]]["attempt"] == 2
    [reap] = flow.history(ledger, [victim_job["id"]], "lease_expired")
    assert (reap["from_state"], reap["to_state"]) == ("running", "retrying")
    # The supervisor replaces the killed process, so the pool stops cleanly at teardown.
    wait_until(
        lambda: stack.worker_log.read_text(errors="replace").count(" ready: queues=") >= PROCESSES + 1,
        timeout=30,
        what="the killed worker process to be replaced",
    )
