"""The OrchError family: every error the core raises on purpose, one class per meaning."""

from __future__ import annotations


class OrchError(Exception):
    """Base of every deliberate Orch error. `str(err)` is a one-line message for a person."""


class InvalidInput(OrchError):
    """Bad input from a caller: the message says what to fix."""


class ReasonRequired(InvalidInput):
    """An operator action without the reason (or ticket) its scope demands."""


class UnknownJobType(InvalidInput):
    """A job type no handler is registered for."""


class NotFound(OrchError):
    """A job, tenant or other object that does not exist (or is not visible to the caller)."""


class InvalidTransition(OrchError):
    """A state change the state machine does not allow, or a compare-and-set that lost."""


class LeaseLost(OrchError):
    """The worker's lease on a job expired or was taken over; it must stop touching the job."""


class IdempotencyConflict(OrchError):
    """An idempotency key reused with a different payload."""

    def __init__(self, message: str, existing_job_id: int) -> None:
        super().__init__(message)
        self.existing_job_id = existing_job_id


class Forbidden(OrchError):
    """The principal lacks the scope or the tenant for this action."""


class RateLimited(OrchError):
    """Admission denied by a token bucket."""


class QuotaExceeded(OrchError):
    """Admission denied by a concurrency quota."""


class Backpressure(OrchError):
    """A submit refused because the tenant's backlog is at its limit (policy refuse)."""

    def __init__(self, message: str, *, tenant: str, limit: int, backlog: int) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.limit = limit
        self.backlog = backlog


class DagCycle(InvalidInput):
    """Dependencies that would form a cycle."""


class Unavailable(OrchError):
    """A backing service (PostgreSQL, Redis) cannot be reached."""
