"""The webhook notifier's panels (Grafana only: the console's Incidents page reads the
notifier's cursor from the ledger). dashboards.panels adds them to PANELS; the "Orch / Errors
and SLO" dashboard lays them out. Every exporter reads the same cursor from the ledger, so
series are `max`ed across instances."""

from __future__ import annotations

from dashboards.panel_types import CHART, Panel, PanelType, Query

PANELS: tuple[Panel, ...] = (
    Panel(
        key="webhook_deliveries",
        title="Webhook deliveries",
        unit="ops",
        description="Events the webhook endpoint (ORCH_WEBHOOK_URL) accepted per second, failed POSTs by "
        "reason (5xx, 429, timeouts and connection errors are retried with back-off) and events given up on "
        "(a 4xx the notifier does not retry, or pruned before delivery).",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query("max(rate(orch_webhook_delivered_total[$__rate_interval]))", legend="delivered"),
            Query(
                "max by (reason) (rate(orch_webhook_failures_total[$__rate_interval])) > 0",
                legend="failed: {{reason}}",
            ),
            Query("max(rate(orch_webhook_dropped_total[$__rate_interval])) > 0", legend="dropped"),
        ),
        read_model=None,
        figure=None,
    ),
    Panel(
        key="webhook_backlog",
        title="Webhook backlog",
        unit="short",
        description="Events numbered after the webhook notifier's cursor (waiting to be posted), and the seconds "
        "since the endpoint last accepted one: a backlog that grows while that age climbs is an endpoint "
        "that is down or refusing the signature.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(
            Query("max(orch_webhook_backlog)", legend="backlog"),
            Query(
                "time() - max(orch_webhook_last_success_timestamp_seconds > 0)",
                legend="seconds since the last delivery",
            ),
        ),
        read_model=None,
        figure=None,
    ),
)
