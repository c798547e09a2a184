"""Overview page: counts now, the last hour, burn-rate tiles, queue depth, top clusters; sign-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import labels
from core.domain import slo
from core.domain.auth import Scope
from core.queries.jobs import MIN_RATE_SPAN_S
from dashboards import panels
from tests.app.conftest import HOME, TENANT_A, TENANT_B, Seeded, Tenant, button, metrics, open_app, text_input, texts


def _p95_text(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        p95 = conn.execute(
            sa.text(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))"
                " FROM jobs WHERE state IN ('succeeded', 'dead_lettered')"
                " AND finished_at > now() - interval '1 hour'"
            )
        ).scalar_one()
    return f"{p95 * 1000:.0f} ms" if p95 < 1 else f"{p95:.2f} s"


def _finished(*tenants: Tenant) -> tuple[int, int]:
    failed = sum(len(t.dead_ids) for t in tenants)
    return failed, failed + sum(len(t.succeeded) for t in tenants)


def _charts(at: AppTest) -> dict[str, dict[str, Any]]:
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def test_overview_shows_the_numbers_of_every_tenant(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("sre", {Scope.READ}))
    a, b = seeded.a, seeded.b
    shown = metrics(at)
    assert shown["Queued"] == str(len(a.queued) + len(b.queued))
    assert shown["Running"] == str(len(a.running) + len(b.running))
    assert shown["Retrying"] == str(len(a.retrying) + len(b.retrying))
    assert shown["Dead-lettered"] == str(len(a.dead_ids) + len(b.dead_ids))
    # Every job finished a moment ago: jobs/s is over the shortest span, not over the hour.
    _, finished = _finished(a, b)
    assert shown["Jobs/s (last hour)"] == f"{finished / MIN_RATE_SPAN_S:.3g}"
    assert f"{finished} jobs finished in the last hour, all of them in the last 60 s" in texts(at)
    assert shown["p95 run time (last hour)"] == _p95_text(console)

    # Burn rate: the worst tenant and job type (acme: 3 of 5 failed) in every window, red.
    failed, total = _finished(a)
    rate = slo.burn_rate(failed, total, slo.Slo().target)
    assert slo.level(rate) == "critical"
    for window in slo.WINDOWS:
        assert shown[f"Burn rate {window}"] == f"{rate:.1f}x"
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert badges == [f":red-badge[{labels.LEVELS['critical'][0]}]"] * len(slo.WINDOWS)

    # Top error clusters: the two HTTP 503 pages are one cluster of two.
    clusters = at.dataframe[0].value
    by_class = dict(zip(clusters["class"], clusters["count"], strict=True))
    assert by_class == {"http_5xx": 2, "timeout": 1, "schema_mismatch": 1, "http_429": 1}

    # Queue depth per queue and state: the scheduler's sample of live jobs.
    depth = _charts(at)[panels.panel("queue_depth").title]
    assert {t["name"]: t["y"] for t in depth["data"]} == {
        "default queued": [len(a.queued + b.queued)],
        "default running": [len(a.running + b.running)],
        "default retrying": [len(a.retrying + b.retrying)],
    }


def _finish_earlier(engine: sa.Engine, job_ids: list[int], seconds_ago: float) -> None:
    """Move the finish (and start) of finished jobs back in time, as if they ran then."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE jobs SET finished_at = now() - make_interval(secs => :s),"
                " started_at = now() - make_interval(secs => :s + 0.1) WHERE id = ANY(:ids)"
            ),
            {"s": seconds_ago, "ids": job_ids},
        )


def test_jobs_per_s_is_over_the_time_the_data_covers(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    """Two minutes after the first job finished, jobs/s is the jobs over those two minutes
    (what the throughput chart shows), not over the whole hour (60 times too low)."""
    _, finished = _finished(seeded.a, seeded.b)
    _finish_earlier(console, seeded.a.succeeded[:1], 120)
    at = open_app(make_token("sre", {Scope.READ}))
    rate = float(metrics(at)["Jobs/s (last hour)"])
    assert rate == pytest.approx(finished / 120, rel=0.03)
    assert f"{finished} jobs finished in the last hour, all of them in the last 2 min" in texts(at)

    # A job finished before the hour is not in it; one 50 minutes ago stretches the span.
    _finish_earlier(console, seeded.b.succeeded[:1], 2 * 3600)
    at = open_app(make_token("sre", {Scope.READ}))
    assert float(metrics(at)["Jobs/s (last hour)"]) == pytest.approx((finished - 1) / 120, rel=0.03)
    _finish_earlier(console, seeded.b.succeeded[1:2], 3000)
    at = open_app(make_token("sre", {Scope.READ}))
    assert float(metrics(at)["Jobs/s (last hour)"]) == pytest.approx((finished - 1) / 3000, rel=0.03)
    assert f"{finished - 1} jobs finished in the last hour, all of them in the last 50 min" in texts(at)


def test_overview_charts_are_the_declared_panels(seeded: Seeded, make_token: Callable[..., str]) -> None:
    """Every chart is a panel of dashboards/: its title, its unit on the value axis, its figure
    builder's traces, drawn from its read model's rows."""
    at = open_app(make_token("sre", {Scope.READ}))
    charts = _charts(at)
    keys = ("queue_depth", "throughput", "duration_p95", "outcomes")
    assert sorted(charts) == sorted(panels.panel(k).title for k in keys)
    for key in keys:
        p = panels.panel(key)
        assert charts[p.title]["layout"]["yaxis"].get("ticksuffix", "") == panels.unit_suffix(p.unit), key
    # Jobs per second: one-minute buckets over the hour, finished = succeeded + dead-lettered.
    finished, succeeded = _finished(seeded.a, seeded.b)[1], len(seeded.a.succeeded + seeded.b.succeeded)
    lines = {t["name"]: t["y"] for t in charts[panels.panel("throughput").title]["data"]}
    assert round(sum(lines["finished"]) * 60) == finished
    assert round(sum(lines["succeeded"]) * 60) == succeeded
    outcomes = charts[panels.panel("outcomes").title]["data"][0]
    assert dict(zip(outcomes["x"], outcomes["y"], strict=True)) == {
        "succeeded": succeeded,
        "dead_lettered": finished - succeeded,
    }
    (p95,) = charts[panels.panel("duration_p95").title]["data"]
    assert p95["name"] == "p95" and all(v is not None and v >= 0 for v in p95["y"])


def test_overview_of_a_tenant_limited_principal_shows_nothing_of_another(
    seeded: Seeded, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("globex-sre", {Scope.READ}, {TENANT_B}))
    b = seeded.b
    shown = metrics(at)
    assert shown["Queued"] == str(len(b.queued))
    assert shown["Running"] == "0"
    assert shown["Retrying"] == str(len(b.retrying))
    assert shown["Dead-lettered"] == str(len(b.dead_ids))
    _, finished = _finished(b)
    assert shown["Jobs/s (last hour)"] == f"{finished / MIN_RATE_SPAN_S:.3g}"
    failed, total = _finished(b)
    rate = slo.burn_rate(failed, total, slo.Slo().target)
    assert slo.level(rate) == "warn"  # 1 of 20: amber
    assert shown["Burn rate 1h"] == f"{rate:.1f}x"
    badges = {m.value for m in at.markdown if "-badge[" in m.value}
    assert badges == {f":orange-badge[{labels.LEVELS['warn'][0]}]"}
    clusters = at.dataframe[0].value
    assert set(clusters["class"]) == {"schema_mismatch", "http_429"}
    page = texts(at) + clusters.to_string()
    assert TENANT_A not in page
    assert "timed out" not in page
    # The tenant filter offers only the principal's tenants.
    assert at.selectbox(key="overview_tenant").options == [labels.ALL, TENANT_B]
    depth = _charts(at)[panels.panel("queue_depth").title]
    assert {t["name"]: t["y"] for t in depth["data"]} == {
        "default queued": [len(b.queued)],
        "default retrying": [len(b.retrying)],
    }
    outcomes = _charts(at)[panels.panel("outcomes").title]["data"][0]
    assert dict(zip(outcomes["x"], outcomes["y"], strict=True)) == {
        "succeeded": len(b.succeeded),
        "dead_lettered": len(b.dead_ids),
    }


def test_tenant_filter_narrows_the_overview(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("admin", set(Scope)))
    # The picker offers the tenants of the ledger (queries.tenants), not free text.
    assert at.selectbox(key="overview_tenant").options == [labels.ALL, TENANT_A, TENANT_B]
    at.selectbox(key="overview_tenant").set_value(TENANT_A).run()
    shown = metrics(at)
    assert shown["Queued"] == str(len(seeded.a.queued))
    assert shown["Running"] == str(len(seeded.a.running))
    assert shown["Dead-lettered"] == str(len(seeded.a.dead_ids))
    assert set(at.dataframe[0].value["class"]) == {"http_5xx", "timeout"}
    _, finished = _finished(seeded.a)
    assert shown["Jobs/s (last hour)"] == f"{finished / MIN_RATE_SPAN_S:.3g}"
    assert f"{finished} jobs finished in the last hour, all of them in the last 60 s" in texts(at)


def test_sign_in_with_a_token(seeded: Seeded, make_token: Callable[..., str]) -> None:
    token = make_token("operator", {Scope.READ, Scope.OPERATE})
    at = AppTest.from_file(str(HOME), default_timeout=60).run()
    assert not at.metric  # nothing shown before signing in
    assert [t.label for t in at.text_input] == [labels.TOKEN_LABEL]
    text_input(at, labels.TOKEN_LABEL).input("orch_not-a-token")
    button(at, labels.SIGN_IN).click().run()
    assert "unknown or revoked API token" in texts(at)
    assert not at.metric
    text_input(at, labels.TOKEN_LABEL).input(token)
    button(at, labels.SIGN_IN).click().run()
    assert not at.exception
    assert "Signed in as **operator**" in texts(at)
    assert metrics(at)["Queued"] == str(len(seeded.a.queued) + len(seeded.b.queued))
    button(at, labels.SIGN_OUT).click().run()
    assert not at.metric
    assert [t.label for t in at.text_input] == [labels.TOKEN_LABEL]


def test_console_token_from_the_environment_signs_in(
    seeded: Seeded, make_token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_CONSOLE_TOKEN", make_token("local-admin", set(Scope)))
    at = open_app(None)
    assert "Signed in as **local-admin**" in texts(at)
    assert metrics(at)["Dead-lettered"] == str(len(seeded.a.dead_ids) + len(seeded.b.dead_ids))


def test_without_a_database_url_the_console_says_what_to_set(
    console: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import settings

    monkeypatch.delenv("ORCH_DATABASE_URL")
    settings.get_settings.cache_clear()
    at = AppTest.from_file(str(HOME), default_timeout=60).run()
    assert [e.value for e in at.error] == [labels.NO_DATABASE]
    assert not at.text_input


def test_overview_shows_runs(console: sa.Engine, make_token: Callable[..., str]) -> None:
    from core import control
    from core.domain.auth import local_principal
    from tests.integration.test_dag_runs import work

    admin = local_principal("tests")
    spec = control.RunSpec(TENANT_A, "nightly", [control.JobSpec(TENANT_A, "noop", key="only")])
    failing = control.submit_run(console, admin, spec, control.NoDoorbell())
    work(console, fail={failing.jobs["only"]})
    control.submit_run(console, admin, control.RunSpec(TENANT_A, "hourly", spec.jobs), control.NoDoorbell())
    at = open_app(make_token("sre", {Scope.READ}))
    shown = metrics(at)
    assert shown["Runs running"] == "1"
    assert shown["Runs failed (last hour)"] == "1"
    assert shown["p95 run duration (last day)"].endswith(("ms", " s"))
    other = open_app(make_token("b-only", {Scope.READ}, {TENANT_B}))
    assert metrics(other)["Runs running"] == "0"
