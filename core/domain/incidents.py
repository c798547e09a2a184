"""Incidents: what the scheduler opens by itself when something is wrong, and resolves once it
has been right again for a while (docs/design.md, "Incidents"). Pure: the kinds, their
thresholds and severities, and the dedup key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("stuck_job", "sustained_throttling", "dlq_growth", "circuit_open", "fast_burn")
#: The kinds the scheduler evaluates today; the others are not built yet.
EVALUATED = KINDS
SEVERITIES = ("warning", "critical")
STATES = ("open", "acknowledged", "resolved")
#: Who opens, bumps and resolves incidents by themselves (in history and events).
ACTOR = "orch:incidents"


@dataclass(frozen=True)
class Policy:
    """Thresholds, from the ORCH_INCIDENT_* settings."""

    #: A condition must hold this long before it opens an incident.
    for_s: float = 60.0
    #: An incident resolves itself once its condition has been clear this long.
    quiet_s: float = 300.0
    #: dlq_growth: a tenant's dead letters within this window...
    dlq_window_s: float = 1800.0
    #: ... more than this many is a warning (and fewer clears it) ...
    dlq_warning: int = 10
    #: ... and more than this many is critical.
    dlq_critical: int = 50
    #: circuit_open: a source's circuit not closed for longer than this.
    circuit_open_s: float = 300.0
    #: sustained_throttling: a source with jobs waiting on its rate limit or open circuit
    #: without a break for this long (in place of for_s).
    throttled_s: float = 600.0
    #: stuck_job: a job running (heartbeating or not) for longer than this.
    running_s: float = 3600.0
    #: stuck_job: a job ready and unclaimed for longer than this while its queue's workers
    #: are alive (a job of the queue ran within the same time).
    ready_s: float = 900.0


@dataclass(frozen=True)
class Condition:
    """Something wrong, as one pass saw it."""

    kind: str
    tenant_id: int | None
    tenant: str | None
    scope: str
    severity: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    #: True when the condition only keeps an open incident (or a pending one) alive and
    #: would not start one (dead letters exactly at the warning threshold, say).
    sustains_only: bool = False
    #: How long the condition must hold before it opens an incident (None: Policy.for_s).
    hold_s: float | None = None

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.tenant, self.kind, self.scope)


def dedup_key(tenant: str | None, kind: str, scope: str) -> str:
    """`tenant:kind:scope` ('*' for no tenant): one unresolved incident per key."""
    return f"{tenant or '*'}:{kind}:{scope}"


def dlq_severity(count: int, policy: Policy) -> tuple[str, bool] | None:
    """(severity, sustains_only) of `count` dead letters in the window, None when clear:
    more than dlq_warning is a warning, more than dlq_critical critical; exactly dlq_warning
    neither opens nor clears (it clears below it)."""
    if count > policy.dlq_critical:
        return "critical", False
    if count > policy.dlq_warning:
        return "warning", False
    if count == policy.dlq_warning:
        return "warning", True
    return None
