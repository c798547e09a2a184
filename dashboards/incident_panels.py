"""The incident panels (Grafana only: the console's incident views read the ledger).
dashboards.panels adds them to PANELS; the "Orch / Errors and SLO" dashboard lays them out."""

from __future__ import annotations

from dashboards.panel_types import CHART, Panel, PanelType, Query

PANELS: tuple[Panel, ...] = (
    Panel(
        key="incidents_open",
        title="Incidents open",
        unit="short",
        description="Incidents the scheduler opened and nobody or nothing has resolved yet, by kind and "
        "severity (orch incidents list); OrchIncidentCritical pages while a critical one is open.",
        type=PanelType.TIMESERIES,
        size=CHART,
        queries=(Query("sum by (kind, severity) (orch_incidents_open) > 0", legend="{{kind}} {{severity}}"),),
        read_model=None,
        figure=None,
    ),
)
