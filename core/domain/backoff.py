"""Retry policy and backoff math: exponential with full jitter, honouring Retry-After."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from core.domain import errors

#: An upstream's Retry-After is honoured up to a day, so a broken header cannot park a job forever.
MAX_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per job type: the first backoff step, its ceiling and how many attempts in all."""

    base_s: float = 1.0
    cap_s: float = 300.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if (
            not (math.isfinite(self.base_s) and math.isfinite(self.cap_s))
            or self.base_s <= 0
            or self.cap_s < self.base_s
        ):
            raise errors.InvalidInput(
                f"retry policy needs 0 < base_s <= cap_s, got base_s={self.base_s} cap_s={self.cap_s}"
            )
        if self.max_attempts < 1:
            raise errors.InvalidInput(f"max_attempts must be >= 1, got {self.max_attempts}")


def backoff_ceiling(attempt: int, policy: RetryPolicy) -> float:
    """min(cap, base * 2^(attempt-1)): the upper end of the jitter window after `attempt` failed."""
    if attempt < 1:
        raise errors.InvalidInput(f"attempt is 1-based, got {attempt}")
    exponent = min(attempt - 1, 62)
    return min(policy.cap_s, policy.base_s * float(2**exponent))


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before the next attempt after attempt number `attempt` failed.

    Full jitter (uniform in [0, ceiling]) spreads a thundering herd; an upstream's
    Retry-After is a floor, never shortened by jitter, but capped at one day so a
    broken header cannot park a job forever.
    """
    delay = rng.uniform(0.0, backoff_ceiling(attempt, policy))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


def exhausted(attempt: int, policy_max_attempts: int) -> bool:
    """True when the attempt that just failed was the last one allowed."""
    return attempt >= policy_max_attempts
