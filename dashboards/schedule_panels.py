"""The panels of schedules, backfills and watermarks, and the "Orch / Schedules and backfills"
dashboard that lays them out. Grafana only: the console draws the same from the ledger on its
Schedules, Backfills and Watermarks pages. dashboards.panels adds these to PANELS and
DASHBOARDS."""

from __future__ import annotations

from dashboards.panel_types import CHART, JOB_TYPE, TENANT, Dashboard, Panel, PanelType, Query, Threshold

#: OrchWatermarkLagHigh fires when a tenant's watermark of a source lags more than this
#: (grafana/prometheus/rules/alerts.yml; tests/dashboards checks that they agree).
WATERMARK_LAG_ALERT_S = 7200

PANELS: tuple[Panel, ...] = (
    # Ledger counters and gauges: every exporter reads the same ledger, so max across instances.
    Panel(
        key="schedule_ticks_fired",
        title="Schedule ticks fired per minute",
        unit="suffix:/min",
        description="Ticks that fired a job or a run, per minute and tenant (orch_schedule_ticks_total, a "
        "running total in the ledger). The console's Schedules page lists each schedule's ticks.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f'max by (tenant) (rate(orch_schedule_ticks_total{{{TENANT}, status="fired"}}[$__rate_interval])) * 60',
                legend="{{tenant}}",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="schedule_ticks_not_fired",
        title="Schedule ticks not fired per minute, by status",
        unit="suffix:/min",
        description="Ticks that fired nothing, per minute, tenant and status: missed (late beyond the catch-up "
        "policy; orch schedules backfill-missed runs them as a backfill), skipped (the overlap policy, or a "
        "firing that failed), buffered (waiting for the previous firing to end) and paused.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                "max by (tenant, status) "
                f'(rate(orch_schedule_ticks_total{{{TENANT}, status!="fired"}}[$__rate_interval])) * 60',
                legend="{{tenant}} {{status}}",
            ),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="backfill_windows",
        title="Backfill progress: windows by state",
        unit="short",
        description="Windows of each backfill by state (planned, running, succeeded, failed, canceled): "
        "backfills planned, running or paused, and those that ended in the last 24 hours. Planned windows "
        "turn into succeeded ones as the scheduler starts them below live work; "
        "orch backfill show ID gives an ETA.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"max by (tenant, backfill, state) (orch_backfill_windows{{{TENANT}}})",
                legend="{{tenant}} #{{backfill}} {{state}}",
            ),
        ),
        read_model=None,
        figure=None,
        stacked=True,
    ),
    Panel(
        key="watermark_lag",
        title="Watermark lag",
        unit="s",
        description="How far each tenant's data of a source (- for none) lags the clock: now minus its "
        "watermark, the worst job type of the source. OrchWatermarkLagHigh opens a ticket when it stays "
        f"above {WATERMARK_LAG_ALERT_S // 3600} hours for 15 minutes. Runs' watermarks (job type run:NAME) "
        "show with every job type selected.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query(
                f"max by (tenant, source) (orch_watermark_lag_seconds{{{TENANT}, {JOB_TYPE}}})",
                legend="{{tenant}} {{source}}",
            ),
        ),
        read_model=None,
        figure=None,
        thresholds=(Threshold(0.0, "ok"), Threshold(float(WATERMARK_LAG_ALERT_S), "warn")),
    ),
)

DASHBOARD = Dashboard(
    uid="orch-schedules",
    title="Orch / Schedules and backfills",
    filename="schedules.json",
    description="Schedule ticks fired and not fired (missed, skipped, buffered, paused), backfill windows by "
    "state, and watermark lag.",
    rows=(
        ("schedule_ticks_fired", "schedule_ticks_not_fired"),
        ("backfill_windows", "watermark_lag"),
    ),
)
