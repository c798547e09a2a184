"""Console-only figures, with no panel (and no Grafana twin) in dashboards/: a single job's
state history; and whether a figure has anything to draw. Every chart that has a panel is
drawn by dashboards.panels.draw."""

from __future__ import annotations

import datetime as dt
import math
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


def _shown(value: Any) -> bool:
    """Whether one value of a trace draws something: a number other than 0 (or NaN), a
    category, a time; not a missing value."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0 and not math.isnan(value)
    return True


def has_data(fig: go.Figure) -> bool:
    """Whether `fig` draws anything: a trace with a value on its value axis (x for horizontal
    bars, else y) that is not missing or zero. A figure without traces (the "no data"
    annotation of dashboards.figures) or with only zeros (bars of nothing waiting) has none:
    plotly would draw a bare -1..1 axis."""
    for trace in fig.data:
        if trace.type == "indicator":
            if trace.value is not None:
                return True
            continue
        values = trace.x if getattr(trace, "orientation", None) == "h" else trace.y
        if values is not None and any(_shown(v) for v in values):
            return True
    return False


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
