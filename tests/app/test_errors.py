"""Errors page: clusters with counts and their trend over time, per tenant."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from app import labels
from core.domain.auth import Scope
from dashboards import panels
from tests.app.conftest import TENANT_A, TENANT_B, Seeded, metrics, open_app, texts


def _charts(at: AppTest) -> dict[str, dict[str, Any]]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: s for s in specs}


def _trend_total(at: AppTest) -> int:
    """Failures in the error_trend panel; the failures_by_class panel draws the same rows."""
    charts = _charts(at)
    assert sorted(charts) == sorted(panels.panel(k).title for k in ("error_trend", "failures_by_class"))
    trend = sum(sum(trace["y"]) for trace in charts[panels.panel("error_trend").title]["data"])
    by_class = sum(sum(trace["x"]) for trace in charts[panels.panel("failures_by_class").title]["data"])
    assert by_class == trend
    return trend


def test_errors_show_clusters_and_their_trend(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "errors")
    # Every failure: the final ones plus tenant B's retryable HTTP 429.
    failures = len(seeded.a.dead_ids) + len(seeded.b.dead_ids) + len(seeded.b.retrying)
    shown = metrics(at)
    assert shown["Failures in range"] == str(failures)
    assert shown["Clusters"] == "4"
    clusters = at.dataframe[0].value
    assert dict(zip(clusters["class"], clusters["count"], strict=True)) == {
        "http_5xx": 2,
        "timeout": 1,
        "schema_mismatch": 1,
        "http_429": 1,
    }
    assert clusters["class"].iloc[0] == "http_5xx"
    assert _trend_total(at) == failures
    (by_class,) = _charts(at)[panels.panel("failures_by_class").title]["data"]
    assert dict(zip(by_class["y"], by_class["x"], strict=True)) == {
        "http_5xx": 2,
        "timeout": 1,
        "schema_mismatch": 1,
        "http_429": 1,
    }
    http = clusters[clusters["class"] == "http_5xx"].iloc[0]
    assert http["message"] == "HTTP <n> for <url>"
    assert set(http["sample jobs"].split(", ")) == {str(i) for i in seeded.a.dead[seeded.clusters_a["http_5xx"][0]]}


def test_the_time_range_filter_is_kept(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "errors")
    at.selectbox(key="errors_range").set_value("Last 15 minutes").run()
    at.run()
    assert at.selectbox(key="errors_range").value == "Last 15 minutes"
    assert metrics(at)["Clusters"] == "4"


def test_a_tenant_limited_principal_sees_only_its_errors(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("acme-sre", {Scope.READ}, {TENANT_A}), "errors")
    assert metrics(at)["Failures in range"] == str(len(seeded.a.dead_ids))
    assert metrics(at)["Clusters"] == "2"
    clusters = at.dataframe[0].value
    assert set(clusters["class"]) == {"http_5xx", "timeout"}
    assert _trend_total(at) == len(seeded.a.dead_ids)
    assert TENANT_B not in texts(at) + clusters.to_string()
    assert at.selectbox(key="errors_tenant").options == [labels.ALL, TENANT_A]
