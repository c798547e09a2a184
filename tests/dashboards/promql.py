"""Finds metric names, label matchers and grouping labels in PromQL without a PromQL parser: enough
for the expressions Orch writes, and strict where it matters (string literals never count)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from core.domain import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "grafana" / "prometheus"
RECORDING = PROMETHEUS / "rules" / "recording.yml"
ALERTS = PROMETHEUS / "rules" / "alerts.yml"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BOUNDARY = r"(?<![A-Za-z0-9_:.$])"
_IDENT = re.compile(_BOUNDARY + r"[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(_BOUNDARY + r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")


def _code(expr: str) -> str:
    """The expression with every string literal emptied: label values never look like names."""
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Orch metric names (orch_*) and recorded names (level:metric:operation) in `expr`."""
    return {t for t in _IDENT.findall(_code(expr)) if ":" in t or t.startswith("orch_")}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for every `metric{...}` in `expr`."""
    return [(name, set(_MATCHER.findall(body))) for name, body in _SELECTOR.findall(_code(expr))]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in every `by (...)` / `without (...)` of `expr`."""
    out: set[str] = set()
    for body in _GROUPING.findall(_code(expr)):
        out |= {label.strip() for label in body.split(",") if label.strip()}
    return out


def declared_labels() -> dict[str, set[str]]:
    """Series name -> the labels it carries, from core.domain.metrics."""
    out: dict[str, set[str]] = {}
    for spec in metrics.METRICS:
        for series in spec.series_names():
            out[series] = set(spec.labels) | ({"le"} if series.endswith("_bucket") else set())
    return out


def load_rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file, in order."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded_labels(rules: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """Recorded name -> the labels its series carry: the grouping labels of its expression, its
    static labels, and those of the recorded series it reads."""
    out: dict[str, set[str]] = {}
    for rule in rules:
        if "record" not in rule:
            continue
        labels = grouping_labels(rule["expr"]) | set(rule.get("labels", {}))
        for name in metric_names(rule["expr"]):
            labels |= out.get(name, set())
        out[rule["record"]] = labels
    return out


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable of a dashboard file."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    for panel in doc["panels"]:
        for target in panel["targets"]:
            yield f"{path.name} panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in doc["templating"]["list"]:
        match = _LABEL_VALUES.match(variable["query"])
        assert match, f"{path.name} variable {variable['name']}: not a label_values() query"
        yield f"{path.name} variable {variable['name']}", match.group(1)


def rule_exprs() -> Iterator[tuple[str, str]]:
    for path in (RECORDING, ALERTS):
        for rule in load_rules(path):
            yield f"{path.name} {rule.get('record') or rule.get('alert')}", rule["expr"]


def problems(exprs: Iterable[tuple[str, str]], known: dict[str, set[str]]) -> list[str]:
    """What is wrong with `exprs` given `known` (series name -> labels): names that are neither
    declared nor recorded, matchers on labels a series does not have, and grouping by labels none
    of the expression's series has."""
    out = []
    for where, expr in exprs:
        names = metric_names(expr)
        for name in sorted(names - set(known)):
            out.append(f"{where}: {name} is neither declared in core.domain.metrics nor recorded")
        for name, labels in selectors(expr):
            if name in known and not labels <= known[name]:
                out.append(f"{where}: {name} has no label {sorted(labels - known[name])}")
        carried = set().union(*(known.get(n, set()) for n in names)) if names else set()
        if names and names <= set(known):
            for label in sorted(grouping_labels(expr) - carried):
                out.append(f"{where}: groups by {label!r}, which none of {sorted(names)} carries")
    return out
