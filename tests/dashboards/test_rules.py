"""The Prometheus rules say what core.domain.slo says (windows, target, multi-window alerts),
every alert is routable and explained, and the promtool tests make every alert fire and stay
quiet at least once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from core import queries, settings
from core.domain import metrics, slo
from dashboards import panels, schedule_panels
from tests.dashboards import promql

RATIO = "tenant_job_type:orch_slo_error_ratio:rate{window}"
BURN = "tenant_job_type:orch_slo_burn_rate:{window}"


def _squash(text: str) -> str:
    return " ".join(text.split())


def _records() -> dict[str, dict[str, Any]]:
    return {r["record"]: r for r in promql.load_rules(promql.RECORDING)}


def _alerts() -> dict[str, dict[str, Any]]:
    rules = promql.load_rules(promql.ALERTS)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    return {r["alert"]: r for r in rules}


def test_one_error_ratio_and_one_burn_rate_per_slo_window() -> None:
    records = _records()
    expected = {RATIO.format(window=w) for w in slo.WINDOWS} | {BURN.format(window=w) for w in slo.WINDOWS}
    assert set(records) == expected


def test_error_ratio_is_dead_lettered_over_succeeded_plus_dead_lettered_in_every_window() -> None:
    records = _records()
    first = next(iter(slo.WINDOWS))
    template = _squash(records[RATIO.format(window=first)]["expr"])
    assert 'rate(orch_jobs_finished_total{outcome="dead_lettered"}[' in template
    assert 'rate(orch_jobs_finished_total{outcome=~"succeeded|dead_lettered"}[' in template
    assert "canceled" not in template and "retried" not in template
    for window in slo.WINDOWS:
        rule = records[RATIO.format(window=window)]
        expr = _squash(rule["expr"])
        # The same expression in every window, only the range differs.
        assert expr == template.replace(f"[{first}]", f"[{window}]"), window
        assert set(re.findall(r"\[(\w+)\]", expr)) == {window}
        assert rule["labels"] == {"slo": slo.Slo().name}


def test_burn_rate_divides_by_the_error_budget_of_the_default_slo() -> None:
    assert settings.Settings.model_fields["slo_target"].default == slo.Slo().target
    records = _records()
    for window in slo.WINDOWS:
        expr = _squash(records[BURN.format(window=window)]["expr"])
        assert expr == f"{RATIO.format(window=window)} / (1 - {slo.Slo().target})"


def test_burn_alerts_are_the_multi_window_alerts_of_core_domain_slo() -> None:
    alerts = _alerts()
    burn = {name: rule for name, rule in alerts.items() if "orch_slo_burn_rate" in rule["expr"]}
    pattern = re.compile(r"^(\S+) > ([0-9.]+) and (\S+) > ([0-9.]+)$")
    found = set()
    for name, rule in burn.items():
        match = pattern.match(_squash(rule["expr"]))
        assert match, f"{name}: not '<long> > T and <short> > T': {rule['expr']}"
        long_name, long_t, short_name, short_t = match.groups()
        assert float(long_t) == float(short_t), name
        long_w, short_w = rule["labels"]["long_window"], rule["labels"]["short_window"]
        assert (long_name, short_name) == (BURN.format(window=long_w), BURN.format(window=short_w)), name
        assert "for" not in rule, f"{name}: the short window already resets the alert"
        found.add((long_w, short_w, float(long_t), rule["labels"]["severity"]))
    assert found == {(lw, sw, t, sev) for lw, sw, t, sev in slo.ALERTS}


def test_every_alert_has_a_severity_and_explains_itself() -> None:
    for name, rule in _alerts().items():
        assert name.startswith("Orch"), name
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"].split()) >= 10, name


def test_stuck_job_alert_and_panel_agree() -> None:
    rule = _alerts()["OrchReadyJobStuck"]
    assert _squash(rule["expr"]) == "max by (queue) (orch_oldest_ready_age_seconds) > 600"
    assert rule["for"] == "5m"
    assert "OrchReadyJobStuck" in panels.panel("oldest_ready_age").description


def test_flow_control_alerts_read_the_declared_encodings_and_panels_name_them() -> None:
    alerts = _alerts()
    circuit = alerts["OrchCircuitOpen"]
    half_open = metrics.CIRCUIT_STATES["half_open"]
    assert half_open < metrics.CIRCUIT_STATES["open"] and metrics.CIRCUIT_STATES["closed"] < half_open
    assert _squash(circuit["expr"]) == f"max by (tenant, source) (orch_circuit_state) >= {half_open}"
    assert circuit["for"] == "5m"
    throttling = alerts["OrchSustainedThrottling"]
    assert "orch_upstream_throttled_total" in throttling["expr"] and throttling["for"] == "15m"
    backlog = alerts["OrchRateLimitedBacklogGrowing"]
    assert backlog["expr"].count('orch_jobs_waiting{reason="rate_limited"}') == 2
    assert "rate_limited" in queries.WAIT_REASONS
    for alert, key in (
        ("OrchCircuitOpen", "circuit_state"),
        ("OrchSustainedThrottling", "rate_limit_events"),
        ("OrchRateLimitedBacklogGrowing", "jobs_waiting"),
    ):
        assert alert in panels.panel(key).description, (alert, key)


def test_watermark_alert_panel_and_metric_agree() -> None:
    rule = _alerts()["OrchWatermarkLagHigh"]
    threshold = schedule_panels.WATERMARK_LAG_ALERT_S
    assert _squash(rule["expr"]) == f"max by (tenant, source) (orch_watermark_lag_seconds) > {threshold}"
    assert rule["for"] == "15m" and rule["labels"]["severity"] == "ticket"
    # The panel groups as the alert does, and draws its threshold.
    lag = panels.panel("watermark_lag")
    (query,) = lag.queries
    assert promql.grouping_labels(query.expr) == promql.grouping_labels(rule["expr"]) == {"tenant", "source"}
    assert [t.value for t in lag.thresholds] == [0.0, threshold]
    assert "OrchWatermarkLagHigh" in lag.description
    # The alert groups by labels the metric has; its description names the commands to look.
    assert {"tenant", "source"} < set(metrics.BY_NAME["orch_watermark_lag_seconds"].labels)
    assert "orch watermarks list --tenant {{ $labels.tenant }}" in _squash(rule["annotations"]["description"])


def test_promtool_tests_make_every_alert_fire_and_stay_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    test_files = sorted((promql.PROMETHEUS / "tests").glob("*.yml"))
    assert test_files
    for path in test_files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        rule_files = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert promql.ALERTS.resolve() in rule_files or promql.RECORDING.resolve() in rule_files, path
        assert all(Path(f).exists() for f in rule_files), path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
                for alert in check["exp_alerts"]:
                    assert alert["exp_annotations"], f"{path.name}: {check['alertname']} without annotations"
    alerts = set(_alerts())
    assert alerts - fired == set(), "alerts no promtool test makes fire"
    assert alerts - quiet == set(), "alerts no promtool test shows quiet"
