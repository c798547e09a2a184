"""What the flow-control calls of core.control return: frozen dataclasses, read by attribute in
the CLI and the console (and turned into JSON objects with the same field names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceChange:
    """A source added or updated by add_source."""

    tenant: str
    name: str
    id: int
    #: False when a source of that name existed and was updated.
    created: bool
    host: str
    rate: float | None
    burst: float | None
    max_active: int | None
    #: Whether its jobs may fetch loopback, private and other non-public addresses.
    allow_private: bool


@dataclass(frozen=True, slots=True)
class PauseChange:
    """A pause or resume of a tenant, one of its job types, or one of its sources."""

    tenant: str
    #: "tenant", "source NAME" or "job type NAME".
    scope: str
    #: "pause" or "resume".
    action: str
    #: False when that scope was already paused (pause) or was not paused (resume).
    changed: bool
    #: Waiting jobs let go at once (resume only).
    released: int


@dataclass(frozen=True, slots=True)
class RateChange:
    """A source's configured rate set by throttle_source."""

    tenant: str
    source: str
    rate: float
    burst: float | None
    #: The adaptive rate before (None for a bucket created now).
    old_rate: float | None
    #: The configured rate before.
    old_base_rate: float | None


@dataclass(frozen=True, slots=True)
class CircuitReset:
    """A circuit closed by hand."""

    tenant: str
    source: str
    old_state: str | None
    state: str
    released: int


@dataclass(frozen=True, slots=True)
class BlackoutAdded:
    """A blackout and its current or next window (ISO 8601 UTC)."""

    id: int
    tenant: str
    source: str | None
    window_start: str
    window_end: str
    #: A recurring blackout's cron expression and window length; None for a one-off.
    cron: str | None = None
    duration_s: float | None = None
    #: A one-off blackout's start and end; None for a recurring one.
    starts_at: str | None = None
    ends_at: str | None = None


@dataclass(frozen=True, slots=True)
class BlackoutRemoved:
    id: int
    tenant: str
    removed: bool
    released: int


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """A tenant's quota on a job type (both limits None: removed)."""

    tenant: str
    job_type: str
    changed: bool
    released: int
    max_active: int | None
    max_per_hour: int | None


@dataclass(frozen=True, slots=True)
class BacklogLimit:
    tenant: str
    backlog_limit: int | None
    backlog_policy: str
