"""The Gantt timeline of a DAG run (the Runs page), from core.queries.run_timeline with no
Streamlit: one row per job, its segments coloured by what it was doing (waiting with the
reason, running, retry back-off), its slack, and the critical path marked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from app import dag_view, labels

#: The Gantt draws at most this many rows (those on or nearest the critical path first).
GANTT_ROWS = 300

#: Gantt segment kinds (core.domain.dag.SEGMENT_KINDS values) -> colour, in legend order.
SEGMENT_COLOURS: dict[str, str] = {
    "waiting for parents": "#cfd8dc",
    "waiting for a worker": "#90caf9",
    "throttled": "#ffb300",
    "starting": "#7e57c2",
    "running": "#1e88e5",
    "retry back-off": "#fb8c00",
}
SLACK_COLOUR = "rgba(213, 0, 249, 0.25)"


def _at(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _plot_time(at: dt.datetime) -> str:
    """Plotly reads no zone from a date: UTC, written without one."""
    return at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


def _span(job: Mapping[str, Any]) -> float:
    segs = job["segments"]
    if not segs:
        return 0.0
    return (_at(segs[-1]["end"]) - _at(segs[0]["start"])).total_seconds()


def gantt_rows(jobs: Sequence[Mapping[str, Any]], limit: int = GANTT_ROWS) -> tuple[list[Mapping[str, Any]], int]:
    """The rows the Gantt draws, in the order it draws them (by when each was ready to run,
    then key), and how many it leaves out: over `limit` jobs, those on the critical path,
    then those with least slack, then the longest."""
    chosen = list(jobs)
    if len(chosen) > limit:
        chosen = sorted(chosen, key=lambda j: (not j["critical"], j["slack_s"], -_span(j), str(j["key"])))[:limit]
    chosen.sort(key=lambda j: (_ready(j), str(j["key"])))
    return chosen, len(jobs) - len(chosen)


def _ready(job: Mapping[str, Any]) -> dt.datetime:
    """When a job stopped waiting for its parents (the start of its first other segment); for
    one that never did, when its wait ended (its parents decided it would not run)."""
    segs = job["segments"]
    if not segs:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    first = next((s for s in segs if s["kind"] != "waiting for parents"), None)
    return _at(first["start"]) if first is not None else _at(segs[-1]["end"])


def _segment_hover(job: Mapping[str, Any], seg: Mapping[str, Any], parents: Mapping[Any, Sequence[Any]]) -> str:
    start, end = _at(seg["start"]), _at(seg["end"])
    lines = [f"<b>{job['key']}</b> (job {job['id']}): {seg['kind']}"]
    if seg["kind"] == "throttled" and seg.get("reason"):
        lines.append(labels.WAIT_REASONS.get(seg["reason"], seg["reason"]))
    if seg["kind"] == "waiting for parents" and parents.get(job["key"]):
        lines.append("parents: " + ", ".join(str(p) for p in parents[job["key"]][:8]))
    if seg.get("attempt"):
        lines.append(f"attempt {seg['attempt']}")
    lines.append(f"{labels.utc(start)} → {labels.utc(end)} UTC ({dag_view.seconds((end - start).total_seconds())})")
    return "<br>".join(lines)


@dataclass
class GanttDrawing:
    figure: go.Figure
    #: The keys drawn, top to bottom.
    keys: list[Any]
    #: Jobs of the run left out (over the row limit).
    omitted: int


def gantt_figure(
    timeline: Mapping[str, Any],
    *,
    now: dt.datetime,
    parents: Mapping[Any, Sequence[Any]] | None = None,
    limit: int = GANTT_ROWS,
) -> GanttDrawing:
    """run_timeline's jobs as a Gantt: one row per job, a bar per segment coloured by kind
    (one trace per kind; a job still going has its open segment up to now), a thin bar of
    slack after each job's end, a mark of how each ended job ended, the critical path's rows
    in bold and outlined (trace "critical path"), and a line at `now` while the run runs."""
    parents = parents or {}
    rows, omitted = gantt_rows(timeline["jobs"], limit)
    keys = [j["key"] for j in rows]
    starts = [_at(s["start"]) for j in rows for s in j["segments"]]
    ends = [_at(s["end"]) for j in rows for s in j["segments"]]
    span_ms = ((max(ends) - min(starts)).total_seconds() * 1000) if starts else 0.0
    #: The shortest bar drawn, so an instant (a start, an immediate failure) stays visible.
    least_ms = max(span_ms / 400, 1.0)
    fig = go.Figure()
    by_kind: dict[str, dict[str, list[Any]]] = {k: {"base": [], "x": [], "y": [], "hover": []} for k in SEGMENT_COLOURS}
    for job in rows:
        for seg in job["segments"]:
            kind = seg["kind"] if seg["kind"] in by_kind else "running"
            start, end = _at(seg["start"]), _at(seg["end"])
            b = by_kind[kind]
            b["base"].append(_plot_time(start))
            b["x"].append(max((end - start).total_seconds() * 1000, least_ms))
            b["y"].append(job["key"])
            b["hover"].append(_segment_hover(job, seg, parents))
    for kind, b in by_kind.items():
        if not b["x"]:
            continue
        fig.add_trace(
            go.Bar(
                base=b["base"],
                x=b["x"],
                y=b["y"],
                orientation="h",
                name=kind,
                marker={"color": SEGMENT_COLOURS[kind], "line": {"width": 0}},
                hovertext=b["hover"],
                hoverinfo="text",
                width=0.7,
            )
        )
    slack: dict[str, list[Any]] = {"base": [], "x": [], "y": [], "hover": []}
    marks: dict[str, list[Any]] = {"x": [], "y": [], "colour": [], "symbol": [], "hover": []}
    for job in rows:
        if not job["segments"]:
            continue
        end = _at(job["segments"][-1]["end"])
        if job["slack_s"] > 0:
            slack["base"].append(_plot_time(end))
            slack["x"].append(max(job["slack_s"] * 1000, least_ms))
            slack["y"].append(job["key"])
            slack["hover"].append(
                f"<b>{job['key']}</b>: slack {dag_view.seconds(job['slack_s'])} (could end that much later)"
            )
        if job["state"] in dag_view.ENDED:
            marks["x"].append(_plot_time(end))
            marks["y"].append(job["key"])
            marks["colour"].append(dag_view.state_colour(job["state"]))
            marks["symbol"].append("x" if job["state"] in dag_view.FAILED_END else "circle")
            marks["hover"].append(f"<b>{job['key']}</b>: {labels.state_label(job['state'])} at {labels.utc(end)} UTC")
    if slack["x"]:
        fig.add_trace(
            go.Bar(
                base=slack["base"],
                x=slack["x"],
                y=slack["y"],
                orientation="h",
                name="slack",
                marker={"color": SLACK_COLOUR},
                hovertext=slack["hover"],
                hoverinfo="text",
                width=0.25,
            )
        )
    if marks["x"]:
        fig.add_trace(
            go.Scatter(
                x=marks["x"],
                y=marks["y"],
                mode="markers",
                name="ended",
                marker={"color": marks["colour"], "symbol": marks["symbol"], "size": 9, "line": {"width": 0}},
                hovertext=marks["hover"],
                hoverinfo="text",
                showlegend=False,
            )
        )
    path_rows = [j for j in rows if j["critical"] and j["segments"]]
    if path_rows:
        # The critical path's rows outlined from the job's first segment to its last.
        fig.add_trace(
            go.Bar(
                base=[_plot_time(_at(j["segments"][0]["start"])) for j in path_rows],
                x=[max(_span(j) * 1000, least_ms) for j in path_rows],
                y=[j["key"] for j in path_rows],
                orientation="h",
                name="critical path",
                marker={"color": "rgba(0,0,0,0)", "line": {"color": dag_view.CRITICAL, "width": 2.5}},
                hoverinfo="skip",
                width=0.86,
            )
        )
    run = timeline.get("run", {})
    if run.get("state") == "running":
        fig.add_shape(
            type="line",
            xref="x",
            yref="paper",
            x0=_plot_time(now),
            x1=_plot_time(now),
            y0=0,
            y1=1,
            line={"color": "#546e7a", "dash": "dot", "width": 1},
        )
    critical = {j["key"] for j in rows if j["critical"]}
    row_px = max(12, min(28, 900 // max(len(rows), 1)))
    fig.update_layout(
        title={"text": "Timeline (UTC)", "font": {"size": 15}},
        barmode="overlay",
        height=int(130 + row_px * max(len(rows), 3)),
        margin={"l": 10, "r": 10, "t": 50, "b": 30},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        plot_bgcolor="#ffffff",
        hovermode="closest",
        bargap=0.2,
        xaxis={"type": "date", "showgrid": True, "gridcolor": "#eceff1"},
        yaxis={
            "type": "category",
            "categoryorder": "array",
            "categoryarray": keys,
            # Top to bottom, exactly the rows (autorange would pad for the end marks).
            "range": [len(keys) - 0.5, -0.5],
            "tickvals": keys,
            "ticktext": [f"<b>{k}</b>" if k in critical else str(k) for k in keys],
            "tickfont": {"size": 11 if row_px >= 16 else 9},
            "automargin": True,
        },
    )
    return GanttDrawing(fig, keys, omitted)
