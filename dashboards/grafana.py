"""Writes grafana/dashboards/*.json from the panel declarations in dashboards.panels (and the
modules it gathers, dashboards.schedule_panels).

Deterministic: sorted keys, panel ids by position, fixed uids, no timestamps; so the committed
files change only when a declaration does. `python -m dashboards.grafana` regenerates them,
`python -m dashboards.grafana --check` exits 1 naming the files that are stale."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dashboards import figures
from dashboards.panel_types import GRID_COLUMNS, Dashboard, Panel, PanelType
from dashboards.panels import BY_KEY, DASHBOARDS

#: uid of the Prometheus datasource in grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "orch-prometheus"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": DATASOURCE_UID}
#: Dashboards carry this tag; each one links to the others through it.
TAG = "orch"
#: Grafana's JSON model version the generated files follow.
SCHEMA_VERSION = 39
#: Template variables: name, label and the label_values() query that lists their values.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("tenant", "Tenant", "label_values(orch_jobs_submitted_total, tenant)"),
    ("job_type", "Job type", 'label_values(orch_jobs_submitted_total{tenant=~"$tenant"}, job_type)'),
)
#: Panels that show one number per series read an instant query, not a range.
INSTANT_TYPES = frozenset({PanelType.STAT, PanelType.BARGAUGE, PanelType.TABLE})


def default_out_dir() -> Path:
    """grafana/dashboards of the checkout this module lives in."""
    return Path(__file__).resolve().parent.parent / "grafana" / "dashboards"


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _targets(panel: Panel) -> list[dict[str, Any]]:
    instant = panel.type in INSTANT_TYPES
    targets: list[dict[str, Any]] = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": query.expr,
            "instant": instant,
            "legendFormat": query.legend or "__auto",
            "range": not instant,
            "refId": _ref_id(i),
        }
        if panel.type == PanelType.TABLE:
            target["format"] = "table"
        targets.append(target)
    return targets


def _field_defaults(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if panel.thresholds:
        steps = [
            {"color": figures.LEVEL_COLORS[t.level], "value": None if i == 0 else t.value}
            for i, t in enumerate(panel.thresholds)
        ]
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds" if panel.thresholds else "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
        "unit": panel.unit,
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.value_texts:
        defaults["mappings"] = [
            {
                "options": {
                    f"{value:g}": {"index": i, "text": text} for i, (value, text) in enumerate(panel.value_texts)
                },
                "type": "value",
            }
        ]
    if panel.type == PanelType.TIMESERIES:
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        }
        if panel.stacked:
            defaults["custom"]["stacking"] = {"group": "A", "mode": "normal"}
            defaults["custom"]["fillOpacity"] = 40
    return defaults


_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.type == PanelType.TIMESERIES:
        return {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.type == PanelType.STAT:
        return {
            "colorMode": "background" if panel.thresholds else "none",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": _REDUCE_LAST,
            "textMode": "value_and_name",
        }
    if panel.type == PanelType.BARGAUGE:
        return {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": _REDUCE_LAST,
            "showUnfilled": True,
        }
    return {"cellHeight": "sm", "showHeader": True, "sortBy": [{"desc": True, "displayName": "Value"}]}


def panel_json(panel: Panel, *, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """One Grafana panel at grid position (x, y)."""
    out: dict[str, Any] = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": _field_defaults(panel), "overrides": []},
        "gridPos": {"h": panel.size.h, "w": panel.size.w, "x": x, "y": y},
        "id": panel_id,
        "options": _options(panel),
        "targets": _targets(panel),
        "title": panel.title,
        "type": panel.type.value,
    }
    if panel.type == PanelType.TABLE:
        # An instant table query has one row per series; its timestamp column says nothing.
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    return out


def _layout(dashboard: Dashboard) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in dashboard.rows:
        x = 0
        for key in row:
            panel = BY_KEY[key]
            if x + panel.size.w > GRID_COLUMNS:
                raise ValueError(f"dashboard {dashboard.uid}: row {row} is wider than {GRID_COLUMNS} columns")
            panels.append(panel_json(panel, panel_id=len(panels) + 1, x=x, y=y))
            x += panel.size.w
        y += max(BY_KEY[key].size.h for key in row)
    return panels


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard."""
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": dashboard.description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "targetBlank": False,
                "title": "Orch dashboards",
                "type": "dashboards",
            }
        ],
        "panels": _layout(dashboard),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG],
        "templating": {"list": [_variable(*v) for v in VARIABLES]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
        "weekStart": "",
    }


def render(dashboard: Dashboard) -> str:
    """The file text of one dashboard: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard_json(dashboard), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name -> text, for every dashboard."""
    return {d.filename: render(d) for d in DASHBOARDS}


def stale(out_dir: Path) -> list[str]:
    """Files under `out_dir` that differ from what the declarations give (missing, changed, or
    a dashboard file no declaration produces)."""
    expected = rendered()
    names = sorted(set(expected) | {p.name for p in out_dir.glob("*.json")})
    out: list[str] = []
    for name in names:
        path = out_dir / name
        if name not in expected or not path.exists() or path.read_text(encoding="utf-8") != expected[name]:
            out.append(name)
    return out


def write(out_dir: Path) -> list[Path]:
    """Write every dashboard under `out_dir` and remove dashboard files no declaration produces."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = rendered()
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in expected:
            path.unlink()
    written: list[Path] = []
    for name, text in expected.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.grafana", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder of the dashboards (default: grafana/dashboards)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    out_dir: Path = args.out or default_out_dir()
    if args.check:
        names = stale(out_dir)
        for name in names:
            print(f"stale: {out_dir / name} (run: python -m dashboards.grafana)", file=sys.stderr)
        return 1 if names else 0
    for path in write(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
