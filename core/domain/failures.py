"""Error classes: how a failure is named, and whether a class is worth retrying by default."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    HTTP_429 = "http_429"
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SCHEMA_MISMATCH = "schema_mismatch"
    PARSE_ERROR = "parse_error"
    LEASE_EXPIRED = "lease_expired"
    WORKER_CRASH = "worker_crash"
    #: A fetch the egress policy refused (another host than the source's, a private address).
    EGRESS_REFUSED = "egress_refused"
    #: A handler returned a result that is not JSON or is over the size limit.
    BAD_RESULT = "bad_result"
    UNKNOWN = "unknown"


#: Classes that are retried when the raiser did not say.
RETRYABLE_BY_DEFAULT: frozenset[ErrorClass] = frozenset(
    {
        ErrorClass.HTTP_429,
        ErrorClass.HTTP_5XX,
        ErrorClass.TIMEOUT,
        ErrorClass.NETWORK,
        ErrorClass.LEASE_EXPIRED,
        ErrorClass.WORKER_CRASH,
    }
)

MAX_ERROR_MESSAGE = 2000


def parse_error_class(value: str) -> ErrorClass:
    """The ErrorClass named `value`; unknown names map to UNKNOWN rather than failing a job twice."""
    try:
        return ErrorClass(value)
    except ValueError:
        return ErrorClass.UNKNOWN


def truncate_message(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE:
        return message
    return message[: MAX_ERROR_MESSAGE - 1] + "…"
