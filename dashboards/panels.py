"""Every panel of Orch, declared once: what it shows, its PromQL for Grafana, and for the console
the read model and the figure builder that draw it from the ledger; and the dashboards
that lay the panels out. dashboards.grafana turns these into grafana/dashboards/*.json.
The declaration types are in dashboards.panel_types (re-exported here); the schedule,
backfill and watermark panels and their dashboard in dashboards.schedule_panels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from core.domain import metrics, slo
from dashboards import figures, incident_panels, schedule_panels, webhook_panels
from dashboards.panel_types import (
    CHART,
    GRID_COLUMNS,
    JOB_TYPE,
    STAT,
    TABLE,
    TENANT,
    WIDE_STAT,
    Dashboard,
    FigureBuilder,
    Panel,
    PanelType,
    Query,
    Size,
    Threshold,
    unit_suffix,
)

__all__ = [
    "BY_KEY",
    "CHART",
    "DASHBOARDS",
    "GRID_COLUMNS",
    "JOB_TYPE",
    "PANELS",
    "STAT",
    "TABLE",
    "TENANT",
    "WIDE_STAT",
    "Dashboard",
    "FigureBuilder",
    "Panel",
    "PanelType",
    "Query",
    "Size",
    "Threshold",
    "draw",
    "panel",
    "unit_suffix",
]

#: The recording rules (grafana/prometheus/rules/recording.yml) that panels read.
BURN_RATE_RECORD = "tenant_job_type:orch_slo_burn_rate:{window}"
ERROR_RATIO_RECORD = "tenant_job_type:orch_slo_error_ratio:rate{window}"

#: Burn-rate colours by the alert thresholds: amber from the ticket alert's 1x, red from the
#: fast page's 14.4x (core.domain.slo.level says the same for the console's tiles).
BURN_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(0.0, slo.level(0.0)),
    Threshold(1.0, slo.level(1.0)),
    Threshold(slo.ALERTS[0][2], slo.level(slo.ALERTS[0][2])),
)


def _burn_rate_queries() -> tuple[Query, ...]:
    return tuple(
        Query(f"max({BURN_RATE_RECORD.format(window=w)}{{{TENANT}, {JOB_TYPE}}})", legend=w) for w in slo.WINDOWS
    )


#: Circuit-breaker states as orch_circuit_state encodes them, coloured from green to red.
CIRCUIT_THRESHOLDS: tuple[Threshold, ...] = tuple(
    Threshold(float(value), level)
    for (state, value), level in zip(metrics.CIRCUIT_STATES.items(), ("ok", "warn", "critical"), strict=True)
)
CIRCUIT_TEXTS: tuple[tuple[float, str], ...] = tuple(
    (float(value), state.replace("_", "-")) for state, value in metrics.CIRCUIT_STATES.items()
)


PANELS: tuple[Panel, ...] = (
    Panel(
        key="jobs_now",
        title="Jobs now",
        unit="short",
        description="Jobs per non-terminal state across queues, and dead-lettered jobs waiting for an operator.",
        type=PanelType.STAT,
        size=WIDE_STAT,
        # Every exporter reads the same ledger: max by, not sum by, across instances.
        queries=(
            Query("sum by (state) (max by (queue, state) (orch_queue_depth))", legend="{{state}}"),
            Query(f"sum(max by (tenant) (orch_dead_letter_depth{{{TENANT}}}))", legend="dead_lettered"),
        ),
        read_model="job_counts",
        figure=figures.job_counts_bar,
    ),
    Panel(
        key="throughput",
        title="Jobs per second",
        unit="ops",
        description="Finished jobs per second by outcome. Grafana counts attempts (retried ones included); "
        "the console counts finished jobs from the ledger.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"sum by (outcome) (rate(orch_jobs_finished_total{{{TENANT}, {JOB_TYPE}}}[$__rate_interval]))",
                legend="{{outcome}}",
            ),
        ),
        read_model="throughput",
        figure=figures.throughput_lines,
    ),
    Panel(
        key="duration_p95",
        title="Job duration p95",
        unit="s",
        description="95th percentile of handler run time per attempt.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(orch_job_duration_seconds_bucket{{{JOB_TYPE}}}[$__rate_interval])))",
                legend="p95",
            ),
        ),
        read_model="throughput",
        figure=figures.duration_p95_line,
    ),
    Panel(
        key="outcomes",
        title="Outcomes",
        unit="short",
        description="How jobs ended in the selected range. Grafana counts attempts by outcome (succeeded, "
        "retried, dead_lettered, canceled, throttled: sent back by an upstream 429); the console counts "
        "finished jobs from the ledger.",
        type=PanelType.BARGAUGE,
        size=CHART,
        queries=(
            Query(
                f"sum by (outcome) (increase(orch_jobs_finished_total{{{TENANT}, {JOB_TYPE}}}[$__range]))",
                legend="{{outcome}}",
            ),
        ),
        read_model="throughput",
        figure=figures.outcomes_bar,
    ),
    Panel(
        key="queue_depth",
        title="Queue depth",
        unit="short",
        description="Jobs per queue and non-terminal state over time.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query("max by (queue, state) (orch_queue_depth)", legend="{{queue}} {{state}}"),),
        read_model="queue_depth",
        figure=figures.queue_depth_lines,
    ),
    Panel(
        key="oldest_ready_age",
        title="Oldest ready job",
        unit="s",
        description="How long the oldest queued job of each queue has waited for a worker; "
        "the OrchReadyJobStuck alert pages after 10 minutes.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query("max by (queue) (orch_oldest_ready_age_seconds)", legend="{{queue}}"),),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="queue_wait_p95",
        title="Queue wait p95",
        unit="s",
        description="95th percentile of the time from ready (queued) to claimed, per queue.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                "histogram_quantile(0.95, sum by (le, queue) "
                f"(rate(orch_job_queue_wait_seconds_bucket{{{JOB_TYPE}}}[$__rate_interval])))",
                legend="{{queue}}",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="submitted",
        title="Submissions per second",
        unit="ops",
        description="Jobs submitted per second, per tenant.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"sum by (tenant) (rate(orch_jobs_submitted_total{{{TENANT}, {JOB_TYPE}}}[$__rate_interval]))",
                legend="{{tenant}}",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="burn_rate",
        title="SLO burn rate",
        unit="suffix:x",
        description="Error-budget burn rate (dead-lettered share / (1 - 99%)) per window, worst tenant and "
        "job type. 1x spends the budget exactly; the alerts fire at 14.4x (1h and 5m), 6x (6h and 30m) "
        "and 1x (3d and 6h).",
        type=PanelType.STAT,
        size=STAT,
        queries=_burn_rate_queries(),
        read_model="burn_rates",
        figure=figures.burn_rate_bars,
        thresholds=BURN_THRESHOLDS,
        decimals=2,
    ),
    Panel(
        key="burn_rate_trend",
        title="SLO burn rate over time",
        unit="suffix:x",
        description="The burn rate of every window over time, worst tenant and job type, with the alert thresholds.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=_burn_rate_queries(),
        read_model=None,
        figure=None,
        thresholds=BURN_THRESHOLDS,
        decimals=2,
    ),
    Panel(
        key="failures_by_class",
        title="Failures by error class",
        unit="short",
        description="Failed attempts in the selected range by error class.",
        type=PanelType.BARGAUGE,
        size=CHART,
        queries=(
            Query(
                f"sum by (error_class) (increase(orch_job_failures_total{{{TENANT}, {JOB_TYPE}}}[$__range]))",
                legend="{{error_class}}",
            ),
        ),
        read_model="error_trend",
        figure=figures.failures_by_class_bar,
    ),
    Panel(
        key="error_trend",
        title="Failures per 5 minutes",
        unit="short",
        description="Failed attempts per 5 minutes: by error class in Grafana, by error cluster "
        "(class and fingerprint) in the console.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"sum by (error_class) (increase(orch_job_failures_total{{{TENANT}, {JOB_TYPE}}}[5m]))",
                legend="{{error_class}}",
            ),
        ),
        read_model="error_trend",
        figure=figures.error_trend_bars,
    ),
    Panel(
        key="error_clusters",
        title="Top error clusters",
        unit="short",
        description="Where jobs fail most in the selected range. Metrics carry no fingerprint (labels stay "
        "bounded), so Grafana groups by error class, tenant and job type; the console lists the "
        "fingerprinted clusters from the ledger.",
        type=PanelType.TABLE,
        size=TABLE,
        queries=(
            Query(
                "sort_desc(sum by (error_class, tenant, job_type) "
                f"(increase(orch_job_failures_total{{{TENANT}, {JOB_TYPE}}}[$__range])) > 0)",
            ),
        ),
        read_model="error_clusters",
        figure=figures.error_clusters_bar,
    ),
    Panel(
        key="dead_letter_depth",
        title="Dead letters",
        unit="short",
        description="Dead-lettered jobs per tenant; the OrchDeadLettersGrowing alert opens a ticket when a "
        "tenant's grow by more than 10 in 30 minutes.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query(f"max by (tenant) (orch_dead_letter_depth{{{TENANT}}})", legend="{{tenant}}"),),
        read_model="job_counts",
        figure=figures.dead_letter_indicator,
    ),
    Panel(
        key="lease_expirations",
        title="Lease expirations per 5 minutes",
        unit="short",
        description="Leases the scheduler reaped because their worker stopped heartbeating (the console "
        "counts failures classed lease_expired).",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query("sum(increase(orch_lease_expirations_total[5m]))", legend="lease expirations"),),
        read_model="error_trend",
        figure=figures.lease_expirations_bar,
    ),
    # Flow control. Every bucket series is per tenant and upstream host (one bucket serves
    # every source of a host); circuits are per source.
    Panel(
        key="bucket_rate",
        title="Refill rate: adaptive vs configured",
        unit="ops",
        description="Refill rate of each token bucket (tenant and upstream host): the adaptive rate, which an "
        "upstream 429 halves and a run of successes raises again, against the configured rate. The console "
        "draws each rate change as a step (hover: why and who).",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(f"max by (tenant, host) (orch_bucket_rate{{{TENANT}}})", legend="{{tenant}} {{host}}"),
            Query(
                f"max by (tenant, host) (orch_bucket_base_rate{{{TENANT}}})", legend="{{tenant}} {{host}} configured"
            ),
        ),
        read_model="bucket_rates",
        figure=figures.bucket_rate_steps,
    ),
    Panel(
        key="bucket_tokens",
        title="Bucket tokens",
        unit="short",
        description="Tokens in each bucket against its capacity (burst); 0 while an upstream's Retry-After "
        "blocks the bucket. Grafana draws them over time; the console shows them now (the ledger keeps no "
        "history of tokens).",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(f"max by (tenant, host) (orch_bucket_tokens{{{TENANT}}})", legend="{{tenant}} {{host}}"),
            Query(f"max by (tenant, host) (orch_bucket_capacity{{{TENANT}}})", legend="{{tenant}} {{host}} capacity"),
        ),
        read_model="buckets",
        figure=figures.bucket_tokens_bars,
    ),
    Panel(
        key="rate_limit_events",
        title="Upstream 429s and admission denials per second",
        unit="ops",
        description="Upstream 429 answers, and claims the token bucket refused, per second and host. The "
        "console counts from the job history every job admission held back, by reason (rate_limited, quota, "
        "paused, blackout, circuit_open); in Grafana the other reasons show in Jobs waiting by reason. "
        "OrchSustainedThrottling opens a ticket after 15 minutes of 429s.",
        type=PanelType.TIMESERIES,
        size=CHART,
        # Ledger counters: every exporter reads the same totals, so max across instances.
        queries=(
            Query(
                "sum by (host) (max by (tenant, host) "
                f"(rate(orch_upstream_throttled_total{{{TENANT}}}[$__rate_interval])))",
                legend="429 {{host}}",
            ),
            Query(
                "sum by (host) (max by (tenant, host) "
                f"(rate(orch_ratelimit_denials_total{{{TENANT}}}[$__rate_interval])))",
                legend="no token {{host}}",
            ),
        ),
        read_model="rate_limit_events",
        figure=figures.rate_limit_bars,
    ),
    Panel(
        key="circuit_state",
        title="Circuit breakers",
        unit="short",
        description="Each source's circuit breaker now: closed (jobs go), half-open (a few probe jobs go "
        "after the cooldown) or open (jobs wait as circuit_open). OrchCircuitOpen pages when one has not "
        "closed for 5 minutes.",
        type=PanelType.STAT,
        size=STAT,
        queries=(Query(f"max by (tenant, source) (orch_circuit_state{{{TENANT}}})", legend="{{tenant}} {{source}}"),),
        read_model="sources",
        figure=figures.circuit_state_dots,
        thresholds=CIRCUIT_THRESHOLDS,
        decimals=0,
        value_texts=CIRCUIT_TEXTS,
    ),
    Panel(
        key="circuit_openings",
        title="Circuit openings",
        unit="short",
        description="Times each source's circuit opened in the selected range (the console's Sources page "
        "shows the total since the source was added).",
        type=PanelType.BARGAUGE,
        size=STAT,
        queries=(
            Query(
                f"sort_desc(max by (tenant, source) (increase(orch_circuit_opened_total{{{TENANT}}}[$__range])))",
                legend="{{tenant}} {{source}}",
            ),
        ),
        read_model=None,
        figure=None,
        decimals=0,
    ),
    Panel(
        key="quota_slots",
        title="Quota slots in use vs max",
        unit="short",
        description="Leased and running jobs of each tenant's job-type quota against its max_active; jobs "
        "beyond it wait as quota.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"max by (tenant, job_type) (orch_quota_active{{{TENANT}, {JOB_TYPE}}})",
                legend="{{tenant}} {{job_type}} in use",
            ),
            Query(
                f"max by (tenant, job_type) (orch_quota_max_active{{{TENANT}, {JOB_TYPE}}})",
                legend="{{tenant}} {{job_type}} max",
            ),
        ),
        read_model="quotas",
        figure=figures.quota_slots_bars,
    ),
    Panel(
        key="jobs_waiting",
        title="Jobs waiting by reason",
        unit="short",
        description="Throttled jobs by why they wait: rate_limited (no token yet), quota (no free slot), "
        "paused, blackout, circuit_open, backpressure (tenant backlog over its limit). "
        "OrchRateLimitedBacklogGrowing opens a ticket when rate-limited jobs keep growing.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(f"sum by (reason) (max by (tenant, reason) (orch_jobs_waiting{{{TENANT}}}))", legend="{{reason}}"),
        ),
        read_model="waiting",
        figure=figures.waiting_bars,
        stacked=True,
    ),
    # DAG runs. The console draws runs from the ledger on its Runs page (table, DAG, Gantt)
    # and Overview; these are Grafana's view of the same, over time.
    Panel(
        key="runs_finished",
        title="Runs finished per 5 minutes, by state",
        unit="short",
        description="DAG runs that ended (succeeded, failed, canceled). A run fails when any job without "
        "allow_failure failed, wherever it sits in the DAG; the console's Runs page lists them.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query(f"sum by (state) (increase(orch_runs_finished_total{{{TENANT}}}[5m]))", legend="{{state}}"),),
        read_model=None,
        figure=None,
        stacked=True,
    ),
    Panel(
        key="run_duration_p95",
        title="Run duration p95",
        unit="s",
        description="95th percentile of the time from a run's start to its end, by the state it ended in "
        "(observed by the scheduler as runs end).",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                "histogram_quantile(0.95, sum by (le, state) "
                "(rate(orch_run_duration_seconds_bucket[$__rate_interval])))",
                legend="{{state}}",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="dag_release_p95",
        title="Parent-to-child release latency (p50, p99)",
        unit="s",
        description="From the end of a job's last parent to the job's claim by a worker: the DAG hop. The "
        "release itself happens in the parent's finishing transaction; the rest is the doorbell and the claim.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                "histogram_quantile(0.5, sum by (le) (rate(orch_dag_release_seconds_bucket[$__rate_interval])))",
                legend="p50",
            ),
            Query(
                "histogram_quantile(0.99, sum by (le) (rate(orch_dag_release_seconds_bucket[$__rate_interval])))",
                legend="p99",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    *incident_panels.PANELS,
    *webhook_panels.PANELS,
    *schedule_panels.PANELS,
)

BY_KEY: dict[str, Panel] = {p.key: p for p in PANELS}

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        uid="orch-overview",
        title="Orch / Overview",
        filename="overview.json",
        description="Jobs now, throughput, burn rate and the largest error clusters.",
        rows=(
            ("jobs_now",),
            ("burn_rate", "outcomes"),
            ("throughput", "duration_p95"),
            ("queue_depth", "failures_by_class"),
            ("error_clusters",),
        ),
    ),
    Dashboard(
        uid="orch-queues",
        title="Orch / Queues and throughput",
        filename="queues.json",
        description="Queue depth, waits, submissions, throughput and lease expirations.",
        rows=(
            ("queue_depth", "oldest_ready_age"),
            ("throughput", "submitted"),
            ("duration_p95", "queue_wait_p95"),
            ("outcomes", "lease_expirations"),
            ("jobs_waiting", "rate_limit_events"),
        ),
    ),
    Dashboard(
        uid="orch-errors-slo",
        title="Orch / Errors and SLO",
        filename="errors-slo.json",
        description="Error-budget burn per window, failures by class and cluster, dead letters.",
        rows=(
            ("burn_rate", "burn_rate_trend"),
            ("failures_by_class", "error_trend"),
            ("dead_letter_depth", "lease_expirations"),
            ("error_clusters",),
            ("incidents_open",),
            ("webhook_deliveries", "webhook_backlog"),
        ),
    ),
    Dashboard(
        uid="orch-flow-control",
        title="Orch / Flow control",
        filename="flow-control.json",
        description="Token buckets (adaptive and configured rate, tokens), upstream 429s and denials, circuit "
        "breakers, quota slots and why jobs wait.",
        rows=(
            ("circuit_state", "circuit_openings"),
            ("bucket_rate", "bucket_tokens"),
            ("rate_limit_events", "jobs_waiting"),
            ("quota_slots", "queue_depth"),
        ),
    ),
    Dashboard(
        uid="orch-runs",
        title="Orch / DAG runs",
        filename="runs.json",
        description="DAG runs ended by state, their duration, and how fast a parent's end releases its children.",
        rows=(
            ("runs_finished", "run_duration_p95"),
            ("dag_release_p95", "queue_wait_p95"),
        ),
    ),
    schedule_panels.DASHBOARD,
)


def draw(p: Panel, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """The console's figure of panel `p` from its read model's rows: the panel's figure
    builder, titled with the panel's title, the value axis suffixed by the panel's unit (the
    x axis of horizontal bars, else the y axis). ValueError for a panel only Grafana draws."""
    if p.figure is None:
        raise ValueError(f"panel {p.key} has no console figure: only Prometheus has its numbers")
    fig = p.figure(rows)
    fig.update_layout(title={"text": p.title})
    suffix = unit_suffix(p.unit)
    if suffix:
        horizontal = bool(fig.data) and all(getattr(t, "orientation", None) == "h" for t in fig.data)
        if horizontal:
            fig.update_xaxes(ticksuffix=suffix)
        else:
            fig.update_yaxes(ticksuffix=suffix)
    return fig


def panel(key: str) -> Panel:
    """The panel declared under `key`; KeyError names the keys there are."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"no panel {key!r}; one of: {', '.join(sorted(BY_KEY))}") from None
