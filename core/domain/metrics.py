"""Every metric Orch exports, declared once. worker/exporter.py builds the prometheus-client
objects from these; dashboards and alert rules may only name metrics declared here (a test
checks the generated Grafana JSON and the rule files)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: A counter that is a running total in the ledger, read at scrape time like the gauges
    #: (which always come from the ledger), rather than counted in a process.
    ledger: bool = False

    @property
    def from_ledger(self) -> bool:
        """Read by worker/exporter.py's ledger collector; no process counts it."""
        return self.ledger or self.kind == Kind.GAUGE

    def series_names(self) -> tuple[str, ...]:
        """Names that appear in PromQL for this metric."""
        if self.kind == Kind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

#: Outcomes of an attempt, the values of the `outcome` label.
OUTCOMES = ("succeeded", "retried", "dead_lettered", "canceled", "throttled")
#: SLO windows of the burn-rate metric (docs/design.md, "Observability").
BURN_WINDOWS = ("5m", "30m", "1h", "6h", "3d")
#: Values of orch_circuit_state: a circuit breaker's state as a number (alerts compare them).
CIRCUIT_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
#: Values of the `status` label of orch_schedule_ticks_total (every one, zero when none): the
#: statuses of a tick (core.domain.schedules.TickStatus; a test checks they agree).
TICK_STATUSES: tuple[str, ...] = ("fired", "skipped", "buffered", "missed", "paused")
#: Values of the `state` label of orch_backfill_windows (every one, zero when none): the states
#: of a window (migration 0006, windows_state_valid).
WINDOW_STATES: tuple[str, ...] = ("planned", "running", "succeeded", "failed", "canceled")
#: Backfills in these states are exported, and finished ones for this long after they end,
#: so the `backfill` label of orch_backfill_windows stays bounded.
ACTIVE_BACKFILL_STATES: tuple[str, ...] = ("planned", "running", "paused")
BACKFILL_EXPORT_AFTER_END_S = 86400
#: Watermarks without a source carry this as their `source` label.
NO_SOURCE = "-"
#: Values of the `reason` label of orch_webhook_failures_total (every one, zero when none): why
#: a POST of the webhook notifier failed (worker/runtime/notifier.py).
WEBHOOK_FAILURE_REASONS: tuple[str, ...] = ("timeout", "connection", "http_3xx", "http_4xx", "http_429", "http_5xx")

METRICS: tuple[MetricSpec, ...] = (
    # Written by worker processes (prometheus multiprocess mode); the submitted counter is a
    # running total in the ledger (submit happens in every front end's process).
    MetricSpec("orch_jobs_submitted_total", Kind.COUNTER, "Jobs submitted.", ("tenant", "job_type"), ledger=True),
    MetricSpec(
        "orch_jobs_finished_total",
        Kind.COUNTER,
        "Attempts that ended, by outcome (succeeded, retried, dead_lettered, canceled, throttled).",
        ("tenant", "job_type", "queue", "outcome"),
    ),
    MetricSpec(
        "orch_job_failures_total",
        Kind.COUNTER,
        "Failed attempts by error class.",
        ("tenant", "job_type", "error_class"),
    ),
    MetricSpec(
        "orch_job_duration_seconds",
        Kind.HISTOGRAM,
        "Handler run time of an attempt.",
        ("job_type", "queue"),
        DURATION_BUCKETS,
    ),
    MetricSpec(
        "orch_job_queue_wait_seconds",
        Kind.HISTOGRAM,
        "Time from ready (queued) to claimed.",
        ("job_type", "queue"),
        DURATION_BUCKETS,
    ),
    # Written by the scheduler.
    MetricSpec("orch_lease_expirations_total", Kind.COUNTER, "Leases reaped after their worker stopped heartbeating."),
    MetricSpec(
        "orch_run_duration_seconds",
        Kind.HISTOGRAM,
        "Time from a DAG run's start to its end, by the state it ended in (observed by the scheduler).",
        ("state",),
        DURATION_BUCKETS,
    ),
    # Written by worker processes.
    MetricSpec(
        "orch_dag_release_seconds",
        Kind.HISTOGRAM,
        "Time from the end of a job of a run's last parent to the job's claim (the DAG hop).",
        (),
        DURATION_BUCKETS,
    ),
    # A running total in the ledger (runs end in whichever transaction ends their last job).
    MetricSpec(
        "orch_runs_finished_total", Kind.COUNTER, "DAG runs that ended, by state.", ("tenant", "state"), ledger=True
    ),
    # Read from the ledger at scrape time (one collector, cheap indexed queries).
    MetricSpec("orch_queue_depth", Kind.GAUGE, "Jobs per queue and non-terminal state.", ("queue", "state")),
    MetricSpec("orch_oldest_ready_age_seconds", Kind.GAUGE, "Age of the oldest ready (queued) job.", ("queue",)),
    MetricSpec("orch_dead_letter_depth", Kind.GAUGE, "Dead-lettered jobs per tenant.", ("tenant",)),
    MetricSpec(
        "orch_incidents_open",
        Kind.GAUGE,
        "Incidents not resolved yet (open or acknowledged), by kind and severity.",
        ("kind", "severity"),
    ),
    MetricSpec(
        "orch_slo_burn_rate",
        Kind.GAUGE,
        "Error-budget burn rate (error ratio / (1 - target)) from the ledger.",
        ("slo", "window"),
    ),
    # Flow control, read from the ledger at scrape time. A token bucket is shared by every
    # source of one (tenant, upstream host), so bucket series carry the host, not a source.
    MetricSpec(
        "orch_ratelimit_denials_total",
        Kind.COUNTER,
        "Claims refused for want of a token, per tenant and upstream host (buckets.denied_total).",
        ("tenant", "host"),
        ledger=True,
    ),
    MetricSpec(
        "orch_upstream_throttled_total",
        Kind.COUNTER,
        "Upstream 429 answers fed back to the bucket, per tenant and upstream host.",
        ("tenant", "host"),
        ledger=True,
    ),
    MetricSpec("orch_bucket_tokens", Kind.GAUGE, "Tokens in the bucket now (0 while blocked).", ("tenant", "host")),
    MetricSpec("orch_bucket_capacity", Kind.GAUGE, "Bucket capacity (burst).", ("tenant", "host")),
    MetricSpec(
        "orch_bucket_rate",
        Kind.GAUGE,
        "Current (adaptive, AIMD) refill rate of the bucket, tokens per second.",
        ("tenant", "host"),
    ),
    MetricSpec(
        "orch_bucket_base_rate",
        Kind.GAUGE,
        "Configured refill rate of the bucket, tokens per second.",
        ("tenant", "host"),
    ),
    MetricSpec(
        "orch_circuit_state",
        Kind.GAUGE,
        "Circuit breaker of a source: 0 closed, 1 half_open, 2 open.",
        ("tenant", "source"),
    ),
    MetricSpec(
        "orch_circuit_opened_total",
        Kind.COUNTER,
        "Times a source's circuit breaker opened.",
        ("tenant", "source"),
        ledger=True,
    ),
    MetricSpec(
        "orch_quota_active",
        Kind.GAUGE,
        "Slots in use (leased and running jobs) of a tenant's job-type quota.",
        ("tenant", "job_type"),
    ),
    MetricSpec("orch_quota_max_active", Kind.GAUGE, "max_active of a tenant's job-type quota.", ("tenant", "job_type")),
    MetricSpec(
        "orch_jobs_waiting",
        Kind.GAUGE,
        "Throttled jobs per tenant and wait reason (every reason, zero when none wait).",
        ("tenant", "reason"),
    ),
    # Schedules, backfills and watermarks, read from the ledger at scrape time.
    MetricSpec(
        "orch_schedule_ticks_total",
        Kind.COUNTER,
        "Schedule ticks by tenant and status (fired, skipped, buffered, missed, paused; schedule_tick_counters).",
        ("tenant", "status"),
        ledger=True,
    ),
    MetricSpec(
        "orch_backfill_windows",
        Kind.GAUGE,
        "Windows of a backfill by state (planned, running, succeeded, failed, canceled): backfills planned, "
        "running or paused, and those that ended in the last 24 hours.",
        ("tenant", "backfill", "state"),
    ),
    MetricSpec(
        "orch_watermark_lag_seconds",
        Kind.GAUGE,
        'Now minus the watermark of a tenant, source ("-" for none) and job type ("run:<name>" for runs); '
        "watermarks never moved are not exported.",
        ("tenant", "source", "job_type"),
    ),
    # The webhook notifier (worker/runtime/notifier.py), read from its cursor in the ledger at
    # scrape time (zero while no notifier ever ran).
    MetricSpec(
        "orch_webhook_delivered_total",
        Kind.COUNTER,
        "Events the webhook endpoint accepted (2xx).",
        ledger=True,
    ),
    MetricSpec(
        "orch_webhook_failures_total",
        Kind.COUNTER,
        "Failed webhook POSTs by reason (timeout, connection, http_3xx, http_4xx, http_429, http_5xx).",
        ("reason",),
        ledger=True,
    ),
    MetricSpec(
        "orch_webhook_dropped_total",
        Kind.COUNTER,
        "Events the webhook notifier gave up on: refused by the endpoint (a 4xx it does not retry) or pruned "
        "before delivery.",
        ledger=True,
    ),
    MetricSpec("orch_webhook_backlog", Kind.GAUGE, "Events numbered after the webhook notifier's cursor."),
    MetricSpec(
        "orch_webhook_last_success_timestamp_seconds",
        Kind.GAUGE,
        "When the webhook endpoint last accepted an event (Unix time; 0: never).",
    ),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def declared_series() -> frozenset[str]:
    """Every series name a query may use."""
    return frozenset(n for m in METRICS for n in m.series_names())
