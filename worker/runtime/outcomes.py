"""What a handler's attempt came to, as the pump writes it: the outcome kinds, which of them
teach a source's circuit, and the states each leaves its job in."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import fingerprints
from core.domain.failures import ErrorClass


@dataclass(frozen=True, slots=True)
class Succeeded:
    #: What the handler returned, as canonical JSON (core.domain.dag.check_result), or None.
    result: str | None = None


@dataclass(frozen=True, slots=True)
class FailedRetryable:
    delay_s: float
    error_class: str
    message: str

    @property
    def fingerprint(self) -> str:
        return fingerprints.fingerprint(self.error_class, self.message)


@dataclass(frozen=True, slots=True)
class FailedFinal:
    error_class: str
    message: str
    why: str

    @property
    def fingerprint(self) -> str:
        return fingerprints.fingerprint(self.error_class, self.message)


@dataclass(frozen=True, slots=True)
class CanceledOutcome:
    pass


@dataclass(frozen=True, slots=True)
class Throttled:
    """The upstream answered 429: wait `delay_s` (its Retry-After) without using an attempt."""

    delay_s: float
    message: str
    retry_after: float | None


Outcome = Succeeded | FailedRetryable | FailedFinal | CanceledOutcome | Throttled

#: Failures that count against a source's circuit: the upstream itself is failing. A 429 is
#: the bucket's business; bad input or a handler's bug is not the upstream's fault.
CIRCUIT_FAILURES = frozenset({ErrorClass.HTTP_5XX, ErrorClass.TIMEOUT, ErrorClass.NETWORK})


#: The states an outcome leaves its job in (under the worker's lease), for a retried write
#: to recognise one that did commit. A job sent to wait may have been released since.
TARGET_STATES: dict[type, tuple[str, ...]] = {
    Succeeded: ("succeeded",),
    FailedRetryable: ("retrying", "queued"),
    FailedFinal: ("dead_lettered",),
    CanceledOutcome: ("canceled",),
    Throttled: ("throttled", "queued"),
}
