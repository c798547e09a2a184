"""Plotly figures of the console, built from core.queries rows (colours from app.labels)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from app import labels
from core.domain.states import TERMINAL

Rows = Sequence[dict[str, Any]]

_LAYOUT: dict[str, Any] = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "height": 320,
    "legend": {"orientation": "h"},
}


def queue_depth(rows: Rows) -> go.Figure:
    """Jobs waiting or running per queue over time (the states of a sample summed)."""
    per_queue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        per_queue[r["queue"]][r["at"]] += int(r["count"])
    fig = go.Figure()
    for queue in sorted(per_queue):
        points = sorted(per_queue[queue].items())
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name=queue))
    fig.update_layout(title="Queue depth per queue", yaxis_title="jobs", **_LAYOUT)
    return fig


def throughput(rows: Rows, bucket_s: int) -> go.Figure:
    """Jobs finished per second (succeeded and dead-lettered, stacked) and the p95 run time."""
    x = [r["bucket"] for r in rows]
    fig = go.Figure()
    for key, state in (("succeeded", "succeeded"), ("dead_lettered", "dead_lettered")):
        fig.add_trace(
            go.Bar(
                x=x,
                y=[int(r[key]) / bucket_s for r in rows],
                name=labels.state_label(state),
                marker_color=labels.STATE_COLOURS[state],
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[r["p95_duration_s"] for r in rows],
            name="p95 run time (s)",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#546e7a"},
        )
    )
    fig.update_layout(
        title="Throughput",
        barmode="stack",
        yaxis={"title": "jobs/s"},
        yaxis2={"title": "p95 s", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        **_LAYOUT,
    )
    return fig


def history_timeline(history: Rows, now: dt.datetime) -> go.Figure:
    """A job's states as bars along time: each state from its history row to the next one
    (to now for the state the job is still in)."""
    fig = go.Figure()
    shown: set[str] = set()
    for i, h in enumerate(history):
        start = dt.datetime.fromisoformat(h["at"])
        if i + 1 < len(history):
            end = dt.datetime.fromisoformat(history[i + 1]["at"])
        elif h["to_state"] in TERMINAL:
            end = start
        else:
            end = now
        state = h["to_state"]
        fig.add_trace(
            go.Bar(
                base=[start.isoformat()],
                x=[max((end - start).total_seconds() * 1000, 1.0)],
                y=[labels.state_label(state)],
                orientation="h",
                name=labels.state_label(state),
                marker_color=labels.STATE_COLOURS.get(state, "#9e9e9e"),
                showlegend=state not in shown,
                hovertext=f"{h['event']} by {h['actor']}" + (f": {h['reason']}" if h.get("reason") else ""),
            )
        )
        shown.add(state)
    fig.update_layout(title="State history", xaxis={"type": "date"}, barmode="overlay", **_LAYOUT)
    return fig


def error_trend(rows: Rows, names: dict[str, str]) -> go.Figure:
    """Failures per cluster per time bucket, stacked; `names` maps a fingerprint to its label."""
    per_cluster: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in rows:
        per_cluster[r["fingerprint"]].append((r["bucket"], int(r["count"])))
    fig = go.Figure()
    for fingerprint, points in sorted(per_cluster.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        fig.add_trace(
            go.Bar(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                name=names.get(fingerprint, fingerprint[:12]),
            )
        )
    fig.update_layout(title="Failures per cluster", barmode="stack", yaxis_title="failures", **_LAYOUT)
    return fig
