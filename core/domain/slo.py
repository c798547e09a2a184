"""SLO burn-rate math (docs/design.md, "Observability"). Pure: counts in, ratios out."""

from __future__ import annotations

from dataclasses import dataclass

#: Window name -> seconds.
WINDOWS: dict[str, int] = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}

#: Multi-window alerts: (long window, short window, burn-rate threshold, severity).
ALERTS: tuple[tuple[str, str, float, str], ...] = (
    ("1h", "5m", 14.4, "page"),
    ("6h", "30m", 6.0, "page"),
    ("3d", "6h", 1.0, "ticket"),
)


@dataclass(frozen=True)
class Slo:
    """Share of finished jobs (canceled excluded) that must succeed, per tenant and job type."""

    name: str = "job_success"
    target: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"SLO target must be within (0, 1), got {self.target}")


def burn_rate(failed: int, total: int, target: float) -> float:
    """error_ratio / (1 - target); 0 when nothing finished."""
    if total <= 0:
        return 0.0
    return (failed / total) / (1.0 - target)


def level(rate: float) -> str:
    """ok / warn / critical by the alert thresholds: >= 14.4 critical, >= 1 warn."""
    if rate >= ALERTS[0][2]:
        return "critical"
    if rate >= 1.0:
        return "warn"
    return "ok"
