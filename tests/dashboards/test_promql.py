"""Every metric a dashboard or a rule names is declared once, in core.domain.metrics (or is the
output of a recording rule), and is filtered and grouped only by labels it has."""

from __future__ import annotations

from core.domain import metrics
from tests.dashboards import promql


def _known() -> dict[str, set[str]]:
    return {**promql.declared_labels(), **promql.recorded_labels(promql.load_rules(promql.RECORDING))}


def test_names_in_strings_and_recorded_names_are_told_apart() -> None:
    expr = (
        'sum by (tenant) (rate(orch_jobs_finished_total{outcome="orch_not_a_metric", queue!~"a|b"}[5m]))'
        ' / on (tenant) tenant:orch_thing:rate5m{slo="x"} > $threshold and orch_up offset 1h:5m'
    )
    assert promql.metric_names(expr) == {"orch_jobs_finished_total", "tenant:orch_thing:rate5m", "orch_up"}
    assert promql.selectors(expr) == [
        ("orch_jobs_finished_total", {"outcome", "queue"}),
        ("tenant:orch_thing:rate5m", {"slo"}),
    ]
    assert promql.grouping_labels(expr) == {"tenant"}


def test_problems_names_undeclared_metrics_unknown_labels_and_grouping() -> None:
    known = _known()
    found = promql.problems(
        [
            ("typo", "sum(rate(orch_jobs_finish_total[5m]))"),
            ("histogram without suffix", "histogram_quantile(0.95, rate(orch_job_duration_seconds[5m]))"),
            ("no tenant on queue depth", 'orch_queue_depth{tenant=~"$tenant"}'),
            ("grouped by a missing label", "sum by (tenant) (orch_oldest_ready_age_seconds)"),
            ("unrecorded window", "tenant_job_type:orch_slo_burn_rate:2h > 1"),
            ("fine", 'sum by (le) (rate(orch_job_duration_seconds_bucket{job_type=~"$job_type"}[5m]))'),
        ],
        known,
    )
    assert found == [
        "typo: orch_jobs_finish_total is neither declared in core.domain.metrics nor recorded",
        "histogram without suffix: orch_job_duration_seconds is neither declared in core.domain.metrics nor recorded",
        "no tenant on queue depth: orch_queue_depth has no label ['tenant']",
        "grouped by a missing label: groups by 'tenant', which none of ['orch_oldest_ready_age_seconds'] carries",
        "unrecorded window: tenant_job_type:orch_slo_burn_rate:2h is neither declared in core.domain.metrics nor "
        "recorded",
    ]


def test_generated_dashboards_use_only_declared_metrics_and_labels() -> None:
    files = promql.dashboard_files()
    assert files, "no grafana/dashboards/*.json; run python -m dashboards.grafana"
    exprs = [e for path in files for e in promql.dashboard_exprs(path)]
    assert len(exprs) > 20
    assert promql.problems(exprs, _known()) == []


def test_rules_use_only_declared_metrics_and_labels() -> None:
    exprs = list(promql.rule_exprs())
    assert promql.problems(exprs, _known()) == []


def test_recorded_names_follow_level_metric_operation_and_do_not_shadow_declared_ones() -> None:
    recorded = promql.recorded_labels(promql.load_rules(promql.RECORDING))
    assert recorded
    for name, labels in recorded.items():
        level, metric, operation = name.split(":")
        assert metric.startswith("orch_"), name
        assert operation, name
        assert set(level.split("_")) <= {"tenant", "job", "type"}, name
        assert {"tenant", "job_type", "slo"} == labels, name
        assert name not in metrics.declared_series()


def test_every_declared_metric_reaches_a_dashboard_or_a_rule() -> None:
    used: set[str] = set()
    for path in promql.dashboard_files():
        for _, expr in promql.dashboard_exprs(path):
            used |= promql.metric_names(expr)
    for _, expr in promql.rule_exprs():
        used |= promql.metric_names(expr)
    # The ledger's own burn-rate gauge is the console's number; Grafana reads the recording rules.
    unused = {m.name for m in metrics.METRICS if not set(m.series_names()) & used} - {"orch_slo_burn_rate"}
    assert unused == set()
