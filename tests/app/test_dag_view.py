"""app/dag_view.py and app/gantt_view.py without Streamlit: layering by generation, the critical path, grouping of
big runs, and the Gantt's rows and segments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import networkx as nx
import pytest

from app import dag_view, gantt_view, labels
from core import queries

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _job(key: str, parents: list[str], state: str = "succeeded", **extra: Any) -> dict[str, Any]:
    job = {
        "key": key,
        "id": abs(hash(key)) % 10_000,
        "job_type": "noop",
        "state": state,
        "attempt": 1,
        "trigger_rule": "all_success",
        "duration_s": 1.0,
        "critical": False,
        "wait_reason": None,
        "parents": parents,
    }
    job.update(extra)
    return job


def _graph(jobs: list[dict[str, Any]]) -> nx.DiGraph:
    """The graph core.queries.graph_of builds from get_run's jobs."""
    return queries.graph_of({"id": 1, "name": "r", "state": "running", "jobs": jobs})


def _diamond() -> nx.DiGraph:
    """a -> (b, c) -> d, plus e after a and d; critical path a, c, d, e."""
    return _graph(
        [
            _job("a", [], critical=True),
            _job("b", ["a"]),
            _job("c", ["a"], "dead_lettered", critical=True),
            _job("d", ["b", "c"], "upstream_failed", critical=True),
            _job("e", ["a", "d"], "pending", critical=True),
        ]
    )


def _node_traces(fig: Any) -> list[Any]:
    return [t for t in fig.data if t.customdata is not None]


def _xy(fig: Any) -> dict[str, tuple[float, float]]:
    return {c: (x, y) for t in _node_traces(fig) for c, x, y in zip(t.customdata, t.x, t.y, strict=True)}


def _rings(fig: Any) -> dict[tuple[float, float], tuple[str, float, str | None]]:
    """The label-and-ring trace: position -> (ring colour, ring size, label)."""
    (trace,) = [t for t in fig.data if t.name == "labels and critical path rings"]
    texts = trace.text if trace.text is not None else [None] * len(trace.x)
    return {
        (x, y): (colour, size, text)
        for x, y, colour, size, text in zip(
            trace.x, trace.y, trace.marker.line.color, trace.marker.size, texts, strict=True
        )
    }


def test_nodes_are_layered_by_generation_and_spread_within_one() -> None:
    g = _diamond()
    pos = dag_view.positions(g)
    assert {k: x for k, (x, _) in pos.items()} == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}
    assert pos["b"][1] != pos["c"][1]
    assert sorted(y for k, (_, y) in pos.items() if k in "bc") == [-0.5, 0.5]
    drawing = dag_view.dag_figure(g, ["a", "c", "d", "e"])
    assert not drawing.grouped
    assert _xy(drawing.figure) == pos  # every job is drawn, started or not, where positions() puts it
    states = {c: t.name for t in _node_traces(drawing.figure) for c in t.customdata}
    assert states == {
        "a": "Succeeded",
        "b": "Succeeded",
        "c": "Dead-lettered",
        "d": "Upstream failed",
        "e": "Pending",
    }
    colours = {t.name: t.marker.color for t in _node_traces(drawing.figure)}
    assert colours["Dead-lettered"] == labels.STATE_COLOURS["dead_lettered"]


def test_children_follow_their_parents_order() -> None:
    """A generation is ordered by where its parents are, so edges do not cross needlessly."""
    g = _graph([_job("p1", []), _job("p2", []), _job("z-child-of-p1", ["p1"]), _job("a-child-of-p2", ["p2"])])
    pos = dag_view.positions(g)
    assert pos["p1"][1] > pos["p2"][1]
    assert pos["z-child-of-p1"][1] > pos["a-child-of-p2"][1]


def test_the_critical_path_is_highlighted_and_edges_have_arrows() -> None:
    g = _diamond()
    drawing = dag_view.dag_figure(g, ["a", "c", "d", "e"])
    edges = {t.name: t for t in drawing.figure.data if t.mode == "lines+markers"}
    hot, cold = edges["critical path"], edges["edge"]
    assert hot.line.color == dag_view.CRITICAL and hot.line.width > cold.line.width
    assert hot.showlegend and not cold.showlegend

    def pairs(trace: Any) -> set[tuple[tuple[float, float], tuple[float, float]]]:
        # Each edge is [start, middle (the arrow), end, gap].
        xs, ys = list(trace.x), list(trace.y)
        return {((xs[i], ys[i]), (xs[i + 2], ys[i + 2])) for i in range(0, len(xs), 4)}

    pos = dag_view.positions(g)
    assert pairs(hot) == {(pos["a"], pos["c"]), (pos["c"], pos["d"]), (pos["d"], pos["e"])}
    assert pairs(cold) == {(pos["a"], pos["b"]), (pos["b"], pos["d"]), (pos["a"], pos["e"])}
    for trace in (hot, cold):
        assert trace.marker.symbol == "arrow" and trace.marker.angleref == "previous"
        assert [s > 0 for s in trace.marker.size[:4]] == [False, True, False, False]
    # The path's jobs are ringed (a ring bigger than the node); the others are not.
    ring = _rings(drawing.figure)
    assert {xy for xy, (colour, _, _) in ring.items() if colour == dag_view.CRITICAL} == {pos[k] for k in "acde"}
    node_size = {c: s for t in _node_traces(drawing.figure) for c, s in zip(t.customdata, t.marker.size, strict=True)}
    assert all(size > node_size["a"] for _, size, _ in ring.values())
    # Each node's label is written above its ring; the legend's state dots stay plain.
    assert {text for _, _, text in ring.values()} == set("abcde")
    assert all(t.marker.line.color == "#ffffff" for t in _node_traces(drawing.figure))
    # Without the path's order, the nodes marked critical decide.
    assert dag_view.critical_edges(g) == {("a", "c"), ("c", "d"), ("d", "e"), ("a", "e")}


def test_hover_tells_type_state_attempt_run_time_and_why_a_job_waits() -> None:
    g = _graph(
        [
            _job("root", [], "running", duration_s=0.25, attempt=2),
            _job("done", []),
            _job("child", ["root", "done"], "pending"),
            _job("slow", [], "throttled", wait_reason="rate_limited"),
            _job("ready", [], "queued"),
        ]
    )
    hover = {
        c: h
        for t in _node_traces(dag_view.dag_figure(g).figure)
        for c, h in zip(t.customdata, t.hovertext, strict=True)
    }
    assert "type: noop" in hover["root"] and "state: Running" in hover["root"]
    assert "attempt: 2" in hover["root"] and "run time: 250 ms" in hover["root"]
    assert "waits: waiting for parents: root" in hover["child"]  # done has ended: only root is waited for
    assert f"waits: {labels.WAIT_REASONS['rate_limited']}" in hover["slow"]
    assert "waits: waiting for a worker" in hover["ready"]
    assert "waits" not in hover["root"]


def _wide(n: int, types: int = 2) -> nx.DiGraph:
    """start -> n - 2 jobs of `types` job types -> end."""
    middle = [
        _job(f"m{i}", ["start"], "queued" if i % 3 else "running", job_type=f"type{i % types}") for i in range(n - 2)
    ]
    return _graph(
        [_job("start", [], critical=True), *middle, _job("end", [m["key"] for m in middle], "pending", critical=True)]
    )


def test_a_run_over_the_threshold_is_drawn_grouped() -> None:
    at_limit = dag_view.dag_figure(_wide(dag_view.GROUP_OVER))
    assert not at_limit.grouped and len(_xy(at_limit.figure)) == dag_view.GROUP_OVER
    g = _wide(dag_view.GROUP_OVER + 1)
    drawing = dag_view.dag_figure(g, ["start", "m0", "end"])
    assert drawing.grouped
    groups = _xy(drawing.figure)
    assert sorted(groups) == sorted(
        ["noop · 1 (gen 0)", "type0 · 150 (gen 1)", "type1 · 149 (gen 1)", "noop · 1 (gen 2)"]
    )
    assert {name: x for name, (x, _) in groups.items()}["type1 · 149 (gen 1)"] == 1
    # Members add up to the run; a group's hover counts its jobs by state.
    assert sum(len(keys) for keys in drawing.members.values()) == g.number_of_nodes()
    assert sorted(drawing.members["type0 · 150 (gen 1)"]) == sorted(f"m{i}" for i in range(0, 299, 2))
    hover = {c: h for t in _node_traces(drawing.figure) for c, h in zip(t.customdata, t.hovertext, strict=True)}
    assert "Running: 50" in hover["type0 · 150 (gen 1)"] and "Queued: 100" in hover["type0 · 150 (gen 1)"]
    # Coloured by the worst state of its jobs; the critical path through the group that holds m0.
    state = {c: t.name for t in _node_traces(drawing.figure) for c in t.customdata}
    assert state["type0 · 150 (gen 1)"] == "Running"
    hot = next(t for t in drawing.figure.data if t.name == "critical path")
    assert len(hot.x) == 2 * 4  # start -> type0 group -> end
    # Without the path's order, only edges between critical jobs count: none here (m* are not).
    assert "critical path" not in [t.name for t in dag_view.dag_figure(g).figure.data]
    text = {xy: label for xy, (_, _, label) in _rings(drawing.figure).items()}
    assert text[groups["type0 · 150 (gen 1)"]] == "type0 · 150<br>50 running, 100 queued"
    assert text[groups["noop · 1 (gen 0)"]] == "noop · 1"
    assert dag_view.notable(g, drawing.members["type0 · 150 (gen 1)"]) == "m0"  # running, and critical


def test_grouping_falls_back_to_generations_when_types_are_too_many() -> None:
    g = _wide(dag_view.GROUP_OVER + 50, types=dag_view.GROUP_OVER + 50)
    drawing = dag_view.dag_figure(g)
    assert drawing.grouped
    assert len(_xy(drawing.figure)) == 3  # one node per generation
    assert sum(len(keys) for keys in drawing.members.values()) == g.number_of_nodes()


def _seg(kind: str, start_s: float, end_s: float, reason: str | None = None, attempt: int = 1) -> dict[str, Any]:
    return {
        "kind": kind,
        "start": (T0 + dt.timedelta(seconds=start_s)).isoformat(),
        "end": (T0 + dt.timedelta(seconds=end_s)).isoformat(),
        "reason": reason,
        "attempt": attempt,
    }


def _timeline(state: str = "running") -> dict[str, Any]:
    return {
        "run": {"id": 1, "state": state},
        "jobs": [
            {
                "key": "extract",
                "id": 1,
                "state": "succeeded",
                "critical": True,
                "slack_s": 0.0,
                "segments": [_seg("waiting for a worker", 0, 1), _seg("running", 1, 20)],
            },
            {
                "key": "audit",
                "id": 2,
                "state": "succeeded",
                "critical": False,
                "slack_s": 25.0,
                "segments": [
                    _seg("waiting for parents", 0, 20),
                    _seg("throttled", 20, 30, reason="rate_limited", attempt=0),
                    _seg("running", 30, 35),
                ],
            },
            {
                "key": "transform",
                "id": 3,
                "state": "running",
                "critical": True,
                "slack_s": 0.0,
                "segments": [
                    _seg("waiting for parents", 0, 20),
                    _seg("running", 20, 25),
                    _seg("retry back-off", 25, 40),
                    _seg("running", 40, 60, attempt=2),  # open: up to now
                ],
            },
        ],
    }


def test_gantt_rows_include_a_running_jobs_open_segment() -> None:
    now = T0 + dt.timedelta(seconds=60)
    drawing = gantt_view.gantt_figure(_timeline(), now=now)
    fig = drawing.figure
    assert drawing.keys == ["extract", "audit", "transform"] and drawing.omitted == 0
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert set(bars) == {
        "waiting for a worker",
        "waiting for parents",
        "throttled",
        "running",
        "retry back-off",
        "slack",
        "critical path",
    }
    running = bars["running"]
    spans = [
        (y, dt.datetime.fromisoformat(b).replace(tzinfo=dt.UTC), ms)
        for y, b, ms in zip(running.y, running.base, running.x, strict=True)
    ]
    open_bar = [s for s in spans if s[0] == "transform"][-1]
    assert open_bar[1] == T0 + dt.timedelta(seconds=40)
    assert open_bar[1] + dt.timedelta(milliseconds=open_bar[2]) == now
    assert "attempt 2" in running.hovertext[-1]
    throttled = bars["throttled"]
    assert list(throttled.y) == ["audit"] and labels.WAIT_REASONS["rate_limited"] in throttled.hovertext[0]
    # A line at now while the run runs; ended jobs get a mark, the running one none.
    assert len(fig.layout.shapes) == 1
    marks = next(t for t in fig.data if t.name == "ended")
    assert list(marks.y) == ["extract", "audit"]
    assert len(gantt_view.gantt_figure(_timeline("failed"), now=now).figure.layout.shapes) == 0


def test_gantt_marks_the_critical_path_and_shows_slack() -> None:
    fig = gantt_view.gantt_figure(_timeline(), now=T0 + dt.timedelta(seconds=60), parents={"audit": ["extract"]}).figure
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext, strict=True))
    assert ticks == {"extract": "<b>extract</b>", "audit": "audit", "transform": "<b>transform</b>"}
    assert list(fig.layout.yaxis.range) == [2.5, -0.5]  # the first row on top, no padding
    outline = next(t for t in fig.data if t.name == "critical path")
    assert list(outline.y) == ["extract", "transform"] and outline.marker.line.color == dag_view.CRITICAL
    # From each job's first segment to its last (transform's open one: up to now).
    assert list(outline.base) == ["2026-12-01 12:00:00", "2026-12-01 12:00:00"]
    assert list(outline.x) == [20_000.0, 60_000.0]
    slack = next(t for t in fig.data if t.name == "slack")
    assert list(slack.y) == ["audit"] and list(slack.x) == [25_000.0]
    assert slack.base[0] == "2026-12-01 12:00:35"  # after the job's end
    assert "slack 25.0 s" in slack.hovertext[0]
    waiting = next(t for t in fig.data if t.name == "waiting for parents")
    assert "parents: extract" in waiting.hovertext[list(waiting.y).index("audit")]


def test_an_instant_segment_stays_visible() -> None:
    timeline = _timeline()
    timeline["jobs"][0]["segments"].insert(1, _seg("starting", 1, 1))
    fig = gantt_view.gantt_figure(timeline, now=T0 + dt.timedelta(seconds=60)).figure
    starting = next(t for t in fig.data if t.name == "starting")
    assert starting.x[0] > 0
    assert "(0 ms)" in starting.hovertext[0]


def test_a_big_gantt_keeps_the_critical_path_and_least_slack() -> None:
    jobs = [
        {
            "key": f"j{i:03d}",
            "id": i,
            "state": "succeeded",
            "critical": i % 100 == 0,
            "slack_s": float(i),
            "segments": [_seg("running", i, i + 1)],
        }
        for i in range(450)
    ]
    rows, omitted = gantt_view.gantt_rows(jobs)
    assert (len(rows), omitted) == (gantt_view.GANTT_ROWS, 150)
    keys = [r["key"] for r in rows]
    assert {"j000", "j100", "j200", "j300", "j400"} <= set(keys)
    assert "j299" not in keys  # the critical ones took 4 of the places of those with least slack
    assert keys == sorted(keys)  # drawn in order of start
    drawing = gantt_view.gantt_figure({"run": {"state": "succeeded"}, "jobs": jobs}, now=T0)
    assert len(drawing.keys) == gantt_view.GANTT_ROWS and drawing.omitted == 150


@pytest.mark.parametrize(
    ("value", "text"), [(None, labels.DASH), (0.0, "0 ms"), (0.25, "250 ms"), (4.2, "4.2 s"), (600, "10 min")]
)
def test_seconds(value: float | None, text: str) -> None:
    assert dag_view.seconds(value) == text
