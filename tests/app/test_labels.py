"""The console's formatting helpers (app/labels.py) and its empty-chart check (app/charts.py):
pure functions, no ledger."""

from __future__ import annotations

import datetime as dt

import plotly.graph_objects as go
import pytest

from app import charts, labels
from dashboards import figures

NOW = dt.datetime(2026, 12, 1, 18, 15, 2, 287043, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("seconds_ago", "text"),
    [
        (0, "just now"),
        (0.4, "just now"),
        (-0.4, "just now"),
        (1, "1 s ago"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (3 * 60 + 40, "3 min ago"),
        (3599, "59 min ago"),
        (3600, "1 h ago"),
        (23 * 3600 + 3599, "23 h ago"),
        (86400, "1 d ago"),
        (10 * 86400, "10 d ago"),
        (-5, "in 5 s"),
        (-2 * 3600 - 120, "in 2 h"),
        (-3 * 86400, "in 3 d"),
    ],
)
def test_ago_says_how_long_ago_or_how_soon(seconds_ago: float, text: str) -> None:
    assert labels.ago(NOW - dt.timedelta(seconds=seconds_ago), NOW) == text


def test_times_read_from_what_core_queries_returns() -> None:
    iso = "2026-12-01T18:12:02.287043+00:00"  # core.queries.common.plain's format
    assert labels.utc(iso) == "2026-12-01 18:12:02"
    assert labels.ago(iso, NOW) == "3 min ago"
    assert labels.moment(iso, NOW) == "2026-12-01 18:12:02 UTC (3 min ago)"
    # Another zone is shown in UTC; a time without a zone is UTC.
    assert labels.utc("2026-12-01T19:12:02+01:00") == "2026-12-01 18:12:02"
    assert labels.utc("2026-12-01T18:12:02") == "2026-12-01 18:12:02"
    assert labels.utc(dt.datetime(2026, 12, 1, 18, 12, 2, 999999)) == "2026-12-01 18:12:02"
    for nothing in (None, ""):
        assert labels.utc(nothing) == labels.ago(nothing, NOW) == labels.moment(nothing, NOW) == labels.DASH


def test_a_table_shows_times_relative_with_their_exact_utc_time_and_a_dash_for_nothing() -> None:
    rows = [
        {"id": 1, "at": "2026-12-01T18:15:00.1+00:00", "reason": None, "old rate": 0.5, "ticket": "OPS-1"},
        {"id": 2, "at": "2026-12-01T16:00:00+00:00", "reason": "", "old rate": None, "ticket": "OPS-2"},
        {"id": 3, "at": None, "reason": "because", "old rate": 2.0, "ticket": "OPS-3"},
    ]
    assert labels.table(rows, now=NOW, times=("at",)) == [
        {
            "id": 1,
            "at": "2 s ago",
            "at (UTC)": "2026-12-01 18:15:00",
            "reason": "—",
            "old rate": "0.5",
            "ticket": "OPS-1",
        },
        {
            "id": 2,
            "at": "2 h ago",
            "at (UTC)": "2026-12-01 16:00:00",
            "reason": "—",
            "old rate": "—",
            "ticket": "OPS-2",
        },
        {"id": 3, "at": "—", "at (UTC)": "—", "reason": "because", "old rate": "2", "ticket": "OPS-3"},
    ]
    # A column without a dash keeps its values as they are (numbers stay numbers).
    assert labels.table([{"count": 3, "ok": True}], now=NOW) == [{"count": 3, "ok": True}]
    assert labels.table([], now=NOW, times=("at",)) == []


def test_times_inside_a_text_are_tidied_to_the_second_in_utc() -> None:
    assert labels.cell("rate_limited until 2026-12-01 22:09:24.018 UTC") == "rate_limited until 2026-12-01 22:09:24 UTC"
    assert labels.tidy("next 2030-01-01T03:00:00.5+01:00, then more") == "next 2030-01-01 02:00:00 UTC, then more"
    assert labels.tidy("HTTP 503 for /feed?page=17") == "HTTP 503 for /feed?page=17"
    assert labels.tidy("bad 2026-13-45 99:99:99 time") == "bad 2026-13-45 99:99:99 time"


def test_cells_rates_and_labels_of_nothing_are_a_dash() -> None:
    assert labels.DASH == "—"
    assert [labels.cell(v) for v in (None, "", 0, "x", 0.0)] == ["—", "—", 0, "x", 0.0]
    assert (labels.rate(None), labels.rate(0.5), labels.rate(10.0)) == ("—", "0.5/s", "10/s")
    assert labels.state_label(None) == "—"
    assert labels.waiting_summary({"quota": 0}) == "—"


def test_every_console_panel_says_something_when_empty() -> None:
    assert labels.no_data("jobs_waiting") == "Nothing waiting."
    assert labels.no_data("no-such-panel") == labels.NO_DATA == "No data in this window."


def test_has_data_tells_an_empty_figure_from_a_drawn_one() -> None:
    # What dashboards.figures draws for no rows: an annotation, no trace.
    assert not charts.has_data(figures.queue_depth_lines([]))
    assert not charts.has_data(go.Figure())
    # Bars of zeros (nothing waiting for any reason) and missing values draw a bare -1..1 axis.
    nothing_waits = figures.waiting_bars([{"reason": r, "count": 0} for r in ("quota", "rate_limited")])
    assert not charts.has_data(nothing_waits)
    assert not charts.has_data(go.Figure(go.Scatter(x=[NOW], y=[None])))
    assert not charts.has_data(go.Figure(go.Bar(x=[0, 0], y=["a", "b"], orientation="h")))
    # One value is enough: vertical bars by y, horizontal bars by x, categories and indicators.
    assert charts.has_data(figures.waiting_bars([{"reason": "quota", "count": 0}, {"reason": "paused", "count": 2}]))
    assert charts.has_data(go.Figure(go.Bar(x=[3], y=["a"], orientation="h")))
    assert charts.has_data(go.Figure(go.Scatter(x=["acme osv"], y=["open"])))
    assert charts.has_data(go.Figure(go.Indicator(mode="number", value=0)))
    history = [{"at": "2026-12-01T18:15:00+00:00", "to_state": "queued", "event": "submit", "actor": "a"}]
    assert charts.has_data(charts.history_timeline(history, NOW))
    assert not charts.has_data(charts.history_timeline([], NOW))
