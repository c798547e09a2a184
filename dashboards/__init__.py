"""Every panel of Orch declared once (dashboards.panels): the console draws it from a read model
(dashboards.read_models) with a plotly figure builder (dashboards.figures); Grafana gets the same
panel as PromQL through the generator (dashboards.grafana)."""
