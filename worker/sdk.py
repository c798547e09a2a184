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
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    id: int
    name: str
    media_type: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ParentInfo:
    """A parent of a job of a run, as it ended: its result (what its handler returned, None
    if nothing) and the artifacts it stored. Read artifact bytes with JobContext.read_artifact."""

    key: str
    job_id: int
    state: str
    result: Any
    artifacts: tuple[ArtifactInfo, ...] = ()

    def artifact(self, name: str) -> ArtifactInfo:
        """The parent's last artifact called `name`. Raises KeyError."""
        for a in reversed(self.artifacts):
            if a.name == name:
                return a
        raise KeyError(f"parent {self.key!r} has no artifact {name!r}")


@dataclass(frozen=True)
class SpawnSpec:
    """A job a handler adds to its own run (JobContext.spawn). `after` defaults to the
    spawning job itself; [] starts it at once."""

    key: str
    job_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    after: Sequence[str] | None = None
    trigger_rule: str = "all_success"
    allow_failure: bool = False
    source: str | None = None
    priority: int = 0
    max_attempts: int | None = None


class LedgerPort(Protocol):
    """What a JobContext needs from the worker process (implemented by worker.runtime.pump.Pump)."""

    def parents(self, job: ActiveJob) -> dict[str, ParentInfo]: ...
    def read_artifact(self, job: ActiveJob, artifact_id: int) -> bytes: ...
    def spawn(self, job: ActiveJob, specs: Sequence[SpawnSpec]) -> dict[str, int]: ...
    def renew_now(self, job: ActiveJob) -> None: ...
    def source(self, job: ActiveJob) -> SourceInfo | None: ...
    def progress(self, job: ActiveJob, fraction: float, message: str | None) -> None: ...
    def log(self, job: ActiveJob, level: str, message: str) -> None: ...
    def store_artifact(self, job: ActiveJob, name: str, data: bytes, media_type: str) -> str: ...
    def data_interval(self, job: ActiveJob) -> tuple[dt.datetime, dt.datetime] | None: ...
    def watermark(self, job: ActiveJob, at: dt.datetime) -> bool: ...


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
    #: Its success rides on the thread's next claim (heartbeats stop: it is over).
    finishing: bool = False
    #: Log lines written so far in this attempt (each line's number is its key).
    log_lines: int = 0
    #: The run the job belongs to and its key there (None for a job of no run).
    run_id: int | None = None
    key: str | None = None
    #: Seconds from its last parent's end to its claim (jobs of runs with parents).
    release_s: float | None = None
    #: Whether the job has children in its run (its end may release them).
    has_children: bool = False
    #: The event-time window the job does (a schedule's tick or a backfill's window).
    window_id: int | None = None


_UNSET = object()


class JobContext:
    """The handler's view of its job: the payload, and the ways to report back."""

    def __init__(self, job: ActiveJob, port: LedgerPort) -> None:
        self._job = job
        self._port = port
        self._parents: dict[str, ParentInfo] | None = None
        self._interval: object = _UNSET

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

    @property
    def run_id(self) -> int | None:
        """The run the job belongs to (None for a job submitted on its own)."""
        return self._job.run_id

    @property
    def key(self) -> str | None:
        """The job's key in its run."""
        return self._job.key

    @property
    def parents(self) -> Mapping[str, ParentInfo]:
        """The job's parents in its run, by key (read from the ledger once)."""
        if self._parents is None:
            self._parents = {} if self._job.run_id is None else self._port.parents(self._job)
        return self._parents

    @property
    def data_interval(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The event-time window [start, end) this job (or its run) covers: a schedule tick's
        [previous tick, this tick), or a backfill's window; None for other jobs. Read once."""
        if self._interval is _UNSET:
            self._interval = self._port.data_interval(self._job)
        return self._interval  # type: ignore[return-value]

    def watermark(self, at: dt.datetime) -> bool:
        """Report that this job's data (its tenant, source and job type) is complete up to
        event time `at` (timezone-aware). The ledger keeps the watermark monotone: an earlier
        time changes nothing. Returns whether it moved. Raises InvalidInput."""
        return self._port.watermark(self._job, at)

    def parent(self, key: str) -> ParentInfo:
        """The parent called `key`: its result and artifacts, e.g. ctx.parent("fetch").result.
        Raises KeyError when the job has no such parent."""
        found = self.parents.get(key)
        if found is None:
            have = ", ".join(sorted(self.parents)) or "none"
            raise KeyError(f"job {self._job.key or self._job.id} has no parent {key!r} (its parents: {have})")
        return found

    def read_artifact(self, artifact: ArtifactInfo) -> bytes:
        """The bytes of a parent's artifact."""
        return self._port.read_artifact(self._job, artifact.id)

    def spawn(self, *specs: SpawnSpec) -> dict[str, int]:
        """Add jobs to this job's run; returns {key: job id}. Each waits for this job unless
        its `after` says otherwise; a job that waits for this one (a join) also waits for
        everything it spawns. Spawning the same key again (a retried handler) returns the job
        spawned before. Raises InvalidInput (not a job of a run, bad jobs, the run's size
        limit), LeaseLost."""
        if self._job.run_id is None:
            raise errors.InvalidInput(f"job {self._job.id} is not part of a run; only jobs of runs spawn jobs")
        if not specs:
            return {}
        return self._port.spawn(self._job, specs)

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
