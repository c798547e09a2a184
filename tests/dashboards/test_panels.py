"""Panel declarations, read models and figure builders: every console panel names a read model
that exists, every figure builder draws sample rows (no database: builders are pure), and the
read models hand the console's filters to core.queries unchanged."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
import pytest

from core import queries
from core.domain import errors, slo
from core.domain.auth import local_principal
from core.domain.states import State
from dashboards import figures, panels, read_models
from tests.dashboards import promql

CONSOLE_PANELS = [p for p in panels.PANELS if p.read_model is not None]
T0 = "2025-03-01T10:00:00+00:00"


def _at(minute: int) -> str:
    return f"2025-03-01T10:{minute:02d}:00+00:00"


SAMPLE_ROWS: dict[str, list[dict[str, Any]]] = {
    "job_counts": [{"state": s.value, "count": 10 * i} for i, s in enumerate(State)],
    "throughput": [
        {
            "bucket": _at(0),
            "finished": 120,
            "succeeded": 114,
            "dead_lettered": 6,
            "p95_duration_s": 1.5,
            "bucket_s": 60,
        },
        {"bucket": _at(1), "finished": 0, "succeeded": 0, "dead_lettered": 0, "p95_duration_s": None, "bucket_s": 60},
        {"bucket": _at(2), "finished": 30, "succeeded": 30, "dead_lettered": 0, "p95_duration_s": 0.25, "bucket_s": 60},
    ],
    "queue_depth": [
        {"at": _at(m), "queue": q, "state": s, "count": m + len(q)}
        for m in (2, 0, 1)
        for q in ("default", "bulk")
        for s in ("queued", "running")
    ],
    "error_clusters": [
        {
            "error_class": "http_5xx",
            "fingerprint": "a1b2c3d4e5f60718",
            "message": "HTTP <n> for <url>",
            "count": 42,
            "first_seen": _at(0),
            "last_seen": _at(9),
            "job_types": ["feeds.fetch"],
            "sources": ["nvd.example"],
            "sample_job_ids": [1, 2, 3],
        },
        {
            "error_class": "schema_mismatch",
            "fingerprint": "0f0f0f0f0f0f0f0f",
            "message": "missing field <str> in record " + "x" * 100,
            "count": 7,
            "first_seen": _at(3),
            "last_seen": _at(4),
            "job_types": ["vex.parse", "feeds.fetch"],
            "sources": [],
            "sample_job_ids": [9],
        },
    ],
    "error_trend": [
        {"bucket": _at(5 * b), "fingerprint": f"{i:x}" * 16, "error_class": "http_5xx", "count": i + 1}
        for b in range(3)
        for i in range(10)
    ]
    + [
        {"bucket": _at(0), "fingerprint": "ffffffffffffffff", "error_class": "lease_expired", "count": 4},
        {"bucket": _at(10), "fingerprint": "ffffffffffffffff", "error_class": "lease_expired", "count": 2},
    ],
    "burn_rates": [
        {
            "slo": "job_success",
            "tenant": tenant,
            "job_type": "feeds.fetch",
            "window": window,
            "failed": failed,
            "total": 100,
            "error_ratio": failed / 100,
            "burn_rate": failed / 100 / 0.01,
        }
        for window in reversed(slo.WINDOWS)
        for tenant, failed in (("acme", 20), ("globex", 0 if window == "3d" else 1))
    ],
}


def _trace(fig: go.Figure, name: str) -> Any:
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def test_panel_keys_and_titles_are_unique() -> None:
    keys = [p.key for p in panels.PANELS]
    assert len(keys) == len(set(keys))
    titles = [p.title for p in panels.PANELS]
    assert len(titles) == len(set(titles))
    with pytest.raises(KeyError, match="no panel 'nope'"):
        panels.panel("nope")


def test_every_console_panel_names_a_read_model_that_exists() -> None:
    assert len(CONSOLE_PANELS) >= 8
    for panel in CONSOLE_PANELS:
        assert panel.read_model in read_models.READ_MODELS, panel.key
        assert callable(read_models.READ_MODELS[panel.read_model])
        assert callable(panel.figure)
    assert {p.read_model for p in CONSOLE_PANELS} == set(read_models.READ_MODELS), "a read model no panel uses"
    assert set(SAMPLE_ROWS) == set(read_models.READ_MODELS)


def test_panel_declaration_rejects_half_a_console_panel_and_oversized_panels() -> None:
    with pytest.raises(ValueError, match="go together"):
        panels.Panel("k", "t", "short", "d", panels.PanelType.STAT, panels.STAT, (panels.Query("up"),), "x", None)
    with pytest.raises(ValueError, match="no PromQL"):
        panels.Panel("k", "t", "short", "d", panels.PanelType.STAT, panels.STAT, (), None, None)
    with pytest.raises(ValueError, match="24-column"):
        panels.Size(25, 4)
    with pytest.raises(ValueError, match="unknown unit 'bytes'"):
        panels.Panel("k", "t", "bytes", "d", panels.PanelType.STAT, panels.STAT, (panels.Query("up"),), None, None)


@pytest.mark.parametrize("panel", CONSOLE_PANELS, ids=lambda p: p.key)
def test_the_console_draws_a_panel_with_its_title_and_unit(panel: panels.Panel) -> None:
    fig = panels.draw(panel, SAMPLE_ROWS[str(panel.read_model)])
    assert fig.layout.title.text == panel.title
    suffix = panels.unit_suffix(panel.unit)
    horizontal = all(getattr(t, "orientation", None) == "h" for t in fig.data)
    value_axis, other_axis = (
        (fig.layout.xaxis, fig.layout.yaxis) if horizontal else (fig.layout.yaxis, fig.layout.xaxis)
    )
    assert (value_axis.ticksuffix or "") == suffix
    assert not other_axis.ticksuffix
    # The builder's traces are kept as they are.
    assert panel.figure is not None
    built = panel.figure(SAMPLE_ROWS[str(panel.read_model)])
    assert [t.to_plotly_json() for t in fig.data] == [t.to_plotly_json() for t in built.data]


def test_unit_suffixes_and_grafana_only_panels() -> None:
    assert [panels.unit_suffix(u) for u in ("short", "s", "ops", "suffix:x")] == ["", " s", "/s", "x"]
    assert panels.draw(panels.panel("failures_by_class"), SAMPLE_ROWS["error_trend"]).layout.xaxis.ticksuffix is None
    assert panels.draw(panels.panel("burn_rate"), SAMPLE_ROWS["burn_rates"]).layout.yaxis.ticksuffix == "x"
    with pytest.raises(ValueError, match="only Prometheus"):
        panels.draw(panels.panel("queue_wait_p95"), [])


def test_the_required_panels_are_declared() -> None:
    required = {
        "queue_depth": "orch_queue_depth",
        "throughput": "orch_jobs_finished_total",
        "duration_p95": "orch_job_duration_seconds_bucket",
        "outcomes": "orch_jobs_finished_total",
        "failures_by_class": "orch_job_failures_total",
        "burn_rate": "tenant_job_type:orch_slo_burn_rate:5m",
        "error_clusters": "orch_job_failures_total",
        "dead_letter_depth": "orch_dead_letter_depth",
        "oldest_ready_age": "orch_oldest_ready_age_seconds",
        "lease_expirations": "orch_lease_expirations_total",
    }
    for key, metric in required.items():
        names = set().union(*(promql.metric_names(q.expr) for q in panels.panel(key).queries))
        assert metric in names, key


@pytest.mark.parametrize("panel", CONSOLE_PANELS, ids=lambda p: p.key)
def test_figure_builders_draw_sample_rows(panel: panels.Panel) -> None:
    assert panel.figure is not None and panel.read_model is not None
    rows = SAMPLE_ROWS[panel.read_model]
    fig = panel.figure(rows)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) >= 1
    assert not fig.layout.annotations, "sample rows drawn as 'no data'"
    # Serialisable for the browser, and the same rows give the same figure.
    assert fig.to_json() == panel.figure(rows).to_json()


@pytest.mark.parametrize("panel", CONSOLE_PANELS, ids=lambda p: p.key)
def test_figure_builders_say_no_data_for_no_rows(panel: panels.Panel) -> None:
    assert panel.figure is not None
    fig = panel.figure([])
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text.startswith("No ")


def test_throughput_is_per_second_and_p95_keeps_gaps() -> None:
    fig = figures.throughput_lines(SAMPLE_ROWS["throughput"])
    assert list(_trace(fig, "finished").y) == [2.0, 0.0, 0.5]
    assert list(_trace(fig, "dead_lettered").y) == [0.1, 0.0, 0.0]
    assert str(_trace(fig, "finished").x[0]) == "2025-03-01 10:00:00"
    p95 = figures.duration_p95_line(SAMPLE_ROWS["throughput"]).data[0]
    assert list(p95.y) == [1.5, None, 0.25]
    outcomes = figures.outcomes_bar(SAMPLE_ROWS["throughput"]).data[0]
    assert (list(outcomes.x), list(outcomes.y)) == (["succeeded", "dead_lettered"], [144, 6])


def test_job_counts_show_moving_states_and_dead_letters_only() -> None:
    bar = figures.job_counts_bar(SAMPLE_ROWS["job_counts"]).data[0]
    assert "succeeded" not in bar.x and "canceled" not in bar.x
    assert "dead_lettered" in bar.x and "queued" in bar.x
    counts = {r["state"]: r["count"] for r in SAMPLE_ROWS["job_counts"]}
    assert list(bar.y) == [counts[s] for s in bar.x]
    assert figures.dead_letter_indicator(SAMPLE_ROWS["job_counts"]).data[0].value == counts["dead_lettered"]


def test_queue_depth_has_one_time_ordered_line_per_queue_and_state() -> None:
    fig = figures.queue_depth_lines(SAMPLE_ROWS["queue_depth"])
    assert [t.name for t in fig.data] == ["bulk queued", "bulk running", "default queued", "default running"]
    default = _trace(fig, "default queued")
    assert list(default.y) == [7, 8, 9]
    assert list(default.x) == sorted(default.x)


def test_burn_rate_shows_the_worst_per_window_coloured_by_alert_level() -> None:
    fig = figures.burn_rate_bars(SAMPLE_ROWS["burn_rates"])
    bar = fig.data[0]
    assert list(bar.x) == list(slo.WINDOWS)
    assert list(bar.y) == [20.0] * len(slo.WINDOWS)
    assert set(bar.marker.color) == {figures.LEVEL_COLORS["critical"]}
    assert all(row[0] == "acme" for row in bar.customdata)
    assert sorted(shape.y0 for shape in fig.layout.shapes) == sorted({t for _, _, t, _ in slo.ALERTS})

    calm = [dict(r, burn_rate=2.0 if r["window"] == "5m" else 0.5) for r in SAMPLE_ROWS["burn_rates"]]
    colours = figures.burn_rate_bars(calm).data[0].marker.color
    assert colours[0] == figures.LEVEL_COLORS["warn"]
    assert set(colours[1:]) == {figures.LEVEL_COLORS["ok"]}


def test_error_figures_group_by_cluster_class_and_lease_expiry() -> None:
    rows = SAMPLE_ROWS["error_trend"]
    trend = figures.error_trend_bars(rows)
    names = [t.name for t in trend.data]
    assert len(names) == figures.TREND_CLUSTERS + 1 and names[-1] == "other"
    assert names[:2] == ["http_5xx 99999999", "http_5xx 88888888"]  # largest first
    total = sum(sum(t.y) for t in trend.data)
    assert total == sum(r["count"] for r in rows)

    by_class = figures.failures_by_class_bar(rows).data[0]
    assert dict(zip(by_class.y, by_class.x, strict=True)) == {"http_5xx": 3 * sum(range(1, 11)), "lease_expired": 6}

    leases = figures.lease_expirations_bar(rows).data[0]
    assert list(leases.y) == [4, 2]
    assert figures.lease_expirations_bar([r for r in rows if r["error_class"] != "lease_expired"]).data == ()

    clusters = figures.error_clusters_bar(SAMPLE_ROWS["error_clusters"]).data[0]
    assert list(clusters.x) == [7, 42]  # largest drawn on top
    assert clusters.y[1] == "http_5xx: HTTP <n> for <url>"
    assert len(clusters.y[0]) <= len("schema_mismatch: ") + figures.LABEL_CHARS


def _fake(calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], name: str, result: Any) -> Callable[..., Any]:
    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append((name, args, kwargs))
        return result

    return fake


def test_read_models_hand_the_filters_to_core_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    canned = {
        "job_stats": {"total": 3, "by_state": {"queued": 2, "dead_lettered": 1}},
        "throughput_series": [{k: v for k, v in r.items() if k != "bucket_s"} for r in SAMPLE_ROWS["throughput"]],
        "queue_depth_series": SAMPLE_ROWS["queue_depth"],
        "error_clusters": SAMPLE_ROWS["error_clusters"],
        "error_trend": SAMPLE_ROWS["error_trend"],
        "burn_rates": SAMPLE_ROWS["burn_rates"],
    }
    real = {name: getattr(queries, name, None) for name in canned}
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name, result in canned.items():
        monkeypatch.setattr(queries, name, _fake(calls, name, result), raising=False)
    conn, principal = object(), local_principal("tester")
    filters = read_models.Filters(tenant="acme", job_type="vex.parse", since_s=7200)

    out = {name: read_models.run(name, conn, principal, filters) for name in read_models.READ_MODELS}

    by_name = {name: (args, kwargs) for name, args, kwargs in calls}
    assert all(args == (conn, principal) for args, _ in by_name.values())
    assert by_name["job_stats"][1] == {"tenant": "acme"}
    assert by_name["throughput_series"][1] == {
        "since_s": 7200,
        "bucket_s": 60,
        "tenant": "acme",
        "job_type": "vex.parse",
    }
    assert by_name["queue_depth_series"][1] == {"since_s": 7200, "tenant": "acme"}
    assert by_name["error_clusters"][1] == {"tenant": "acme", "since_s": 7200, "limit": read_models.CLUSTER_LIMIT}
    assert by_name["error_trend"][1] == {"since_s": 7200, "bucket_s": 300, "tenant": "acme"}
    assert by_name["burn_rates"][1] == {"tenant": "acme", "job_type": "vex.parse"}

    assert out["job_counts"] == [{"state": "queued", "count": 2}, {"state": "dead_lettered", "count": 1}]
    assert [r["bucket_s"] for r in out["throughput"]] == [60, 60, 60]
    assert [r["fingerprint"] for r in out["error_clusters"]] == ["0f0f0f0f0f0f0f0f"]  # touched vex.parse
    assert out["burn_rates"] == SAMPLE_ROWS["burn_rates"]

    # Once core.queries has these functions, the read models' calls must fit their signatures.
    missing = [name for name, fn in real.items() if fn is None]
    for name, args, kwargs in calls:
        fn = real[name]
        if fn is not None:
            inspect.signature(fn).bind(*args, **kwargs)
    if missing:
        pytest.skip(f"core.queries does not have {', '.join(missing)} yet: signatures not checked against them")


def test_throughput_buckets_stay_at_least_a_minute() -> None:
    assert read_models.throughput_bucket_s(600) == 60
    assert read_models.throughput_bucket_s(3 * 86400) == 3 * 86400 // read_models.THROUGHPUT_POINTS


def test_read_model_lookup_and_filters_reject_bad_input() -> None:
    with pytest.raises(errors.InvalidInput, match="no read model 'nope'"):
        read_models.run("nope", object(), local_principal("tester"), read_models.Filters())
    with pytest.raises(errors.InvalidInput, match="since_s"):
        read_models.Filters(since_s=0)


def test_dashboards_import_only_what_the_design_allows() -> None:
    allowed_roots = {"plotly", "networkx", "dashboards"}
    allowed_core = ("core.queries", "core.domain")
    package = promql.ROOT / "dashboards"
    sources = sorted(package.glob("*.py"))
    assert sources
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "core"]
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                if root == "core":
                    if module == "core":
                        continue
                    assert module.startswith(allowed_core), f"{path.name} imports {module}"
                else:
                    assert root in allowed_roots or root in _stdlib(), f"{path.name} imports {module}"


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
