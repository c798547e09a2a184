"""What a panel declaration is made of: the panel and dashboard types, their sizes on Grafana's
grid, units and the template-variable filters. dashboards.panels and dashboards.schedule_panels
declare panels with these; dashboards.panels re-exports them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import plotly.graph_objects as go

FigureBuilder = Callable[[Sequence[Mapping[str, Any]]], go.Figure]

#: Grafana template variables every PromQL selector that has the label filters on.
TENANT = 'tenant=~"$tenant"'
JOB_TYPE = 'job_type=~"$job_type"'
#: Grid columns of a Grafana dashboard.
GRID_COLUMNS = 24
#: How a value of each Grafana unit reads in the console: the suffix of its value axis
#: ("suffix:<text>" units carry their own).
UNIT_SUFFIXES: dict[str, str] = {"short": "", "s": " s", "ops": "/s"}


def unit_suffix(unit: str) -> str:
    """The console's axis suffix for a Grafana unit id; ValueError for a unit it cannot show."""
    if unit.startswith("suffix:"):
        return unit.removeprefix("suffix:")
    try:
        return UNIT_SUFFIXES[unit]
    except KeyError:
        raise ValueError(f"unknown unit {unit!r}; one of: {', '.join(sorted(UNIT_SUFFIXES))}, suffix:<text>") from None


class PanelType(StrEnum):
    """Grafana panel types the generator knows how to lay out."""

    TIMESERIES = "timeseries"
    STAT = "stat"
    TABLE = "table"
    BARGAUGE = "bargauge"


@dataclass(frozen=True)
class Query:
    """One PromQL target; `legend` is a Grafana legend format such as "{{queue}}"."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Size:
    """A panel's width (of 24 grid columns) and height (grid rows); its x and y follow from
    the dashboard's rows."""

    w: int
    h: int

    def __post_init__(self) -> None:
        if not (1 <= self.w <= GRID_COLUMNS and self.h >= 1):
            raise ValueError(f"panel size {self.w}x{self.h} does not fit a {GRID_COLUMNS}-column grid")


@dataclass(frozen=True)
class Threshold:
    """From `value` up, the panel shows the colour of burn-rate `level` (ok, warn, critical)."""

    value: float
    level: str


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    #: Grafana unit id: "short", "s" (seconds), "ops" (per second), "suffix:x" (a multiple).
    unit: str
    description: str
    type: PanelType
    size: Size
    queries: tuple[Query, ...]
    #: Name of a function in dashboards.read_models; None for a panel only Prometheus can draw
    #: (its numbers exist only as metrics, e.g. a histogram of queue waits).
    read_model: str | None
    figure: FigureBuilder | None
    thresholds: tuple[Threshold, ...] = ()
    decimals: int | None = None
    #: Words Grafana shows instead of these values (a state encoded as a number).
    value_texts: tuple[tuple[float, str], ...] = ()
    #: A timeseries whose series stack (parts of one whole, e.g. waiting jobs by reason).
    stacked: bool = False

    def __post_init__(self) -> None:
        if (self.read_model is None) != (self.figure is None):
            raise ValueError(f"panel {self.key}: a read model and a figure builder go together")
        if not self.queries:
            raise ValueError(f"panel {self.key}: no PromQL")
        unit_suffix(self.unit)
        if self.stacked and self.type != PanelType.TIMESERIES:
            raise ValueError(f"panel {self.key}: only a timeseries stacks")


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    #: File name under grafana/dashboards/.
    filename: str
    description: str
    #: Rows of panel keys, left to right; a row is as tall as its tallest panel.
    rows: tuple[tuple[str, ...], ...]


STAT = Size(12, 5)
WIDE_STAT = Size(24, 5)
CHART = Size(12, 8)
TABLE = Size(24, 9)
