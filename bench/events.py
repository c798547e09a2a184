"""The event stream and the incidents under load (issue 12, "Performance and limits").

    python bench/events.py [--only relay,ratio,resume,incidents] [--jobs 20000] [--rounds 2]
        [--rate 1000] [--duration 15] [--resume-jobs 20000] [--reconnects 100]
        [--ledger-jobs 1000000] [--passes 20] [--processes 2] [--threads 8]

Each piece in a scratch database of its own (orch_bench_events_*, dropped on exit), with an
`orch scheduler` process (its relay numbers the outbox), throughput.py's worker pool and an
`orch api` process (ApiServer under uvicorn) where the piece needs them:

1. relay: noop jobs submitted at --rate (batches every 50 ms) for --duration s after a 3 s
   warm-up, one SSE client connected; for every orch.job.succeeded event, lag = arrival wall
   time - the envelope's `time` (the success transaction's start, now(): the commit-time
   proxy, the worker's outcome transactions are short).
2. ratio: --rounds x 2 runs of --jobs noop jobs as throughput.py measures them (batch
   submitted, then run by the pool; N / (last finish - first start) on the ledger's clock),
   alternating relay on + one SSE client reading the whole stream and ORCH_EVENT_RELAY=false
   (no client); the order flips every round.
3. resume: a --resume-jobs run during which one SSE client drops its connection and resumes
   with Last-Event-ID --reconnects times; its sequence numbers against 1..newest.
4. incidents: a ledger of --ledger-jobs jobs seeded as bench/console.py seeds it, with what
   would open an incident cleared; control.evaluate_incidents timed --passes times.

Progress on stderr; a table and, as the last line, JSON on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import events_sse as sse  # noqa: E402 - needs ROOT on sys.path when run as a script
from bench import throughput  # noqa: E402

PIECES = ("relay", "ratio", "resume", "incidents")
TARGETS = {"relay_lag_p99_ms": 250.0, "throughput_ratio": 0.95, "resume_gap": 0, "incident_pass_ms": 20.0}
BATCH_S = 0.05
LEFT_SQL = throughput.LEFT_SQL


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- a ledger with a pool ---------------------------------------------------------------------


@dataclass
class Ledger:
    url: str
    redis_url: str
    engine: Any
    settings: Any
    namespace: str
    bell: Any
    broker: Any

    def newest(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT last_seq FROM event_relay")).scalar_one())

    def drained(self, timeout: float = 120.0) -> int:
        """Once no committed event waits for its number (the scheduler's relay numbered all),
        the newest number."""
        from core.ledger import events

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                if not events.waiting(conn):
                    return self.newest()
            time.sleep(0.05)
        raise SystemExit(f"the relay did not number the outbox within {timeout:.0f}s")

    def wait_done(self, lo: int, hi: int, n: int, timeout: float = 900.0) -> None:
        import sqlalchemy as sa

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                if n - conn.execute(sa.text(LEFT_SQL), {"lo": lo, "hi": hi}).scalar_one() >= n:
                    return
            time.sleep(0.1)
        raise SystemExit(f"jobs {lo}..{hi} did not finish within {timeout:.0f}s")

    def rate(self, lo: int, hi: int) -> tuple[float, int]:
        """(jobs/s: succeeded / (last finish - first start), ledger clock; succeeded)."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            done, first, last = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE state = 'succeeded'), min(started_at), max(finished_at)"
                    " FROM jobs WHERE id BETWEEN :lo AND :hi"
                ),
                {"lo": lo, "hi": hi},
            ).one()
        return done / (last - first).total_seconds(), int(done)

    def renamespace(self, relay: bool = True) -> None:
        """A broker namespace of its own (and ORCH_EVENT_RELAY) for the next stack."""
        from worker.runtime import broker as broker_mod

        self._clear()
        os.environ["ORCH_EVENT_RELAY"] = "true" if relay else "false"
        self.namespace = f"bench-events-{uuid.uuid4().hex[:8]}"
        self.settings = throughput.use_ledger(self.url, self.redis_url, self.namespace)
        self.broker = broker_mod.build_broker(self.redis_url, namespace=self.namespace)
        self.bell = broker_mod.RedisDoorbell(self.broker)

    def _clear(self) -> None:
        if self.broker is not None:
            keys = self.broker.client.keys(f"{self.namespace}:*")
            if keys:
                self.broker.client.delete(*keys)

    def stack(self, a: argparse.Namespace) -> Any:
        return throughput.worker_stack(
            self.settings,
            processes=a.processes,
            threads=a.threads,
            queues=["bench"],
            handler_modules=["bench.handlers"],
        )


@contextlib.contextmanager
def ledger(server: str, redis_url: str, tag: str) -> Iterator[Ledger]:
    from core import control
    from core.ledger import db
    from worker.runtime import pool

    with throughput.scratch_database(server, f"orch_bench_events_{tag}") as url:
        engine = db.create_engine(url, application_name="orch-bench-events")
        led = Ledger(url, redis_url, engine, None, "", None, None)
        try:
            led.renamespace()
            handlers = pool.load_handlers(["bench.handlers"])
            control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
            yield led
        finally:
            led._clear()
            os.environ.pop("ORCH_EVENT_RELAY", None)
            engine.dispose()


def submit(led: Ledger, n: int, per_call: int = 5000) -> list[int]:
    from core import control
    from core.domain.auth import local_principal

    spec = control.JobSpec("bench", "bench.noop")
    p = local_principal("bench")
    ids: list[int] = []
    for start in range(0, n, per_call):
        ids += control.submit_many(led.engine, p, [spec] * min(per_call, n - start), doorbell=led.bell).job_ids
    return ids


def pace(led: Ledger, rate: float, seconds: float) -> tuple[list[int], int]:
    """Submit `rate` jobs/s for `seconds`, a batch every BATCH_S; (ids, batches sent late)."""
    per = max(1, round(rate * BATCH_S))
    ids: list[int] = []
    late = 0
    nxt = time.monotonic()
    end = nxt + seconds
    while nxt < end:
        ids += submit(led, per, per)
        nxt += BATCH_S
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
    return ids, late


# -- 1. relay lag -----------------------------------------------------------------------------


def relay_lag(server: str, redis_url: str, a: argparse.Namespace) -> dict[str, Any]:
    from bench import pgcpu

    with ledger(server, redis_url, "relay") as led, sse.api_process() as (url, api_pid):
        token = sse.make_token(led.engine)
        with led.stack(a) as stack:
            client = sse.Client(url, token, after="latest", lags=True)
            client.start()
            if not client.connected.wait(30):
                raise SystemExit(f"the SSE client did not connect: {client.error}")
            say(f"relay: warm-up 3 s at {a.rate:g} jobs/s ...")
            warm, _ = pace(led, a.rate, 3.0)
            say(f"relay: {a.duration:g} s at {a.rate:g} jobs/s ({round(a.rate * BATCH_S)} every 50 ms), one SSE client")
            t0, api0 = time.time(), pgcpu.processes_cpu([api_pid])
            ids, late = pace(led, a.rate, a.duration)
            t1, api1 = time.time(), pgcpu.processes_cpu([api_pid])
            led.wait_done(min(warm), max(ids), len(warm) + len(ids), timeout=300)
            newest = led.drained()
            caught_up = client.wait_for(newest, 60)
            stack.check()
            client.stop()
        split = relay_split(led, [(seq, arr) for seq, arr, at in client.lags if t0 <= at <= t1])
    lags = [(arr - at) * 1000 for _, arr, at in client.lags if t0 <= at <= t1]
    out = {
        "p50_ms": _r(sse.percentile(lags, 0.5)),
        "p99_ms": _r(sse.percentile(lags, 0.99)),
        "max_ms": _r(max(lags, default=None)),
        "events": len(lags),
        "submitted_per_s": round(len(ids) / (t1 - t0), 1),
        "late_batches": late,
        "succeeded_per_s": round(len(lags) / (t1 - t0), 1),
        "api_cpu_share": None if api0 is None or api1 is None else round((api1 - api0) / (t1 - t0), 2),
        "client_cpu_s": round(client.cpu_s, 2),
        "succeeded_events": len(client.lags),
        "jobs": len(warm) + len(ids),
        "caught_up": caught_up,
        "dropped_connections": client.dropped,
        **split,
    }
    say(f"  lag p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, max {out['max_ms']} ms over {len(lags)} events")
    return out


def relay_split(led: Ledger, got: list[tuple[int, float]]) -> dict[str, Any]:
    """The lag in two: the envelope's time -> the relay's numbering transaction (its now(),
    events.published_at: the worker's commit and the relay's wake-up), and that -> arrival
    (the relay's commit, the API's poll, the frame on the wire, the client)."""
    import bisect

    import sqlalchemy as sa

    with led.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT seq, extract(epoch FROM at)::float8, extract(epoch FROM published_at)::float8 FROM events"
                " WHERE kind = 'job.succeeded' AND seq IS NOT NULL ORDER BY seq"
            )
        ).all()
    seqs = [int(r[0]) for r in rows]
    relay_ms: list[float] = []
    deliver_ms: list[float] = []
    for seq, arrived in got:
        i = bisect.bisect_left(seqs, seq)  # the row holding seq: the first whose last number is >= seq
        if i == len(seqs):
            continue
        _, at, published = rows[i]
        relay_ms.append((published - at) * 1000)
        deliver_ms.append((arrived - published) * 1000)
    return {
        "to_numbered_p50_ms": _r(sse.percentile(relay_ms, 0.5)),
        "to_numbered_p99_ms": _r(sse.percentile(relay_ms, 0.99)),
        "numbered_to_arrival_p50_ms": _r(sse.percentile(deliver_ms, 0.5)),
        "numbered_to_arrival_p99_ms": _r(sse.percentile(deliver_ms, 0.99)),
    }


# -- 2. throughput with and without the stream ------------------------------------------------


def ratio(server: str, redis_url: str, a: argparse.Namespace) -> dict[str, Any]:
    from bench import pgcpu
    from worker.runtime.relay import Relay

    with_stream: list[float] = []
    without: list[float] = []
    ratios: list[float] = []
    details: list[dict[str, Any]] = []
    with ledger(server, redis_url, "ratio") as led, sse.api_process() as (url, api_pid):
        token = sse.make_token(led.engine)

        def run(relay: bool) -> dict[str, Any]:
            backlog = 0
            while n := Relay(led.engine).run_once():  # what a relay-off run left unnumbered
                backlog += n
            vacuum(led.engine)
            led.renamespace(relay)
            client = None
            if relay:
                client = sse.Client(url, token, after=str(led.newest()))
                client.start()
                if not client.connected.wait(30):
                    raise SystemExit(f"the SSE client did not connect: {client.error}")
            api0 = pgcpu.processes_cpu([api_pid])
            ids = submit(led, a.jobs)
            behind = None
            with led.stack(a) as stack:
                led.wait_done(min(ids), max(ids), len(ids))
                stack.check()
                if client is not None:
                    newest = led.drained()
                    behind = newest - (client.last or 0)
                    client.wait_for(newest, 120)
            api1 = pgcpu.processes_cpu([api_pid])
            rate, done = led.rate(min(ids), max(ids))
            got = {"relay": relay, "jobs_per_s": round(rate, 1), "succeeded": done, "numbered_before": backlog}
            if client is not None:
                client.stop()
                got |= {
                    "events": len(client.seqs),
                    "events_per_job": round(len(client.seqs) / len(ids), 2),
                    "client_behind_at_end": behind,
                    "client_cpu_s": round(client.cpu_s, 2),
                    "api_cpu_s": None if api0 is None or api1 is None else round(api1 - api0, 2),
                    "dropped_connections": client.dropped,
                }
            return got

        say(f"ratio: warm-up (not measured), {a.jobs} jobs, relay off ...")
        warm = run(False)
        say(f"  {warm['jobs_per_s']:,.0f} jobs/s")
        for r in range(1, a.rounds + 1):
            order = (True, False) if r % 2 else (False, True)
            got: dict[bool, float] = {}
            for relay in order:
                label = "relay + SSE client" if relay else "relay off, no client"
                say(f"ratio [{r}/{a.rounds}] {label}: {a.jobs} jobs, {a.processes}x{a.threads} ...")
                d = run(relay)
                details.append({"round": r, **d})
                got[relay] = d["jobs_per_s"]
                extra = f", {d['events']} events, api cpu {d['api_cpu_s']} s" if relay else ""
                say(f"  {d['jobs_per_s']:,.0f} jobs/s ({d['succeeded']} succeeded{extra})")
            with_stream.append(got[True])
            without.append(got[False])
            ratios.append(got[True] / got[False])
            say(f"  round {r}: ratio {ratios[-1]:.3f}")
    return {
        "with_jobs_per_s": round(statistics.median(with_stream), 1),
        "without_jobs_per_s": round(statistics.median(without), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
        "runs": details,
    }


def vacuum(engine: Any) -> None:
    import sqlalchemy as sa

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) jobs, job_history, events, event_relay"))


# -- 3. resume --------------------------------------------------------------------------------


def resume(server: str, redis_url: str, a: argparse.Namespace) -> dict[str, Any]:
    with ledger(server, redis_url, "resume") as led, sse.api_process() as (url, _pid):
        token = sse.make_token(led.engine)
        with led.stack(a) as stack:
            # Events per job, to spread the reconnects over the whole run.
            before = led.drained()
            probe = submit(led, 200)
            led.wait_done(min(probe), max(probe), len(probe))
            per_job = (led.drained() - before) / len(probe)
            every = max(1, int(a.resume_jobs * per_job / (a.reconnects * 1.1)))
            say(
                f"resume: {a.resume_jobs} jobs (about {per_job:.1f} events each), an SSE client resuming"
                f" with Last-Event-ID after every {every} events, {a.reconnects} times ..."
            )
            client = sse.Client(url, token, reconnect_every=every, max_reconnects=a.reconnects)
            client.start()  # no cursor: from the oldest retained event, 1
            if not client.connected.wait(30):
                raise SystemExit(f"the SSE client did not connect: {client.error}")
            ids = submit(led, a.resume_jobs)
            led.wait_done(min(ids), max(ids), len(ids))
            newest = led.drained()
            caught_up = client.wait_for(newest, 120)
            stack.check()
            client.stop()
    seen = set(client.seqs)
    missed = len(set(range(1, newest + 1)) - seen)
    out = {
        "missed": missed,
        "duplicated": len(client.seqs) - len(seen),
        "reconnects": client.reconnects,
        "unplanned_reconnects": client.dropped,
        "events": len(client.seqs),
        "newest": newest,
        "beyond_newest": len([s for s in seen if s > newest or s < 1]),
        "out_of_order": sum(1 for x, y in zip(client.seqs, client.seqs[1:], strict=False) if y <= x),
        "lost_notes": len(client.lost),
        "reconnect_every": every,
        "caught_up": caught_up,
    }
    say(f"  missed {missed}, duplicated {out['duplicated']}, {client.reconnects} reconnects, {newest} events")
    return out


# -- main -------------------------------------------------------------------------------------


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PIECES), help="comma-separated: " + ",".join(PIECES))
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs of each throughput run")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (each: with and without)")
    ap.add_argument("--rate", type=float, default=1000.0, help="relay piece: jobs/s submitted")
    ap.add_argument("--duration", type=float, default=15.0, help="relay piece: seconds measured")
    ap.add_argument("--resume-jobs", type=int, default=20_000)
    ap.add_argument("--reconnects", type=int, default=100)
    ap.add_argument("--ledger-jobs", type=int, default=1_000_000, help="incidents piece: jobs seeded")
    ap.add_argument("--passes", type=int, default=20, help="incidents piece: timed evaluations")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    only = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(only) - set(PIECES)
    if unknown:
        ap.error(f"--only: unknown piece(s) {', '.join(sorted(unknown))}; choose from {', '.join(PIECES)}")
    if a.ledger_jobs < 10_000:
        ap.error("--ledger-jobs must be at least 10000 (bench/console_seed.py)")
    throughput.exit_on_sigterm()
    load0 = os.getloadavg()[0]
    server, redis_url, embedded = throughput.resolve_urls()
    got: dict[str, Any] = {}
    try:
        if "relay" in only:
            got["relay"] = relay_lag(server, redis_url, a)
        if "ratio" in only:
            got["ratio"] = ratio(server, redis_url, a)
        if "resume" in only:
            got["resume"] = resume(server, redis_url, a)
        if "incidents" in only:
            from bench import events_incidents

            got["incidents"] = events_incidents.measure(server, a, say)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    report(got, a, load0)


def report(got: dict[str, Any], a: argparse.Namespace, load0: float) -> None:
    relay, rat, res, inc = (got.get(k) for k in PIECES)
    resume_gap = None if res is None else {k: res[k] for k in ("missed", "duplicated", "reconnects")}
    result: dict[str, Any] = {
        "relay_lag_p50_ms": relay and relay["p50_ms"],
        "relay_lag_p99_ms": relay and relay["p99_ms"],
        "relay_lag_max_ms": relay and relay["max_ms"],
        "relay_lag_is": "SSE arrival wall time - envelope time (the success transaction's now(), its start)",
        "throughput_with_jobs_per_s": rat and rat["with_jobs_per_s"],
        "throughput_without_jobs_per_s": rat and rat["without_jobs_per_s"],
        "throughput_ratio": rat and rat["ratio"],
        "throughput_ratios": rat and rat["ratios"],
        "resume_gap": resume_gap,
        "incident_pass_ms": inc and {k: inc[k] for k in ("p50", "p95", "max", "jobs")},
        "jobs": a.jobs,
        "rounds": a.rounds,
        "pool": f"{a.processes}x{a.threads}",
        "relay": relay,
        "ratio_runs": rat and rat["runs"],
        "resume": res,
        "incidents": inc,
        "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    met = {
        "relay_lag_p99_ms": relay and relay["p99_ms"] is not None and relay["p99_ms"] <= TARGETS["relay_lag_p99_ms"],
        "throughput_ratio": rat and rat["ratio"] >= TARGETS["throughput_ratio"],
        "resume_gap": res and res["missed"] == 0 and res["duplicated"] == 0 and res["reconnects"] >= a.reconnects,
        "incident_pass_ms": inc and inc["p95"] <= TARGETS["incident_pass_ms"],
    }
    result["targets_met"] = {k: v for k, v in met.items() if v is not None}
    rows = [
        ("relay_lag_p99_ms", relay and f"{relay['p99_ms']} (p50 {relay['p50_ms']}, max {relay['max_ms']})", "<= 250"),
        (
            "throughput_ratio",
            rat and f"{rat['ratio']} ({rat['with_jobs_per_s']:,.0f} / {rat['without_jobs_per_s']:,.0f} jobs/s)",
            ">= 0.95",
        ),
        (
            "resume_gap",
            res and f"missed {res['missed']}, duplicated {res['duplicated']}, {res['reconnects']} resumes",
            "0",
        ),
        ("incident_pass_ms", inc and f"p50 {inc['p50']}, p95 {inc['p95']} ({inc['jobs']:,} jobs)", "<= 20"),
    ]
    print(f"\n{'figure':<20} {'measured':<56} {'target':<8} met")
    for name, value, target in rows:
        ok = met[name]
        print(f"{name:<20} {value or 'not run':<56} {target:<8} {'' if ok is None else 'yes' if ok else 'NO'}")
    if relay:
        print(
            f"relay: {relay['events']} orch.job.succeeded events in the measured {a.duration:g} s, submitted at"
            f" {relay['submitted_per_s']:,.0f} jobs/s ({relay['late_batches']} batches late), succeeded at"
            f" {relay['succeeded_per_s']:,.0f} jobs/s; orch api used {relay['api_cpu_share']} of a core;"
            " the lag is arrival - the envelope's time, the transaction's start (now()), a proxy for its commit"
        )
        print(
            f"relay: split: envelope time -> numbered (the relay's now()) p50 {relay['to_numbered_p50_ms']} ms,"
            f" p99 {relay['to_numbered_p99_ms']} ms; numbered -> arrival p50 {relay['numbered_to_arrival_p50_ms']} ms,"
            f" p99 {relay['numbered_to_arrival_p99_ms']} ms"
        )
    if rat:
        for d in rat["runs"]:
            extra = ""
            if d["relay"]:
                extra = (
                    f"  events/job {d['events_per_job']}, client behind at the end {d['client_behind_at_end']},"
                    f" api cpu {d['api_cpu_s']} s, client cpu {d['client_cpu_s']} s"
                )
            label = "relay+client" if d["relay"] else "relay off   "
            print(f"ratio round {d['round']} {label} {d['jobs_per_s']:>8,.0f} jobs/s{extra}")
    if inc:
        print(
            f"incidents: seeded {inc['jobs']:,} jobs in {inc['seed_s']} s;"
            f" conditions as seeded {inc['seeded_conditions']}, cleared: {inc['cleared']};"
            f" burn conditions (every 30 s) p50 {inc['burn_p50']} ms"
        )
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
