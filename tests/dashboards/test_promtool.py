"""promtool on the shipped Prometheus files: configs and rules check, the rule unit tests pass,
every panel's PromQL parses, and the rule unit tests fail when a rule is broken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dashboards import promql

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it when missing)",
)
RULE_TESTS = sorted((promql.PROMETHEUS / "tests").glob("*.yml"))
#: What Grafana substitutes for its own variables, for a syntax check outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$tenant": ".*", "$job_type": ".*"}


def _promtool(*args: str, cwd: Path = promql.ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_configs_and_rule_files_check() -> None:
    for config in ("prometheus.yml", "prometheus.local.yml"):
        proc = _promtool("check", "config", str(promql.PROMETHEUS / config))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _promtool("check", "rules", str(promql.RECORDING), str(promql.ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 3
    proc = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    rules: list[dict[str, str]] = []
    for path in promql.dashboard_files():
        for where, expr in promql.dashboard_exprs(path):
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{where}: a Grafana variable this check does not know: {expr}"
            rules.append({"record": f"panel_check_{len(rules)}", "expr": expr})
    rule_file = tmp_path / "panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}), encoding="utf-8")
    proc = _promtool("check", "rules", str(rule_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("rule_file", "good", "broken", "tests"),
    [
        (
            "alerts.yml",
            "tenant_job_type:orch_slo_burn_rate:5m > 14.4",
            "tenant_job_type:orch_slo_burn_rate:5m > 25",
            "slo.yml",
        ),
        (
            "alerts.yml",
            "orch_oldest_ready_age_seconds) > 600",
            "orch_oldest_ready_age_seconds) > 6000",
            "operations.yml",
        ),
        (
            "alerts.yml",
            'orch_queue_depth{state="queued"}',
            'orch_queue_depth{state=~"queued|running"}',
            "operations.yml",
        ),
        ("alerts.yml", "max by (queue) (orch_queue_depth", "sum by (queue) (orch_queue_depth", "operations.yml"),
        ("recording.yml", "(1 - 0.99)", "(1 - 0.9)", "slo.yml"),
        (
            "recording.yml",
            'outcome=~"succeeded|dead_lettered"',
            'outcome=~"succeeded|dead_lettered|canceled"',
            "slo.yml",
        ),
        ("recording.yml", "[3d]", "[6h]", "slo_slow.yml"),
        # Flow control: the circuit alert counts half-open as not closed, and only
        # rate-limited jobs growing (not quota) fire; a bucket probing its upstream now and
        # then is not sustained throttling.
        ("alerts.yml", "(orch_circuit_state) >= 1", "(orch_circuit_state) >= 2", "flow.yml"),
        ("alerts.yml", "(orch_circuit_state) >= 1", "(orch_circuit_state) >= 0", "flow.yml"),
        ("alerts.yml", "orch_upstream_throttled_total[3m]", "orch_upstream_throttled_total[10m]", "flow.yml"),
        ("alerts.yml", 'reason="rate_limited"', 'reason=~"rate_limited|quota"', "flow.yml"),
        (
            "alerts.yml",
            'orch_jobs_waiting{reason="rate_limited"}) > 100',
            'orch_jobs_waiting{reason="rate_limited"}) > 10',
            "flow.yml",
        ),
        # Watermark lag: above (not at) 2 hours, held for 15 minutes, once per tenant and
        # source whatever the number of exporters and job types.
        ("alerts.yml", "(orch_watermark_lag_seconds) > 7200", "(orch_watermark_lag_seconds) > 9000", "schedules.yml"),
        ("alerts.yml", "(orch_watermark_lag_seconds) > 7200", "(orch_watermark_lag_seconds) >= 7200", "schedules.yml"),
        (
            "alerts.yml",
            "max by (tenant, source) (orch_watermark_lag_seconds)",
            "sum by (tenant, source) (orch_watermark_lag_seconds)",
            "schedules.yml",
        ),
        (
            "alerts.yml",
            "max by (tenant, source) (orch_watermark_lag_seconds)",
            "max by (tenant, source, job_type) (orch_watermark_lag_seconds)",
            "schedules.yml",
        ),
        (
            "alerts.yml",
            "(orch_watermark_lag_seconds) > 7200\n        for: 15m",
            "(orch_watermark_lag_seconds) > 7200\n        for: 5m",
            "schedules.yml",
        ),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(
    tmp_path: Path, rule_file: str, good: str, broken: str, tests: str
) -> None:
    shutil.copytree(promql.PROMETHEUS / "rules", tmp_path / "rules")
    shutil.copytree(promql.PROMETHEUS / "tests", tmp_path / "tests")
    target = tmp_path / "rules" / rule_file
    text = target.read_text(encoding="utf-8")
    assert good in text
    target.write_text(text.replace(good, broken), encoding="utf-8")
    assert _promtool("check", "rules", str(target)).returncode == 0, "the mutation must still be valid PromQL"
    proc = _promtool("test", "rules", f"tests/{tests}", cwd=tmp_path)
    assert proc.returncode != 0, f"tests/{tests} did not notice {good!r} -> {broken!r}"
