"""The committed Grafana dashboards are exactly what the panel declarations generate, and they,
the provisioning files, the Prometheus configs and docker-compose.yml agree with each other."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from dashboards import grafana, panel_types, panels, schedule_panels
from tests.dashboards import promql

EXPECTED = {
    "overview.json": "orch-overview",
    "queues.json": "orch-queues",
    "errors-slo.json": "orch-errors-slo",
    "flow-control.json": "orch-flow-control",
    "runs.json": "orch-runs",
    "schedules.json": "orch-schedules",
}


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_committed_dashboards_are_what_the_declarations_generate() -> None:
    assert grafana.stale(promql.DASHBOARD_DIR) == [], "stale dashboards: run python -m dashboards.grafana"


def test_generator_gives_the_same_bytes_in_any_process(tmp_path: Path) -> None:
    outs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-m", "dashboards.grafana", "--out", str(out)],
            cwd=promql.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.json"))})
    committed = {p.name: p.read_bytes() for p in promql.dashboard_files()}
    assert outs[0] == outs[1] == committed
    assert set(committed) == set(EXPECTED)


def test_check_fails_on_an_edited_missing_or_unknown_file(tmp_path: Path) -> None:
    assert grafana.main(["--out", str(tmp_path)]) == 0
    assert grafana.main(["--out", str(tmp_path), "--check"]) == 0

    edited = tmp_path / "queues.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Queue depth", "Queue size"), encoding="utf-8")
    assert grafana.stale(tmp_path) == ["queues.json"]
    assert grafana.main(["--out", str(tmp_path), "--check"]) == 1

    (tmp_path / "overview.json").unlink()
    (tmp_path / "old.json").write_text("{}", encoding="utf-8")
    assert grafana.stale(tmp_path) == ["old.json", "overview.json", "queues.json"]

    grafana.main(["--out", str(tmp_path)])
    assert grafana.stale(tmp_path) == []
    assert not (tmp_path / "old.json").exists()


def test_dashboards_have_fixed_uids_variables_and_one_datasource() -> None:
    for path in promql.dashboard_files():
        doc = _load(path)
        assert doc["uid"] == EXPECTED[path.name]
        assert doc["id"] is None
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert list(variables) == ["tenant", "job_type"]
        for name, variable in variables.items():
            assert variable["type"] == "query"
            assert variable["query"] == variable["definition"]
            match = re.fullmatch(r"label_values\((\w+)(\{.*\})?, (\w+)\)", variable["query"])
            assert match and match.group(3) == name, variable["query"]
            assert name in promql.declared_labels()[match.group(1)]
            assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
            assert variable["datasource"] == {"type": "prometheus", "uid": "orch-prometheus"}
        for panel in doc["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "orch-prometheus"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]


def test_panels_filter_by_tenant_and_job_type_wherever_the_series_have_them() -> None:
    known = {**promql.declared_labels(), **promql.recorded_labels(promql.load_rules(promql.RECORDING))}
    checked = 0
    for path in promql.dashboard_files():
        for panel in _load(path)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name in promql.metric_names(expr):
                    matched = set().union(*(labels for n, labels in promql.selectors(expr) if n == name))
                    for variable in ("tenant", "job_type"):
                        if variable in known.get(name, set()):
                            checked += 1
                            assert variable in matched, (path.name, panel["title"], name, variable)
                            assert f'{variable}=~"${variable}"' in expr, (path.name, panel["title"])
    assert checked > 10


def test_flow_control_dashboard_shows_states_in_words_and_stacks_waiting_jobs() -> None:
    doc = _load(promql.DASHBOARD_DIR / "flow-control.json")
    by_title = {p["title"]: p for p in doc["panels"]}
    circuit = by_title[panels.panel("circuit_state").title]["fieldConfig"]["defaults"]
    (mapping,) = circuit["mappings"]
    assert {value: option["text"] for value, option in mapping["options"].items()} == {
        "0": "closed",
        "1": "half-open",
        "2": "open",
    }
    assert [step["value"] for step in circuit["thresholds"]["steps"]] == [None, 1.0, 2.0]
    waiting = by_title[panels.panel("jobs_waiting").title]["fieldConfig"]["defaults"]
    assert waiting["custom"]["stacking"] == {"group": "A", "mode": "normal"}
    # Panels without words or stacks keep the plain field config.
    rate = by_title[panels.panel("bucket_rate").title]["fieldConfig"]["defaults"]
    assert "mappings" not in rate and "stacking" not in rate["custom"]


def test_schedules_dashboard_shows_ticks_backfills_and_watermark_lag_with_the_alert_threshold() -> None:
    doc = _load(promql.DASHBOARD_DIR / "schedules.json")
    assert doc["title"] == "Orch / Schedules and backfills"
    by_title = {p["title"]: p for p in doc["panels"]}
    exprs = {
        key: [t["expr"] for t in by_title[panels.panel(key).title]["targets"]]
        for row in schedule_panels.DASHBOARD.rows
        for key in row
    }
    (fired,) = exprs["schedule_ticks_fired"]
    (not_fired,) = exprs["schedule_ticks_not_fired"]
    assert 'status="fired"' in fired and 'status!="fired"' in not_fired
    assert all("orch_schedule_ticks_total" in e and "* 60" in e for e in (fired, not_fired))
    assert promql.grouping_labels(not_fired) == {"tenant", "status"}
    (windows,) = exprs["backfill_windows"]
    assert promql.grouping_labels(windows) == {"tenant", "backfill", "state"}
    backfills = by_title[panels.panel("backfill_windows").title]["fieldConfig"]["defaults"]
    assert backfills["custom"]["stacking"] == {"group": "A", "mode": "normal"}
    (lag,) = exprs["watermark_lag"]
    assert promql.grouping_labels(lag) == {"tenant", "source"}
    defaults = by_title[panels.panel("watermark_lag").title]["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, schedule_panels.WATERMARK_LAG_ALERT_S]
    assert defaults["custom"]["thresholdsStyle"] == {"mode": "dashed"}


def test_schedule_panels_are_declared_in_their_module_and_gathered_by_panels() -> None:
    keys = [p.key for p in schedule_panels.PANELS]
    assert keys == ["schedule_ticks_fired", "schedule_ticks_not_fired", "backfill_windows", "watermark_lag"]
    assert [p.key for p in panels.PANELS[-len(keys) :]] == keys
    assert panels.DASHBOARDS[-1] is schedule_panels.DASHBOARD
    assert {k for row in schedule_panels.DASHBOARD.rows for k in row} == set(keys)
    # Grafana only: the console's Schedules, Backfills and Watermarks pages read the ledger.
    assert all(p.read_model is None and p.figure is None for p in schedule_panels.PANELS)
    # The declaration types are the same objects under both names.
    assert panels.Panel is panel_types.Panel and panels.Size is panel_types.Size
    assert set(panels.__all__) <= set(dir(panels))


def test_dashboard_modules_stay_under_600_lines() -> None:
    for path in sorted((promql.ROOT / "dashboards").glob("*.py")):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path.name


def test_panel_grid_is_filled_without_overlap() -> None:
    for path in promql.dashboard_files():
        doc = _load(path)
        ids = [p["id"] for p in doc["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        cells: dict[tuple[int, int], str] = {}
        for panel in doc["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= panels.GRID_COLUMNS, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{path.name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_every_panel_is_on_a_dashboard_and_every_dashboard_is_generated() -> None:
    on_dashboards = {key for d in panels.DASHBOARDS for row in d.rows for key in row}
    assert on_dashboards == set(panels.BY_KEY)
    assert {d.filename: d.uid for d in panels.DASHBOARDS} == EXPECTED
    titles = {path.name: {p["title"] for p in _load(path)["panels"]} for path in promql.dashboard_files()}
    for dashboard in panels.DASHBOARDS:
        assert titles[dashboard.filename] == {panels.BY_KEY[k].title for row in dashboard.rows for k in row}


def test_provisioning_compose_and_prometheus_agree() -> None:
    compose = _yaml(promql.ROOT / "docker-compose.yml")["services"]
    datasource = _yaml(promql.ROOT / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert [(d["uid"], d["type"]) for d in datasource] == [(grafana.DATASOURCE_UID, "prometheus")]
    assert datasource[0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose and "9090:9090" in compose["prometheus"]["ports"]

    provider = _yaml(promql.ROOT / "grafana/provisioning/dashboards/orch.yml")["providers"]
    assert [p["type"] for p in provider] == ["file"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider[0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert compose["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert compose["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    prom_mounts = dict(v.split(":")[:2] for v in compose["prometheus"]["volumes"] if v.startswith("./"))
    assert prom_mounts["./grafana/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]

    config = _yaml(promql.PROMETHEUS / "prometheus.yml")
    assert config["global"]["scrape_interval"] == datasource[0]["jsonData"]["timeInterval"]
    job, *replicas = config["scrape_configs"]
    assert job["job_name"] == "orch"  # OrchExporterDown watches up{job="orch"}
    # Worker pools and schedulers serve their own counters; Prometheus finds every replica.
    for scrape in replicas:
        (sd,) = scrape["dns_sd_configs"]
        (service,) = sd["names"]
        assert "--metrics" in compose[service]["command"]
        assert compose[service]["environment"]["ORCH_METRICS_HOST"] == "0.0.0.0" and sd["port"] == 9464
    assert {sd["dns_sd_configs"][0]["names"][0] for sd in replicas} == {"worker", "scheduler"}
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose and f"{port}:{port}" in compose[host]["ports"]
    assert compose[host]["command"] == ["exporter"]
    assert compose[host]["environment"]["ORCH_METRICS_HOST"] == "0.0.0.0"
    assert compose["console"]["command"] == ["console"]
    assert compose["console"]["environment"]["ORCH_CONSOLE_PORT"] == "8501"


def test_local_prometheus_config_differs_only_in_the_target() -> None:
    compose_cfg = _yaml(promql.PROMETHEUS / "prometheus.yml")
    local_cfg = _yaml(promql.PROMETHEUS / "prometheus.local.yml")
    assert local_cfg["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9464"]}]
    local_cfg["scrape_configs"][0]["static_configs"] = compose_cfg["scrape_configs"][0]["static_configs"]
    # `orch up` serves every process's metrics on one port: no per-replica jobs locally.
    assert local_cfg["scrape_configs"] == compose_cfg["scrape_configs"][:1]
    local_cfg["scrape_configs"] = compose_cfg["scrape_configs"]
    assert local_cfg == compose_cfg
    assert [promql.PROMETHEUS / f for f in compose_cfg["rule_files"]] == [promql.RECORDING, promql.ALERTS]
