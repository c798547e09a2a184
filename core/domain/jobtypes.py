"""A job type's policy (queue, attempts, backoff, lease), as workers register it from code
and the ledger keeps it in job_types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobTypeRow:
    name: str
    queue: str
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    lease_s: float
    heartbeat_s: float
