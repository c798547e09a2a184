"""Panel declarations, read models and figure builders: every console panel names a read model
that exists, every figure builder draws sample rows (no database: builders are pure), and the
read models hand the console's filters to core.queries unchanged."""

from __future__ import annotations

import ast
import datetime as dt
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
    "sources": [
        {
            "id": i + 1,
            "tenant": tenant,
            "name": name,
            "host": host,
            "bucket_id": bucket,
            "tokens": tokens,
            "capacity": 5.0,
            "rate": rate,
            "base_rate": 20.0,
            "min_rate": 0.1,
            "blocked_until": None,
            "denied_total": 7,
            "upstream_429_total": 3,
            "circuit_state": state,
            "circuit_failures": 6,
            "circuit_outcomes": 10,
            "opened_total": 2,
            "active": 1,
            "max_active": 4,
            "waiting": {"rate_limited": 3},
            "health": "ok",
        }
        for i, (tenant, name, host, bucket, tokens, rate, state) in enumerate(
            [
                ("acme", "nvd", "nvd.example", 1, 2.5, 10.0, "open"),
                ("acme", "nvd-cve", "nvd.example", 1, 2.5, 10.0, "closed"),
                ("globex", "osv", "osv.example", 2, 5.0, 20.0, "half_open"),
            ]
        )
    ],
    "buckets": [
        {
            "tenant": "acme",
            "host": "nvd.example",
            "tokens": 2.5,
            "capacity": 5.0,
            "rate": 10.0,
            "base_rate": 20.0,
            "blocked_until": None,
            "denied_total": 7,
            "upstream_429_total": 3,
            "sources": ["nvd", "nvd-cve"],
        },
        {
            "tenant": "globex",
            "host": "osv.example",
            "tokens": 0.0,
            "capacity": 5.0,
            "rate": 20.0,
            "base_rate": 20.0,
            "blocked_until": _at(9),
            "denied_total": 0,
            "upstream_429_total": 0,
            "sources": ["osv"],
        },
    ],
    "bucket_rates": [
        {
            "at": _at(m),
            "tenant": "acme",
            "host": "nvd.example",
            "rate": rate,
            "base_rate": 20.0,
            "reason": why,
            "actor": who,
        }
        for m, rate, why, who in (
            (0, 20.0, None, None),
            (3, 10.0, "upstream 429: rate halved", "worker-1"),
            (5, 11.0, "aimd: 10 successes", "aimd"),
            (9, 11.0, None, None),
        )
    ],
    "rate_limit_events": [
        {"at": _at(m), "kind": kind, "count": count, "step_s": 60}
        for m, kind, count in (
            (0, "rate_limited", 120),
            (0, "upstream_429", 6),
            (1, "quota", 30),
            (1, "rate_limited", 60),
            (2, "circuit_open", 12),
        )
    ],
    "quotas": [
        {
            "id": 1,
            "tenant": "acme",
            "job_type": "feeds.fetch",
            "max_active": 4,
            "max_per_hour": None,
            "active": 3,
            "started_last_hour": 40,
            "waiting": 2,
        },
        {
            "id": 2,
            "tenant": "acme",
            "job_type": "vex.parse",
            "max_active": None,
            "max_per_hour": 100,
            "active": 1,
            "started_last_hour": 99,
            "waiting": 0,
        },
    ],
    "waiting": [
        {"reason": reason, "count": count}
        for reason, count in zip(queries.WAIT_REASONS, (0, 1, 2, 3, 40, 0), strict=True)
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
    assert len(CONSOLE_PANELS) >= 14
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
        "bucket_rate": "orch_bucket_base_rate",
        "bucket_tokens": "orch_bucket_tokens",
        "rate_limit_events": "orch_ratelimit_denials_total",
        "circuit_state": "orch_circuit_state",
        "circuit_openings": "orch_circuit_opened_total",
        "quota_slots": "orch_quota_max_active",
        "jobs_waiting": "orch_jobs_waiting",
        "schedule_ticks_fired": "orch_schedule_ticks_total",
        "schedule_ticks_not_fired": "orch_schedule_ticks_total",
        "backfill_windows": "orch_backfill_windows",
        "watermark_lag": "orch_watermark_lag_seconds",
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
        "sources": SAMPLE_ROWS["sources"],
        "throttles": [
            {
                "id": 2,
                "at": _at(3),
                "tenant": "acme",
                "host": "nvd.example",
                "old_rate": 20.0,
                "new_rate": 10.0,
                "reason": "upstream 429: rate halved",
                "actor": "worker-1",
            }
        ],
        "rate_limit_series": [{k: v for k, v in r.items() if k != "step_s"} for r in SAMPLE_ROWS["rate_limit_events"]],
        "quotas": SAMPLE_ROWS["quotas"],
        "waiting_by_reason": {r["reason"]: r["count"] for r in SAMPLE_ROWS["waiting"]},
    }
    real = {name: getattr(queries, name, None) for name in canned}
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name, result in canned.items():
        monkeypatch.setattr(queries, name, _fake(calls, name, result), raising=False)
    conn, principal = object(), local_principal("tester")
    filters = read_models.Filters(tenant="acme", job_type="vex.parse", since_s=7200)

    out = {name: read_models.run(name, conn, principal, filters) for name in read_models.READ_MODELS}

    by_name = {name: (args, kwargs) for name, args, kwargs in calls}
    assert all(args == (conn, principal) for _, args, _ in calls)
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
    assert by_name["sources"][1] == {"tenant": "acme"}
    assert by_name["throttles"][1] == {"tenant": "acme", "since_s": 7200, "limit": read_models.RATE_CHANGE_LIMIT}
    assert by_name["rate_limit_series"][1] == {"tenant": "acme", "since_s": 7200, "step_s": 60}
    assert by_name["quotas"][1] == {"tenant": "acme"}
    assert by_name["waiting_by_reason"][1] == {"tenant": "acme"}

    assert out["job_counts"] == [{"state": "queued", "count": 2}, {"state": "dead_lettered", "count": 1}]
    assert [r["bucket_s"] for r in out["throughput"]] == [60, 60, 60]
    assert [r["fingerprint"] for r in out["error_clusters"]] == ["0f0f0f0f0f0f0f0f"]  # touched vex.parse
    assert out["burn_rates"] == SAMPLE_ROWS["burn_rates"]
    assert [r["job_type"] for r in out["quotas"]] == ["vex.parse"]  # the selected job type only
    assert out["waiting"] == SAMPLE_ROWS["waiting"]
    assert [r["step_s"] for r in out["rate_limit_events"]] == [60] * len(SAMPLE_ROWS["rate_limit_events"])
    # Two sources of nvd.example share one bucket.
    assert [(b["host"], b["sources"]) for b in out["buckets"]] == [
        ("nvd.example", ["nvd", "nvd-cve"]),
        ("osv.example", ["osv"]),
    ]
    # Per bucket: the rate when the range starts, each change, the rate now.
    nvd = [(r["rate"], r["reason"]) for r in out["bucket_rates"] if r["host"] == "nvd.example"]
    assert nvd == [(20.0, None), (10.0, "upstream 429: rate halved"), (10.0, None)]
    assert [r["rate"] for r in out["bucket_rates"] if r["host"] == "osv.example"] == [20.0, 20.0]

    # Once core.queries has these functions, the read models' calls must fit their signatures.
    missing = [name for name, fn in real.items() if fn is None]
    for name, args, kwargs in calls:
        fn = real[name]
        if fn is not None:
            inspect.signature(fn).bind(*args, **kwargs)
    if missing:
        pytest.skip(f"core.queries does not have {', '.join(missing)} yet: signatures not checked against them")


def test_rate_steps_start_with_the_rate_in_force_and_end_now() -> None:
    now = dt.datetime(2025, 3, 1, 11, 0, tzinfo=dt.UTC)
    bucket = {"tenant": "acme", "host": "nvd.example", "rate": 5.0, "base_rate": 20.0}
    change = {"tenant": "acme", "host": "nvd.example", "actor": "aimd"}
    changes = [  # newest first, as queries.throttles gives them
        {**change, "id": 3, "at": "2025-03-01T10:50:00+00:00", "old_rate": 10.0, "new_rate": 5.0, "reason": "429"},
        {**change, "id": 2, "at": "2025-03-01T10:40:00+00:00", "old_rate": 20.0, "new_rate": 10.0, "reason": "429"},
    ]
    rows = read_models.rate_steps(changes, [bucket], now=now, since_s=3600)
    assert [(r["at"], r["rate"]) for r in rows] == [
        ("2025-03-01T10:00:00+00:00", 20.0),
        ("2025-03-01T10:40:00+00:00", 10.0),
        ("2025-03-01T10:50:00+00:00", 5.0),
        ("2025-03-01T11:00:00+00:00", 5.0),
    ]
    # Changes cut at the limit: the line starts at the oldest change read.
    cut = read_models.rate_steps(changes, [bucket], now=now, since_s=3600, complete=False)
    assert [r["rate"] for r in cut] == [10.0, 5.0, 5.0]
    # A bucket created in the range (its first change has no old rate) starts there.
    created = [{**changes[1], "old_rate": None}]
    assert [r["rate"] for r in read_models.rate_steps(created, [bucket], now=now, since_s=3600)] == [10.0, 5.0]
    # Nothing changed: flat at the rate now.
    assert [r["rate"] for r in read_models.rate_steps([], [bucket], now=now, since_s=3600)] == [5.0, 5.0]


def test_flow_control_figures() -> None:
    rates = figures.bucket_rate_steps(SAMPLE_ROWS["bucket_rates"])
    adaptive = _trace(rates, "acme nvd.example")
    assert adaptive.line.shape == "hv"
    assert list(adaptive.y) == [20.0, 10.0, 11.0, 11.0]
    configured = _trace(rates, "acme nvd.example configured")
    assert list(configured.y) == [20.0, 20.0] and configured.line.dash == "dash"

    tokens = figures.bucket_tokens_bars(SAMPLE_ROWS["buckets"])
    assert list(_trace(tokens, "tokens").x) == [0.0, 2.5]  # globex on top of acme, top down
    assert _trace(tokens, "tokens").text[0].startswith("blocked until ")
    assert list(_trace(tokens, "capacity").x) == [5.0, 5.0]

    events = figures.rate_limit_bars(SAMPLE_ROWS["rate_limit_events"])
    assert [t.name for t in events.data] == ["upstream 429", "circuit open", "quota", "rate limited"]
    assert list(_trace(events, "rate limited").y) == [2.0, 1.0]  # per second over 60 s steps
    assert events.layout.barmode == "stack"

    circuits = figures.circuit_state_dots(SAMPLE_ROWS["sources"]).data[0]
    assert list(circuits.y) == ["open", "closed", "half_open"]
    assert list(circuits.marker.color) == [
        figures.LEVEL_COLORS["critical"],
        figures.LEVEL_COLORS["ok"],
        figures.LEVEL_COLORS["warn"],
    ]

    slots = figures.quota_slots_bars(SAMPLE_ROWS["quotas"])
    assert list(_trace(slots, "in use").x) == [1, 3]
    assert list(_trace(slots, "max active").x) == [None, 4]

    waiting = figures.waiting_bars(SAMPLE_ROWS["waiting"]).data[0]
    assert len(waiting.x) == len(queries.WAIT_REASONS)
    assert dict(zip(waiting.x, waiting.y, strict=True))["rate limited"] == 40


def test_circuit_panel_encodes_states_as_the_metric_does() -> None:
    circuit = panels.panel("circuit_state")
    assert [(t.value, t.level) for t in circuit.thresholds] == [(0.0, "ok"), (1.0, "warn"), (2.0, "critical")]
    assert dict(circuit.value_texts) == {0.0: "closed", 1.0: "half-open", 2.0: "open"}
    with pytest.raises(ValueError, match="only a timeseries stacks"):
        panels.Panel(
            "k", "t", "short", "d", panels.PanelType.STAT, panels.STAT, (panels.Query("up"),), None, None, stacked=True
        )


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
