"""The figures of a DAG run (the Runs page), built from plain data with no Streamlit: the graph
of its jobs layered by topological generation (grouped by generation and job type for a big
run) with the critical path marked, and what the run's views share (colours, state words,
durations). The Gantt timeline is app/gantt_view.py."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import plotly.graph_objects as go

from app import labels
from core.domain.states import State

#: A run with more jobs than this is drawn one node per (generation, job type).
GROUP_OVER = 300
#: Node labels are written on the graph up to this many nodes (hover shows them always).
LABELS_UP_TO = 120

#: The critical path's colour: no job state uses it.
CRITICAL = "#d500f9"
EDGE = "#b0bec5"
#: A state labels.py has no colour for (e.g. skipped).
OTHER = "#bdbdbd"

RUN_STATE_LABELS: dict[str, str] = {
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "canceled": "Canceled",
}

#: The state a group of jobs is coloured by: the first of these its jobs are in.
WORST_FIRST: tuple[str, ...] = (
    State.DEAD_LETTERED,
    State.UPSTREAM_FAILED,
    State.CANCELED,
    State.RETRYING,
    State.THROTTLED,
    State.RUNNING,
    State.LEASED,
    State.QUEUED,
    State.PENDING,
    State.SKIPPED,
    State.SUCCEEDED,
)
ENDED: frozenset[str] = frozenset(
    {State.SUCCEEDED, State.DEAD_LETTERED, State.CANCELED, State.UPSTREAM_FAILED, State.SKIPPED}
)
FAILED_END: frozenset[str] = frozenset({State.DEAD_LETTERED, State.CANCELED, State.UPSTREAM_FAILED})


#: A job state's badge colour (Streamlit's names).
STATE_BADGES: dict[str, labels.BadgeColour] = {
    State.SUCCEEDED: "green",
    State.DEAD_LETTERED: "red",
    State.UPSTREAM_FAILED: "red",
    State.RUNNING: "blue",
    State.LEASED: "blue",
    State.QUEUED: "blue",
    State.THROTTLED: "orange",
    State.RETRYING: "orange",
}


def state_colour(state: str | None) -> str:
    return labels.STATE_COLOURS.get(state or "", OTHER)


def run_state_label(state: str | None) -> str:
    return labels.DASH if state is None else RUN_STATE_LABELS.get(state, state)


def seconds(value: float | None) -> str:
    """A duration for hovers and tables: 250 ms, 4.2 s, then labels.duration (3 min, 2 h 5 min)."""
    if value is None:
        return labels.DASH
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return labels.duration(value)


# -- the graph --------------------------------------------------------------------------------


def critical_edges(g: nx.DiGraph, path: Sequence[Any] | None = None) -> set[tuple[Any, Any]]:
    """The edges of the critical path: between consecutive keys of `path` (get_run's
    critical_path keys), or, without one, between nodes both marked critical."""
    if path is not None:
        return {(a, b) for a, b in itertools.pairwise(path) if g.has_edge(a, b)}
    return {(a, b) for a, b in g.edges() if g.nodes[a].get("critical") and g.nodes[b].get("critical")}


def generations(g: nx.DiGraph) -> dict[Any, int]:
    """Each node's topological generation (the node attribute, computed when missing)."""
    if all("generation" in attrs for _, attrs in g.nodes(data=True)):
        return {n: int(attrs["generation"]) for n, attrs in g.nodes(data=True)}
    return {n: i for i, gen in enumerate(nx.topological_generations(g)) for n in gen}


def positions(g: nx.DiGraph) -> dict[Any, tuple[float, float]]:
    """x = generation; the nodes of a generation spread over y around 0, each generation
    ordered by the mean place of its parents (fewer crossings), then by name."""
    by_gen: dict[int, list[Any]] = defaultdict(list)
    for node, gen in generations(g).items():
        by_gen[gen].append(node)
    pos: dict[Any, tuple[float, float]] = {}
    for gen in sorted(by_gen):

        def rank(node: Any) -> tuple[float, str]:
            ys = [pos[p][1] for p in g.predecessors(node) if p in pos]
            return (-sum(ys) / len(ys) if ys else 0.0, str(node))  # the highest parents first

        nodes = sorted(by_gen[gen], key=rank)
        middle = (len(nodes) - 1) / 2
        for i, node in enumerate(nodes):
            pos[node] = (float(gen), middle - i)
    return pos


def why_waiting(g: nx.DiGraph, key: Any) -> str:
    """Why a job of the graph has not started (or started again), in words; "" when it does
    not wait."""
    attrs = g.nodes[key]
    state = attrs.get("state")
    if state == State.PENDING:
        waiting = [str(p) for p in g.predecessors(key) if g.nodes[p].get("state") not in ENDED]
        if not waiting:
            return "waiting for parents"
        shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
        return f"waiting for parents: {shown}"
    if state == State.THROTTLED:
        return labels.WAIT_REASONS.get(attrs.get("wait_reason") or "", attrs.get("wait_reason") or "throttled")
    if state == State.QUEUED:
        return "waiting for a worker"
    if state == State.RETRYING:
        return labels.RETRY_WAIT
    return ""


def notable(g: nx.DiGraph, keys: Iterable[Any]) -> Any:
    """The job of `keys` to show first: the worst state (WORST_FIRST), on the critical path
    before off it, then by name."""

    def rank(key: Any) -> tuple[int, bool, str]:
        state = g.nodes[key].get("state")
        return (WORST_FIRST.index(state) if state in WORST_FIRST else 99, not g.nodes[key].get("critical"), str(key))

    return min(keys, key=rank)


def group_graph(g: nx.DiGraph, path: Sequence[Any] | None = None, *, by_type: bool = True) -> nx.DiGraph:
    """One node per (generation, job type), or per generation with by_type=False: attributes
    generation, job_type, count, counts {state: n}, state (the worst of its jobs), critical
    (it holds a job of the critical path), keys (its jobs); edges carry how many job edges
    they stand for, and critical when a critical-path edge is among them."""
    gens = generations(g)
    on_path = critical_edges(g, path)
    crit_nodes = set(path) if path is not None else {n for n, a in g.nodes(data=True) if a.get("critical")}

    def group_of(node: Any) -> tuple[int, str]:
        return (gens[node], str(g.nodes[node].get("job_type")) if by_type else "")

    out: nx.DiGraph = nx.DiGraph(**g.graph, grouped=True)
    members: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for node in g.nodes:
        members[group_of(node)].append(node)
    for group, keys in members.items():
        counts = Counter(str(g.nodes[k].get("state")) for k in keys)
        worst = next((s for s in WORST_FIRST if counts.get(s)), next(iter(counts)))
        types = Counter(str(g.nodes[k].get("job_type")) for k in keys)
        out.add_node(
            group,
            generation=group[0],
            job_type=group[1] if by_type else ", ".join(t for t, _ in types.most_common(3)),
            count=len(keys),
            counts=dict(
                sorted(counts.items(), key=lambda kv: WORST_FIRST.index(kv[0]) if kv[0] in WORST_FIRST else 99)
            ),
            state=worst,
            critical=any(k in crit_nodes for k in keys),
            keys=keys,
        )
    for a, b in g.edges():
        ga, gb = group_of(a), group_of(b)
        if out.has_edge(ga, gb):
            out.edges[ga, gb]["count"] += 1
        else:
            out.add_edge(ga, gb, count=1, critical=False)
        if (a, b) in on_path:
            out.edges[ga, gb]["critical"] = True
    return out


def _edge_trace(
    edges: Iterable[tuple[Any, Any]], pos: Mapping[Any, tuple[float, float]], *, colour: str, width: float, name: str
) -> go.Scatter:
    """Edges as one line trace, each with an arrow head halfway (oriented on screen by plotly)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    sizes: list[float] = []
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        xs += [x0, (x0 + x1) / 2, x1, None]
        ys += [y0, (y0 + y1) / 2, y1, None]
        sizes += [0, 8 + width * 2, 0, 0]
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines+markers",
        line={"color": colour, "width": width},
        marker={"symbol": "arrow", "angleref": "previous", "size": sizes, "color": colour},
        hoverinfo="skip",
        name=name,
        showlegend=name == "critical path",
        legendgroup="critical" if name == "critical path" else None,
        legendrank=2000,
    )


def _node_hover(g: nx.DiGraph, node: Any) -> str:
    a = g.nodes[node]
    if g.graph.get("grouped"):
        lines = [f"<b>{a['job_type'] or 'jobs'}</b>: {a['count']} jobs (generation {a['generation']})"]
        lines += [f"{labels.state_label(s)}: {n}" for s, n in a["counts"].items()]
        if a.get("critical"):
            lines.append("holds part of the critical path")
        return "<br>".join(lines)
    lines = [
        f"<b>{node}</b> (job {a.get('id')})",
        f"type: {a.get('job_type')}",
        f"state: {labels.state_label(a.get('state'))}",
        f"attempt: {a.get('attempt')}",
        f"run time: {seconds(a.get('duration_s'))}",
        f"trigger rule: {a.get('trigger_rule')}",
    ]
    why = why_waiting(g, node)
    if why:
        lines.append(f"waits: {why}")
    if a.get("critical"):
        lines.append("on the critical path")
    return "<br>".join(lines)


@dataclass
class DagDrawing:
    figure: go.Figure
    #: Whether the nodes are groups of jobs (a run over GROUP_OVER jobs).
    grouped: bool
    #: Group node name (its label) -> the keys of its jobs; empty when not grouped.
    members: dict[str, list[Any]] = field(default_factory=dict)


def group_name(node: tuple[int, str], attrs: Mapping[str, Any]) -> str:
    """A group node's name (unique in its graph): "noop · 200 (gen 1)"."""
    return f"{attrs['job_type'] or 'jobs'} · {attrs['count']} (gen {node[0]})"


def group_label(attrs: Mapping[str, Any]) -> str:
    """What a group node says on the graph: "noop · 200", then its jobs not succeeded
    (the two biggest states), e.g. "3 running, 1 dead-lettered"."""
    rest = [(s, n) for s, n in attrs["counts"].items() if s != State.SUCCEEDED]
    text = f"{attrs['job_type'] or 'jobs'} · {attrs['count']}"
    if rest:
        text += "<br>" + ", ".join(f"{n} {labels.state_label(s).lower()}" for s, n in rest[:2])
    return text


def dag_figure(
    g: nx.DiGraph, critical_path: Sequence[Any] | None = None, *, group_over: int = GROUP_OVER
) -> DagDrawing:
    """The run's graph as a plotly figure: x = generation, nodes coloured by state (one
    trace per state, so the legend names them; customdata = the key, or the group's name),
    critical-path edges thick in CRITICAL and its nodes outlined. Over `group_over` jobs the
    nodes are groups (group_graph), by generation and job type, or by generation alone when
    that is still too many."""
    grouped = g.number_of_nodes() > group_over
    drawn = g
    if grouped:
        drawn = group_graph(g, critical_path)
        if drawn.number_of_nodes() > group_over:
            drawn = group_graph(g, critical_path, by_type=False)
    pos = positions(drawn)
    if grouped:
        hot = {(a, b) for a, b, e in drawn.edges(data=True) if e.get("critical")}
    else:
        hot = critical_edges(drawn, critical_path)
    fig = go.Figure()
    cold = [e for e in drawn.edges() if e not in hot]
    if cold:
        fig.add_trace(_edge_trace(cold, pos, colour=EDGE, width=1.2, name="edge"))
    if hot:
        fig.add_trace(_edge_trace(sorted(hot, key=str), pos, colour=CRITICAL, width=4, name="critical path"))
    by_state: dict[str, list[Any]] = defaultdict(list)
    for node, attrs in drawn.nodes(data=True):
        by_state[str(attrs.get("state"))].append(node)
    widest = max(Counter(int(x) for x, _ in pos.values()).values(), default=1)
    show_text = grouped or (drawn.number_of_nodes() <= LABELS_UP_TO and widest <= 24)
    members: dict[str, list[Any]] = {}
    order = {s: i for i, s in enumerate(labels.STATE_COLOURS)}
    if grouped:
        size = {n: min(48.0, 16 + 4 * a["count"] ** 0.5) for n, a in drawn.nodes(data=True)}
    else:
        size = dict.fromkeys(drawn.nodes, 20.0)
    for state in sorted(by_state, key=lambda s: order.get(s, 99)):
        nodes = by_state[state]
        names = [group_name(n, drawn.nodes[n]) if grouped else str(n) for n in nodes]
        if grouped:
            members.update({name: list(drawn.nodes[n]["keys"]) for name, n in zip(names, nodes, strict=True)})
        fig.add_trace(
            go.Scatter(
                x=[pos[n][0] for n in nodes],
                y=[pos[n][1] for n in nodes],
                mode="markers",
                customdata=names,
                hovertext=[_node_hover(drawn, n) for n in nodes],
                hoverinfo="text",
                name=labels.state_label(state),
                marker={
                    "color": state_colour(state),
                    "size": [size[n] for n in nodes],
                    "line": {"color": "#ffffff", "width": 1},
                },
            )
        )
    # Over the nodes, a ring a little bigger than each: violet on the critical path, clear
    # elsewhere; the labels sit above the rings (the legend's state dots stay plain).
    every = list(drawn.nodes)
    ring = [bool(drawn.nodes[n].get("critical")) for n in every]
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in every],
            y=[pos[n][1] for n in every],
            mode="markers+text" if show_text else "markers",
            text=[group_label(drawn.nodes[n]) if grouped else str(n) for n in every] if show_text else None,
            textposition="top center",
            textfont={"size": 11},
            marker={
                "size": [size[n] + 9 for n in every],
                "color": "rgba(0,0,0,0)",
                "line": {"color": [CRITICAL if r else "rgba(0,0,0,0)" for r in ring], "width": 3.5},
            },
            hoverinfo="skip",
            name="labels and critical path rings",
            legendgroup="critical",
            showlegend=False,
        )
    )
    gens = sorted({int(x) for x, _ in pos.values()})
    height = int(min(900, max(360, 110 + widest * (56 if show_text else 18))))
    title = "Jobs by generation" + (" (grouped by generation and job type)" if grouped else "")
    fig.update_layout(
        title={"text": title, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.12 if len(gens) > 1 else -0.2},
        plot_bgcolor="#ffffff",
        hovermode="closest",
        # No clickmode or dragmode: st.plotly_chart(on_select=..., selection_mode="points")
        # sets them so a click selects a node (a drag mode of "select" would turn that off).
        xaxis={
            "tickvals": gens,
            "ticktext": [f"gen {x}" for x in gens],
            "showgrid": False,
            "zeroline": False,
            "range": [min(gens, default=0) - 0.5, max(gens, default=0) + 0.5],
        },
        yaxis={
            "visible": False,
            "range": [
                min((y for _, y in pos.values()), default=0) - 0.8,
                max((y for _, y in pos.values()), default=0) + 0.9,
            ],
        },
    )
    return DagDrawing(fig, grouped, members)
