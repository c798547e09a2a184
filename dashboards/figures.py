"""Plotly figure builders of the console's panels: rows of a read model in, a figure out.
Pure: no I/O, no clock; the same rows always give the same figure."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.basedatatypes import BaseTraceType

from core.domain import slo, states
from core.domain.failures import ErrorClass

Rows = Sequence[Mapping[str, Any]]

#: Colours of the burn-rate levels of core.domain.slo.level; the Grafana thresholds use them too.
LEVEL_COLORS: dict[str, str] = {"ok": "#2e7d32", "warn": "#f9a825", "critical": "#c62828"}
#: States shown as "now": everything still moving, plus the dead letters waiting for an operator.
NOW_STATES: tuple[str, ...] = tuple(
    s.value for s in states.State if s not in states.TERMINAL or s == states.State.DEAD_LETTERED
)
#: Clusters drawn on their own in the error trend; the rest are summed as "other".
TREND_CLUSTERS = 8
#: Characters of a cluster's normalised message shown as its label.
LABEL_CHARS = 60


def _time(value: str) -> dt.datetime:
    """An ISO-8601 timestamp as naive UTC: plotly.js ignores offsets, so the axes say UTC."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _figure(traces: Sequence[BaseTraceType], *, y_title: str, x_title: str = "") -> go.Figure:
    fig = go.Figure(data=list(traces))
    fig.update_layout(
        margin={"l": 48, "r": 16, "t": 24, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        hovermode="x unified",
        xaxis_title=x_title,
        yaxis_title=y_title,
    )
    return fig


def _no_data(message: str = "No data in this range") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(margin={"l": 16, "r": 16, "t": 24, "b": 16})
    return fig


def job_counts_bar(rows: Rows) -> go.Figure:
    """Jobs per state now (read model job_counts), non-terminal states and dead letters."""
    counts = {str(r["state"]): int(r["count"]) for r in rows}
    if not counts:
        return _no_data()
    shown = [s for s in NOW_STATES if s in counts]
    bar = go.Bar(x=shown, y=[counts[s] for s in shown], text=[counts[s] for s in shown], name="jobs")
    return _figure([bar], y_title="jobs")


def dead_letter_indicator(rows: Rows) -> go.Figure:
    """The number of dead-lettered jobs now (read model job_counts)."""
    counts = {str(r["state"]): int(r["count"]) for r in rows}
    if states.State.DEAD_LETTERED.value not in counts:
        return _no_data()
    fig = go.Figure(go.Indicator(mode="number", value=counts[states.State.DEAD_LETTERED.value]))
    fig.update_layout(margin={"l": 16, "r": 16, "t": 24, "b": 16})
    return fig


def throughput_lines(rows: Rows) -> go.Figure:
    """Finished, succeeded and dead-lettered jobs per second (read model throughput)."""
    if not rows:
        return _no_data()
    x = [_time(r["bucket"]) for r in rows]
    traces = [
        go.Scatter(x=x, y=[r[key] / r["bucket_s"] for r in rows], mode="lines", name=key)
        for key in ("finished", "succeeded", "dead_lettered")
    ]
    return _figure(traces, y_title="jobs/s", x_title="UTC")


def duration_p95_line(rows: Rows) -> go.Figure:
    """95th percentile of job duration per bucket (read model throughput); gaps where nothing
    finished."""
    if not rows:
        return _no_data()
    x = [_time(r["bucket"]) for r in rows]
    line = go.Scatter(x=x, y=[r["p95_duration_s"] for r in rows], mode="lines", name="p95", connectgaps=False)
    return _figure([line], y_title="seconds", x_title="UTC")


def outcomes_bar(rows: Rows) -> go.Figure:
    """Finished jobs in the range by outcome (read model throughput)."""
    if not rows:
        return _no_data()
    keys = ("succeeded", "dead_lettered")
    totals = [sum(int(r[key]) for r in rows) for key in keys]
    return _figure([go.Bar(x=list(keys), y=totals, text=totals, name="jobs")], y_title="jobs")


def queue_depth_lines(rows: Rows) -> go.Figure:
    """Jobs per queue and state over time (read model queue_depth), one line each."""
    if not rows:
        return _no_data()
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(str(r["queue"]), str(r["state"]))].append(r)
    traces: list[BaseTraceType] = []
    for (queue, state), points in sorted(series.items()):
        points = sorted(points, key=lambda p: _time(p["at"]))
        traces.append(
            go.Scatter(
                x=[_time(p["at"]) for p in points],
                y=[int(p["count"]) for p in points],
                mode="lines",
                name=f"{queue} {state}",
            )
        )
    return _figure(traces, y_title="jobs", x_title="UTC")


def burn_rate_bars(rows: Rows) -> go.Figure:
    """The worst burn rate per SLO window (read model burn_rates), coloured by the alert level,
    with the multi-window alert thresholds drawn across."""
    worst: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        window = str(r["window"])
        if window not in worst or float(r["burn_rate"]) > float(worst[window]["burn_rate"]):
            worst[window] = r
    windows = [w for w in slo.WINDOWS if w in worst]
    if not windows:
        return _no_data()
    rates = [float(worst[w]["burn_rate"]) for w in windows]
    bar = go.Bar(
        x=windows,
        y=rates,
        text=[f"{rate:.1f}x" for rate in rates],
        marker_color=[LEVEL_COLORS[slo.level(rate)] for rate in rates],
        customdata=[[worst[w]["tenant"], worst[w]["job_type"], worst[w]["failed"], worst[w]["total"]] for w in windows],
        hovertemplate="%{x}: %{y:.2f}x<br>%{customdata[0]}/%{customdata[1]}: "
        "%{customdata[2]} of %{customdata[3]} failed<extra></extra>",
        name="burn rate",
    )
    fig = _figure([bar], y_title="burn rate (x budget)", x_title="window")
    for threshold in sorted({t for _, _, t, _ in slo.ALERTS}):
        fig.add_hline(y=threshold, line_dash="dash", line_color=LEVEL_COLORS[slo.level(threshold)])
    return fig


def _cluster_label(r: Mapping[str, Any]) -> str:
    message = str(r["message"])
    if len(message) > LABEL_CHARS:
        message = message[: LABEL_CHARS - 1] + "…"
    return f"{r['error_class']}: {message}"


def error_clusters_bar(rows: Rows) -> go.Figure:
    """The largest error clusters (read model error_clusters), largest on top."""
    if not rows:
        return _no_data("No failures in this range")
    ordered = sorted(rows, key=lambda r: (-int(r["count"]), str(r["fingerprint"])))[::-1]
    bar = go.Bar(
        x=[int(r["count"]) for r in ordered],
        y=[_cluster_label(r) for r in ordered],
        orientation="h",
        customdata=[[r["fingerprint"], r["last_seen"], ", ".join(r["job_types"])] for r in ordered],
        hovertemplate="%{x} failures<br>fingerprint %{customdata[0]}<br>last %{customdata[1]}"
        "<br>%{customdata[2]}<extra></extra>",
        name="failures",
    )
    fig = _figure([bar], y_title="", x_title="failures")
    fig.update_layout(hovermode="closest")
    return fig


def error_trend_bars(rows: Rows) -> go.Figure:
    """Failures per 5 minutes stacked by cluster (read model error_trend): the largest clusters
    on their own, the rest as "other"."""
    if not rows:
        return _no_data("No failures in this range")
    totals: dict[str, int] = defaultdict(int)
    classes: dict[str, str] = {}
    for r in rows:
        totals[str(r["fingerprint"])] += int(r["count"])
        classes[str(r["fingerprint"])] = str(r["error_class"])
    top = sorted(totals, key=lambda fp: (-totals[fp], fp))[:TREND_CLUSTERS]
    series: dict[str, dict[dt.datetime, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        fp = str(r["fingerprint"])
        name = f"{classes[fp]} {fp[:8]}" if fp in top else "other"
        series[name][_time(r["bucket"])] += int(r["count"])
    names = [f"{classes[fp]} {fp[:8]}" for fp in top] + (["other"] if "other" in series else [])
    traces = [
        go.Bar(x=sorted(series[name]), y=[series[name][t] for t in sorted(series[name])], name=name) for name in names
    ]
    fig = _figure(traces, y_title="failures per 5 min", x_title="UTC")
    fig.update_layout(barmode="stack")
    return fig


def failures_by_class_bar(rows: Rows) -> go.Figure:
    """Failures in the range by error class (read model error_trend), largest on top."""
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        totals[str(r["error_class"])] += int(r["count"])
    if not totals:
        return _no_data("No failures in this range")
    ordered = sorted(totals, key=lambda c: (totals[c], c))
    bar = go.Bar(x=[totals[c] for c in ordered], y=ordered, orientation="h", name="failures")
    fig = _figure([bar], y_title="", x_title="failures")
    fig.update_layout(hovermode="closest")
    return fig


def lease_expirations_bar(rows: Rows) -> go.Figure:
    """Failures classed lease_expired per 5 minutes (read model error_trend): attempts whose
    worker stopped heartbeating."""
    per_bucket: dict[dt.datetime, int] = defaultdict(int)
    for r in rows:
        if r["error_class"] == ErrorClass.LEASE_EXPIRED.value:
            per_bucket[_time(r["bucket"])] += int(r["count"])
    if not per_bucket:
        return _no_data("No lease expired in this range")
    x = sorted(per_bucket)
    bar = go.Bar(x=x, y=[per_bucket[t] for t in x], name="lease expirations")
    return _figure([bar], y_title="per 5 min", x_title="UTC")


# -- flow control ------------------------------------------------------------------------

#: Order of the kinds of rate-limit events: what the upstream said, then why Orch held jobs
#: back, in the order admission checks (core.queries.WAIT_REASONS).
EVENT_KINDS: tuple[str, ...] = ("upstream_429", "paused", "blackout", "circuit_open", "quota", "rate_limited")
#: Circuit-breaker states from good to bad, coloured like the burn-rate levels.
CIRCUIT_STATES: tuple[str, ...] = ("closed", "half_open", "open")
CIRCUIT_COLORS: dict[str, str] = {
    "closed": LEVEL_COLORS["ok"],
    "half_open": LEVEL_COLORS["warn"],
    "open": LEVEL_COLORS["critical"],
}
#: The configured-rate line and the capacity bars, behind the numbers they frame.
FRAME_COLOR = "#9e9e9e"


def _bucket_label(r: Mapping[str, Any]) -> str:
    return f"{r['tenant']} {r['host']}"


def bucket_rate_steps(rows: Rows) -> go.Figure:
    """Refill rate of each bucket over time (read model bucket_rates): the adaptive rate as a
    step line (each step a rate change, hover says why and who), the configured rate now as
    a dashed line."""
    if not rows:
        return _no_data("No token bucket")
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(str(r["tenant"]), str(r["host"]))].append(r)
    traces: list[BaseTraceType] = []
    for (tenant, host), points in sorted(series.items()):
        x = [_time(p["at"]) for p in points]
        label = f"{tenant} {host}"
        traces.append(
            go.Scatter(
                x=x,
                y=[float(p["rate"]) for p in points],
                mode="lines+markers",
                line_shape="hv",
                name=label,
                customdata=[[p["reason"] or "", p["actor"] or ""] for p in points],
                hovertemplate="%{y:.3g}/s<br>%{customdata[0]}<br>%{customdata[1]}<extra>" + label + "</extra>",
            )
        )
        base = float(points[-1]["base_rate"])
        traces.append(
            go.Scatter(
                x=[x[0], x[-1]],
                y=[base, base],
                mode="lines",
                line={"dash": "dash", "color": FRAME_COLOR},
                name=f"{label} configured",
            )
        )
    return _figure(traces, y_title="tokens/s", x_title="UTC")


def bucket_tokens_bars(rows: Rows) -> go.Figure:
    """Tokens in each bucket now against its capacity (read model buckets)."""
    if not rows:
        return _no_data("No token bucket")
    ordered = sorted(rows, key=_bucket_label, reverse=True)
    labels = [_bucket_label(r) for r in ordered]
    capacity = go.Bar(
        x=[float(r["capacity"]) for r in ordered],
        y=labels,
        orientation="h",
        name="capacity",
        marker_color=FRAME_COLOR,
        opacity=0.35,
    )
    tokens = go.Bar(
        x=[float(r["tokens"]) for r in ordered],
        y=labels,
        orientation="h",
        name="tokens",
        text=[
            f"blocked until {r['blocked_until']}"
            if r["blocked_until"]
            else f"{float(r['tokens']):.1f} of {r['capacity']:g}"
            for r in ordered
        ],
    )
    fig = _figure([capacity, tokens], y_title="", x_title="tokens")
    fig.update_layout(barmode="overlay", hovermode="closest")
    return fig


def rate_limit_bars(rows: Rows) -> go.Figure:
    """Upstream 429s and jobs held back by admission per second, stacked by kind (read model
    rate_limit_events)."""
    if not rows:
        return _no_data("No rate limiting in this range")
    series: dict[str, dict[dt.datetime, float]] = defaultdict(dict)
    for r in rows:
        series[str(r["kind"])][_time(r["at"])] = int(r["count"]) / int(r["step_s"])
    kinds = [k for k in EVENT_KINDS if k in series] + sorted(set(series) - set(EVENT_KINDS))
    traces = [
        go.Bar(x=sorted(series[k]), y=[series[k][t] for t in sorted(series[k])], name=k.replace("_", " "))
        for k in kinds
    ]
    fig = _figure(traces, y_title="jobs/s", x_title="UTC")
    fig.update_layout(barmode="stack")
    return fig


def circuit_state_dots(rows: Rows) -> go.Figure:
    """Each source's circuit breaker now (read model sources): closed, half-open or open."""
    if not rows:
        return _no_data("No source")
    ordered = sorted(rows, key=lambda r: (str(r["tenant"]), str(r["name"])))
    states_now = [str(r["circuit_state"]) for r in ordered]
    dots = go.Scatter(
        x=[f"{r['tenant']} {r['name']}" for r in ordered],
        y=states_now,
        mode="markers",
        marker={"size": 16, "color": [CIRCUIT_COLORS.get(s, FRAME_COLOR) for s in states_now]},
        customdata=[[r["circuit_failures"], r["circuit_outcomes"], r["opened_total"]] for r in ordered],
        hovertemplate="%{x}: %{y}<br>%{customdata[0]} of the last %{customdata[1]} outcomes failed"
        "<br>opened %{customdata[2]} times<extra></extra>",
        name="circuit",
    )
    fig = _figure([dots], y_title="", x_title="source")
    fig.update_yaxes(categoryorder="array", categoryarray=list(CIRCUIT_STATES), range=[-0.5, len(CIRCUIT_STATES) - 0.5])
    fig.update_layout(hovermode="closest")
    return fig


def quota_slots_bars(rows: Rows) -> go.Figure:
    """Slots in use against max_active per tenant and job type (read model quotas)."""
    if not rows:
        return _no_data("No quota")
    ordered = sorted(rows, key=lambda r: (str(r["tenant"]), str(r["job_type"])), reverse=True)
    labels = [f"{r['tenant']} {r['job_type']}" for r in ordered]
    traces = [
        go.Bar(x=[int(r["active"]) for r in ordered], y=labels, orientation="h", name="in use"),
        go.Bar(
            x=[r["max_active"] for r in ordered],
            y=labels,
            orientation="h",
            name="max active",
            marker_color=FRAME_COLOR,
        ),
    ]
    fig = _figure(traces, y_title="", x_title="slots")
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def waiting_bars(rows: Rows) -> go.Figure:
    """Throttled jobs now by wait reason (read model waiting), every reason."""
    if not rows:
        return _no_data("No jobs wait")
    reasons = [str(r["reason"]) for r in rows]
    counts = [int(r["count"]) for r in rows]
    bar = go.Bar(x=[r.replace("_", " ") for r in reasons], y=counts, text=counts, name="jobs waiting")
    return _figure([bar], y_title="jobs", x_title="wait reason")
