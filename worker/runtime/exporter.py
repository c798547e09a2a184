"""Prometheus metrics: the prometheus-client objects built from core.domain.metrics, the
multiprocess set-up for worker processes, and the one collector that reads the ledger at
scrape time.

Multiprocess mode: PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is first
imported in a process, so `prepare_multiprocess_dir` runs in the supervisor (or `orch up`)
before any worker process is spawned. A pool removes only what it wrote when it stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.domain import incidents as incident_kinds
from core.domain import metrics as decl
from core.domain import slo
from core.domain.auth import local_principal
from core.ledger import flow
from core.ledger import incidents as ledger_incidents
from core.ledger import jobs as ledger
from core.ledger import notifier as ledger_notifier
from core.ledger import runs as ledger_runs

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class MetricsDir:
    """Where this host's worker processes write their metric files. A directory this process
    made itself (`owned`) is removed at the end; in a configured one (ORCH_METRICS_DIR, maybe
    shared by several pools) only the files of this process's own workers are."""

    path: Path
    owned: bool

    def release(self, pids: Iterable[int]) -> None:
        """Remove what this pool wrote: its workers' files (by pid), or the whole directory
        when this process made it."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for pid in pids:
            for f in self.path.glob(f"*_{int(pid)}.db"):
                with contextlib.suppress(OSError):
                    f.unlink()


def prepare_multiprocess_dir(base: Path | None = None) -> MetricsDir:
    """The directory for this pool's metric files, exported in the environment (inherited by
    worker processes spawned afterwards): `base`, created if missing and never emptied, or a
    fresh temporary directory."""
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        log.warning("prometheus_client was imported before the multiprocess directory was set")
    if base is None:
        found = MetricsDir(Path(tempfile.mkdtemp(prefix="orch-metrics-")), owned=True)
    else:
        base.mkdir(parents=True, exist_ok=True)
        found = MetricsDir(base, owned=False)
    os.environ[ENV] = str(found.path)
    return found


class Metrics:
    """This process's metric objects, created on first use from the declarations."""

    def __init__(self) -> None:
        import prometheus_client as pc

        self._objects: dict[str, Any] = {}
        for spec in decl.METRICS:
            if spec.from_ledger:
                continue  # gauges and ledger totals come from the ledger collector
            name = spec.name.removesuffix("_total") if spec.kind == decl.Kind.COUNTER else spec.name
            if spec.kind == decl.Kind.COUNTER:
                self._objects[spec.name] = pc.Counter(name, spec.help, spec.labels)
            else:
                self._objects[spec.name] = pc.Histogram(name, spec.help, spec.labels, buckets=spec.buckets)

        # Labelled children, cached: .labels() takes a lock and builds a key on every call,
        # and these run once or twice per job.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, name: str, *labels: str) -> Any:
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._objects[name].labels(*labels)
        return child

    def attempt_started(self, job_type: str, queue: str, queue_wait_s: float) -> None:
        self._child("orch_job_queue_wait_seconds", job_type, queue).observe(max(0.0, queue_wait_s))

    def attempt_ended(
        self, tenant: str, job_type: str, queue: str, outcome: str, duration_s: float, error_class: str | None
    ) -> None:
        self._child("orch_jobs_finished_total", tenant, job_type, queue, outcome).inc()
        self._child("orch_job_duration_seconds", job_type, queue).observe(duration_s)
        if error_class is not None:
            self._child("orch_job_failures_total", tenant, job_type, error_class).inc()

    def dag_released(self, seconds: float) -> None:
        self._objects["orch_dag_release_seconds"].observe(max(0.0, seconds))

    def run_ended(self, state: str, duration_s: float) -> None:
        self._child("orch_run_duration_seconds", state).observe(max(0.0, duration_s))

    def leases_expired(self, n: int) -> None:
        if n:
            self._objects["orch_lease_expirations_total"].inc(n)


_metrics: Metrics | None = None
_lock = threading.Lock()


def metrics() -> Metrics:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


def _flow_families(conn: sa.Connection, tenants: Iterable[str]) -> list[Any]:
    """The flow-control metric families (token buckets, circuits, quotas, waiting jobs)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from core.domain.states import WAIT_REASONS

    spec = decl.BY_NAME
    buckets = flow.metrics_buckets(conn)
    circuits = flow.metrics_circuits(conn)
    quotas = flow.metrics_quotas(conn)
    waiting = flow.metrics_waiting(conn)

    def family(name: str, labels: list[str]) -> Any:
        kind = spec[name].kind
        if kind == decl.Kind.COUNTER:
            return CounterMetricFamily(name.removesuffix("_total"), spec[name].help, labels=labels)
        return GaugeMetricFamily(name, spec[name].help, labels=labels)

    out: list[Any] = []
    for name, column in (
        ("orch_ratelimit_denials_total", "denied_total"),
        ("orch_upstream_throttled_total", "upstream_429_total"),
        ("orch_bucket_tokens", "tokens"),
        ("orch_bucket_capacity", "capacity"),
        ("orch_bucket_rate", "rate"),
        ("orch_bucket_base_rate", "base_rate"),
    ):
        f = family(name, ["tenant", "host"])
        for b in buckets:
            f.add_metric([b["tenant"], b["host"]], float(b[column]))
        out.append(f)
    state = family("orch_circuit_state", ["tenant", "source"])
    opened = family("orch_circuit_opened_total", ["tenant", "source"])
    for c in circuits:
        state.add_metric([c["tenant"], c["source"]], decl.CIRCUIT_STATES[c["circuit_state"]])
        opened.add_metric([c["tenant"], c["source"]], int(c["opened_total"]))
    out += [state, opened]
    active = family("orch_quota_active", ["tenant", "job_type"])
    limit = family("orch_quota_max_active", ["tenant", "job_type"])
    for q in quotas:
        active.add_metric([q["tenant"], q["job_type"]], int(q["active"]))
        if q["max_active"] is not None:  # a quota of starts per hour only has no slot limit
            limit.add_metric([q["tenant"], q["job_type"]], int(q["max_active"]))
    out += [active, limit]
    # Every tenant and reason, zero when none wait: a series that vanishes at zero would
    # leave a graph (and an alert's deriv()) at its last non-zero value.
    counts = {(str(r[0]), str(r[1])): int(r[2]) for r in waiting}
    f = family("orch_jobs_waiting", ["tenant", "reason"])
    for tenant in sorted(set(tenants) | {t for t, _ in counts}):
        for reason in WAIT_REASONS:
            f.add_metric([tenant, reason], counts.get((tenant, reason), 0))
    out.append(f)
    return out


#: Backfills read per scrape: the newest of each active state, and the newest of all (of which
#: those that ended within decl.BACKFILL_EXPORT_AFTER_END_S are exported). Each one costs one
#: indexed count of its windows (core.queries.list_backfills).
ACTIVE_BACKFILLS_PER_STATE = 50
RECENT_BACKFILLS = 50


def _backfills(conn: sa.Connection, now: dt.datetime) -> list[dict[str, Any]]:
    """The backfills orch_backfill_windows exports: planned, running or paused ones, and those
    that ended within the last day; by id."""
    from core import queries

    principal = local_principal("exporter")
    found: dict[int, dict[str, Any]] = {}
    for state in decl.ACTIVE_BACKFILL_STATES:
        for b in queries.list_backfills(conn, principal, state=state, limit=ACTIVE_BACKFILLS_PER_STATE):
            found[int(b["id"])] = b
    since = now - dt.timedelta(seconds=decl.BACKFILL_EXPORT_AFTER_END_S)
    for b in queries.list_backfills(conn, principal, limit=RECENT_BACKFILLS):
        ended = b["finished_at"]
        if int(b["id"]) not in found and ended is not None and dt.datetime.fromisoformat(ended) >= since:
            found[int(b["id"])] = b
    return [found[k] for k in sorted(found)]


def _schedule_families(conn: sa.Connection) -> list[Any]:
    """Schedule ticks (a ledger total), backfill windows by state, watermark lag."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from core import queries

    spec = decl.BY_NAME
    now: dt.datetime = conn.execute(sa.select(sa.func.now())).scalar_one()
    ticks = queries.schedule_tick_counters(conn)
    backfills = _backfills(conn, now)
    marks = queries.list_watermarks(conn, local_principal("exporter"), holes=False)

    # Every status of every tenant that has ticked, zero when none: rate() cannot see the
    # first tick of a status whose series appears with it.
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for t in ticks:
        counts[(str(t["tenant"]), str(t["status"]))] += int(t["ticks"])
    c = CounterMetricFamily("orch_schedule_ticks", spec["orch_schedule_ticks_total"].help, labels=["tenant", "status"])
    for tenant in sorted({t for t, _ in counts}):
        for status in sorted(set(decl.TICK_STATUSES) | {s for t, s in counts if t == tenant}):
            c.add_metric([tenant, status], counts.get((tenant, status), 0))
    g = GaugeMetricFamily(
        "orch_backfill_windows", spec["orch_backfill_windows"].help, labels=["tenant", "backfill", "state"]
    )
    for b in backfills:
        windows = b["windows"]
        for state in decl.WINDOW_STATES:
            g.add_metric([str(b["tenant"]), str(b["id"]), state], int(windows.get(state, 0)))
    lag = GaugeMetricFamily(
        "orch_watermark_lag_seconds",
        spec["orch_watermark_lag_seconds"].help,
        labels=["tenant", "source", "job_type"],
    )
    for m in sorted(marks, key=lambda m: (m["tenant"], m["source"] or decl.NO_SOURCE, m["job_type"])):
        if m["lag_s"] is not None:
            lag.add_metric([m["tenant"], m["source"] or decl.NO_SOURCE, m["job_type"]], float(m["lag_s"]))
    return [c, g, lag]


def _incident_family(conn: sa.Connection) -> Any:
    """orch_incidents_open for every kind and severity (0 where none), so an alert can tell
    "none" from "not scraped"."""
    from prometheus_client.core import GaugeMetricFamily

    counts = {(r["kind"], r["severity"]): int(r["n"]) for r in ledger_incidents.unresolved_counts(conn)}
    g = GaugeMetricFamily("orch_incidents_open", decl.BY_NAME["orch_incidents_open"].help, labels=["kind", "severity"])
    for kind in incident_kinds.KINDS:
        for severity in incident_kinds.SEVERITIES:
            g.add_metric([kind, severity], counts.get((kind, severity), 0))
    return g


def _webhook_families(conn: sa.Connection) -> list[Any]:
    """The webhook notifier's totals, backlog and last success, from its cursor (zeros while no
    notifier ever ran; every failure reason, zero when none)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    spec = decl.BY_NAME
    row = ledger_notifier.status(conn, ledger_notifier.WEBHOOK)
    failures = dict(row["failures"]) if row is not None else {}
    out: list[Any] = []
    for name, column in (("orch_webhook_delivered_total", "delivered"), ("orch_webhook_dropped_total", "dropped")):
        c = CounterMetricFamily(name.removesuffix("_total"), spec[name].help)
        c.add_metric([], int(row[column]) if row is not None else 0)
        out.append(c)
    f = CounterMetricFamily("orch_webhook_failures", spec["orch_webhook_failures_total"].help, labels=["reason"])
    for reason in sorted(set(decl.WEBHOOK_FAILURE_REASONS) | set(failures)):
        f.add_metric([reason], int(failures.get(reason, 0)))
    out.append(f)
    g = GaugeMetricFamily("orch_webhook_backlog", spec["orch_webhook_backlog"].help)
    g.add_metric([], int(row["backlog"]) if row is not None else 0)
    out.append(g)
    last = row["last_success_at"] if row is not None else None
    g = GaugeMetricFamily(
        "orch_webhook_last_success_timestamp_seconds", spec["orch_webhook_last_success_timestamp_seconds"].help
    )
    g.add_metric([], last.timestamp() if last is not None else 0.0)
    out.append(g)
    return out


class LedgerCollector:
    """Gauges and the ledger's running totals (submissions, rate-limit denials, upstream 429s,
    circuit openings, schedule ticks), read from the ledger when Prometheus scrapes."""

    def __init__(self, engine: sa.Engine, objective: slo.Slo | None = None) -> None:
        self.engine = engine
        self.objective = objective or slo.Slo()

    def describe(self) -> list[Any]:
        return []  # collected only at scrape time (no queries at registration)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from core import queries

        try:
            with self.engine.connect() as conn:
                depth = ledger.queue_depth(conn)
                oldest = ledger.oldest_ready(conn)
                dead = ledger.dead_letter_depth(conn)
                submitted = ledger.submit_counts(conn)
                runs_finished = ledger_runs.run_counters(conn)
                burns = queries.burn_rates(conn, local_principal("exporter"), objective=self.objective)
                flow = _flow_families(conn, dead)
                # Last, and on its own: a failure here (a ledger not yet at revision 0006)
                # leaves the other families, which the other alerts read.
                try:
                    scheduled = _schedule_families(conn)
                except sa.exc.SQLAlchemyError as exc:
                    log.warning("schedule metrics unavailable: %s", str(exc).splitlines()[0])
                    scheduled = []
                try:
                    scheduled.append(_incident_family(conn))
                except sa.exc.SQLAlchemyError as exc:  # a ledger not yet at revision 0011
                    log.warning("incident metrics unavailable: %s", str(exc).splitlines()[0])
                try:
                    scheduled += _webhook_families(conn)
                except sa.exc.SQLAlchemyError as exc:  # a ledger not yet at revision 0014
                    log.warning("webhook metrics unavailable: %s", str(exc).splitlines()[0])
        except sa.exc.SQLAlchemyError as exc:
            log.warning("ledger metrics unavailable: %s", str(exc).splitlines()[0])
            return
        spec = decl.BY_NAME
        g = GaugeMetricFamily("orch_queue_depth", spec["orch_queue_depth"].help, labels=["queue", "state"])
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for row in depth:
            totals[(row.queue, row.state)] += int(row._mapping["count"])
        for (queue, state), count in sorted(totals.items()):
            g.add_metric([queue, state], count)
        yield g
        g = GaugeMetricFamily(
            "orch_oldest_ready_age_seconds", spec["orch_oldest_ready_age_seconds"].help, labels=["queue"]
        )
        for queue, age in sorted(oldest.items()):
            g.add_metric([queue], age)
        yield g
        g = GaugeMetricFamily("orch_dead_letter_depth", spec["orch_dead_letter_depth"].help, labels=["tenant"])
        for tenant, count in sorted(dead.items()):
            g.add_metric([tenant], count)
        yield g
        c = CounterMetricFamily(
            "orch_jobs_submitted", spec["orch_jobs_submitted_total"].help, labels=["tenant", "job_type"]
        )
        for row in sorted(submitted, key=lambda r: (r.tenant, r.job_type)):
            c.add_metric([row.tenant, row.job_type], int(row.submitted))
        yield c
        c = CounterMetricFamily("orch_runs_finished", spec["orch_runs_finished_total"].help, labels=["tenant", "state"])
        for run_row in sorted(runs_finished, key=lambda r: (r["tenant"], r["state"])):
            c.add_metric([run_row["tenant"], run_row["state"]], int(run_row["finished"]))
        yield c
        # The fleet-wide burn rate per window (per tenant and job type: the recording rules).
        g = GaugeMetricFamily("orch_slo_burn_rate", spec["orch_slo_burn_rate"].help, labels=["slo", "window"])
        for window in slo.WINDOWS:
            rows = [b for b in burns if b["window"] == window]
            failed, total = sum(b["failed"] for b in rows), sum(b["total"] for b in rows)
            g.add_metric([self.objective.name, window], slo.burn_rate(failed, total, self.objective.target))
        yield g
        yield from flow
        yield from scheduled


def serve(engine: sa.Engine | None, host: str, port: int, objective: slo.Slo | None = None) -> Any:
    """Serve /metrics: this host's worker processes (multiprocess files, when the directory
    is set) plus the ledger collector. Returns the server (shut it down to stop)."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    if os.environ.get(ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    elif engine is None:
        registry = REGISTRY  # a single process's own metrics (the scheduler)
    if engine is not None:
        registry.register(LedgerCollector(engine, objective))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def mark_process_dead(pid: int) -> None:
    """Tidy a dead worker's live-gauge files (counters and histograms keep their totals)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
