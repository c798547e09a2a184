"""Rate limits page: 429s and admission denials over time, rate changes (who and why) and the
jobs waiting now by reason, from a real ledger; tenants kept apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from app import labels
from core import queries
from core.domain.auth import Scope
from tests.app.conftest import TENANT_A, TENANT_B, Flow, metrics, open_app, texts


def _charts(at: AppTest) -> dict[str, dict[str, Any]]:
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {c["layout"]["title"]["text"]: c for c in charts}


def _changes(at: AppTest) -> list[dict[str, Any]]:
    frame = next(d.value for d in at.dataframe if "new rate" in d.value.columns)
    return list(frame.to_dict("records"))


def test_429s_denials_rate_changes_and_waiting_jobs(flow: Flow, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "rate_limits")
    shown = metrics(at)
    assert shown["Upstream 429s in range"] == "1"
    assert shown["Admission denials in range"] == "2"  # the two nvd jobs without a token
    assert shown["Rate changes in range"] == "4"  # three sources configured, one 429
    assert shown["Waiting for a token"] == "3"
    assert {labels.WAIT_SHORT[r]: shown[labels.WAIT_SHORT[r]] for r in queries.WAIT_REASONS} == {
        labels.WAIT_SHORT[r]: "3" if r == "rate_limited" else "0" for r in queries.WAIT_REASONS
    }

    charts = _charts(at)
    events = charts["Upstream 429s and admission denials per second"]
    assert events["layout"]["barmode"] == "stack"
    per_kind = {t["name"]: sum(t["y"]) for t in events["data"]}
    step_s = 60  # the last hour, in one-minute steps
    assert per_kind == {"upstream 429": 1 / step_s, "rate limited": 2 / step_s}
    rates = charts["Refill rate: adaptive vs configured"]
    adaptive = {t["name"]: t["y"] for t in rates["data"] if not t["name"].endswith(" configured")}
    assert adaptive == {
        "acme nvd.example": [1.0, 0.5, 0.5],
        "acme osv.example": [10.0, 10.0],
        "globex api.ghsa.example": [5.0, 5.0],
    }
    waiting = charts["Jobs waiting by reason"]["data"][0]
    assert dict(zip(waiting["x"], waiting["y"], strict=True))["rate limited"] == 3
    tokens = charts["Bucket tokens"]
    assert {t["name"] for t in tokens["data"]} == {"tokens", "capacity"}

    changes = _changes(at)
    assert [(c["tenant"], c["host"], c["new rate"]) for c in changes] == [
        (TENANT_A, "nvd.example", "0.5/s"),
        (TENANT_B, "api.ghsa.example", "5/s"),
        (TENANT_A, "osv.example", "10/s"),
        (TENANT_A, "nvd.example", "1/s"),
    ]
    assert changes[0]["actor"] == "seed-worker" and changes[0]["reason"].startswith("upstream 429: rate halved")
    assert changes[0]["old rate"] == "1/s"
    assert changes[-1]["old rate"] == labels.DASH  # configured: no rate before
    assert "4 changes, newest first." in texts(at)


def test_filters_are_kept_and_tenants_kept_apart(flow: Flow, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("globex-viewer", {Scope.READ}, {TENANT_B}), "rate_limits")
    shown = metrics(at)
    assert (shown["Upstream 429s in range"], shown["Admission denials in range"]) == ("0", "0")
    assert (shown["Rate changes in range"], shown["Waiting for a token"]) == ("1", "0")
    assert [(c["tenant"], c["host"]) for c in _changes(at)] == [(TENANT_B, "api.ghsa.example")]
    everything = texts(at) + json.dumps(_charts(at)) + "".join(d.value.to_string() for d in at.dataframe)
    assert TENANT_A not in everything and "nvd.example" not in everything
    assert at.selectbox(key="ratelimits_tenant").options == [labels.ALL, TENANT_B]

    # An admin picks a tenant and a range; both survive a refresh.
    at = open_app(make_token("sre", {Scope.READ}), "rate_limits")
    at.selectbox(key="ratelimits_tenant").set_value(TENANT_A).run()
    at.selectbox(key="ratelimits_range").set_value("Last 15 minutes").run()
    at.run()
    assert at.selectbox(key="ratelimits_tenant").value == TENANT_A
    assert at.selectbox(key="ratelimits_range").value == "Last 15 minutes"
    assert metrics(at)["Rate changes in range"] == "3"
    assert {c["tenant"] for c in _changes(at)} == {TENANT_A}
