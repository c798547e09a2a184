"""What job authors write against: @job_handler registers a function for a job type; the
function receives a JobContext and reports failure by raising a typed error.

    @job_handler("feeds.fetch", max_attempts=8, backoff_base_s=2)
    def fetch(ctx: JobContext) -> None:
        ctx.progress(0.5, "half way")
        ctx.artifact("page.json", body, "application/json")
        if status == 429:
            raise UpstreamThrottled("feed throttled us", retry_after=30)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.domain import backoff, errors
from core.domain.failures import ErrorClass, parse_error_class
from core.domain.jobtypes import JobTypeRow

Handler = Callable[["JobContext"], object]


# -- errors a handler raises -------------------------------------------------------------


class RetryableError(Exception):
    """The attempt failed but another may succeed. `retry_after` (seconds) is a floor on the
    wait, e.g. an upstream's Retry-After header."""

    def __init__(
        self,
        message: str = "retryable failure",
        *,
        retry_after: float | None = None,
        error_class: ErrorClass | str = ErrorClass.UNKNOWN,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.error_class = parse_error_class(str(error_class))


class UpstreamThrottled(RetryableError):
    """The upstream answered 429 (or 503 with Retry-After)."""

    def __init__(self, message: str = "upstream throttled", *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after, error_class=ErrorClass.HTTP_429)


class FatalError(Exception):
    """No attempt can succeed (bad input, schema drift): dead-letter at once."""

    def __init__(self, message: str = "fatal failure", *, error_class: ErrorClass | str = ErrorClass.UNKNOWN) -> None:
        super().__init__(message)
        self.error_class = parse_error_class(str(error_class))


class Canceled(Exception):
    """Raise from a handler that noticed should_cancel(): the job ends canceled."""


LeaseLost = errors.LeaseLost


# -- registration ------------------------------------------------------------------------


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    fn: Handler
    queue: str = "default"
    policy: backoff.RetryPolicy = field(default_factory=backoff.RetryPolicy)
    lease_s: float = 30.0
    heartbeat_s: float = 10.0

    def job_type_row(self) -> JobTypeRow:
        return JobTypeRow(
            name=self.name,
            queue=self.queue,
            max_attempts=self.policy.max_attempts,
            backoff_base_s=self.policy.base_s,
            backoff_cap_s=self.policy.cap_s,
            lease_s=self.lease_s,
            heartbeat_s=self.heartbeat_s,
        )


_REGISTRY: dict[str, HandlerSpec] = {}


def job_handler(
    name: str,
    *,
    queue: str = "default",
    max_attempts: int = 5,
    backoff_base_s: float = 1.0,
    backoff_cap_s: float = 300.0,
    lease_s: float = 30.0,
    heartbeat_s: float = 10.0,
) -> Callable[[Handler], Handler]:
    """Register `fn` as the handler of job type `name`.

    Leases default to 30 s, renewed every 10 s while the handler runs: a worker that dies
    loses its jobs to the scheduler within one lease. Raises InvalidInput for a bad policy
    or a name registered twice with a different function.
    """
    if not name or len(name) > 128:
        raise errors.InvalidInput(f"job type name must be 1 to 128 characters, got {name!r}")
    if not 0 < heartbeat_s < lease_s:
        raise errors.InvalidInput(f"{name}: need 0 < heartbeat_s < lease_s, got {heartbeat_s} and {lease_s}")
    policy = backoff.RetryPolicy(base_s=backoff_base_s, cap_s=backoff_cap_s, max_attempts=max_attempts)

    def register(fn: Handler) -> Handler:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn is not fn and existing.fn.__qualname__ != fn.__qualname__:
            raise errors.InvalidInput(f"job type {name!r} is already registered by {existing.fn.__module__}")
        _REGISTRY[name] = HandlerSpec(name, fn, queue, policy, lease_s, heartbeat_s)
        return fn

    return register


def registry() -> Mapping[str, HandlerSpec]:
    return dict(_REGISTRY)


# -- the context a handler gets ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """The source (upstream feed) a job reads: the one host its fetches may reach, and
    whether that host may be a loopback, private or other non-public address."""

    id: int
    name: str
    #: host, or host:port.
    host: str
    allow_private: bool


class LedgerPort(Protocol):
    """What a JobContext needs from the worker process (implemented by worker.runtime.pump.Pump)."""

    def renew_now(self, job: ActiveJob) -> None: ...
    def source(self, job: ActiveJob) -> SourceInfo | None: ...
    def progress(self, job: ActiveJob, fraction: float, message: str | None) -> None: ...
    def log(self, job: ActiveJob, level: str, message: str) -> None: ...
    def store_artifact(self, job: ActiveJob, name: str, data: bytes, media_type: str) -> str: ...


@dataclass(eq=False)
class ActiveJob:
    """A job this process holds a lease on. Mutable flags are set by the pump's heartbeat."""

    id: int
    lease_id: uuid.UUID
    tenant: str
    job_type: str
    queue: str
    payload: Mapping[str, Any]
    attempt: int
    max_attempts: int
    lease_s: float
    heartbeat_s: float
    correlation_id: str | None = None
    queue_wait_s: float = 0.0
    #: The source (upstream feed) the job reads, whose circuit and bucket learn from it.
    source_id: int | None = None
    #: When the handler started, by the database's clock.
    started_at: dt.datetime | None = None
    #: Whether a success can teach the source's circuit or bucket anything (see the claim).
    learns: bool = False
    cancel_requested: bool = False
    lease_lost: bool = False
    next_renew: float = 0.0
    #: Log lines written so far in this attempt (each line's number is its key).
    log_lines: int = 0


class JobContext:
    """The handler's view of its job: the payload, and the ways to report back."""

    def __init__(self, job: ActiveJob, port: LedgerPort) -> None:
        self._job = job
        self._port = port

    @property
    def job_id(self) -> int:
        return self._job.id

    @property
    def payload(self) -> Mapping[str, Any]:
        return self._job.payload

    @property
    def tenant(self) -> str:
        return self._job.tenant

    @property
    def job_type(self) -> str:
        return self._job.job_type

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self._job.attempt

    @property
    def max_attempts(self) -> int:
        return self._job.max_attempts

    @property
    def correlation_id(self) -> str | None:
        return self._job.correlation_id

    @property
    def source(self) -> SourceInfo | None:
        """The source the job reads (None for a job without one): its host is the only one
        its fetches may reach. Read from the ledger at each call."""
        return self._port.source(self._job)

    def heartbeat(self) -> None:
        """Extend the lease now (a background heartbeat also does so every heartbeat_s).
        Raises LeaseLost when the job is no longer this worker's: stop at once."""
        self._port.renew_now(self._job)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]; written in the background, latest value wins."""
        if not 0.0 <= fraction <= 1.0:
            raise errors.InvalidInput(f"progress fraction must be within [0, 1], got {fraction}")
        self._port.progress(self._job, float(fraction), message)

    def artifact(self, name: str, data: bytes, media_type: str = "application/octet-stream") -> str:
        """Store bytes produced by the job; returns their sha256 (hex). Raises LeaseLost."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise errors.InvalidInput(f"artifact data must be bytes, got {type(data).__name__}")
        return self._port.store_artifact(self._job, name, bytes(data), media_type)

    def log(self, message: str, level: str = "info") -> None:
        """Append a line to the job's log (written in the background)."""
        self._port.log(self._job, level, str(message))

    def should_cancel(self) -> bool:
        """True when an operator canceled the job or the lease was lost: return or raise Canceled."""
        return self._job.cancel_requested or self._job.lease_lost
