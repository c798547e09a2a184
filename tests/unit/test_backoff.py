"""Backoff math (core/domain/backoff.py): full jitter within the ceiling, Retry-After as a floor."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.domain import backoff, errors

bases = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=200)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def policies(draw: st.DrawFn) -> backoff.RetryPolicy:
    base = draw(bases)
    cap = draw(st.floats(min_value=base, max_value=1e6, allow_nan=False, allow_infinity=False))
    max_attempts = draw(st.integers(min_value=1, max_value=100))
    return backoff.RetryPolicy(base_s=base, cap_s=cap, max_attempts=max_attempts)


@given(policies(), attempts, seeds)
def test_delay_without_retry_after_is_within_the_jitter_window(
    policy: backoff.RetryPolicy, attempt: int, seed: int
) -> None:
    ceiling = min(policy.cap_s, policy.base_s * 2.0 ** min(attempt - 1, 1000))
    assert backoff.backoff_ceiling(attempt, policy) == pytest.approx(ceiling)
    delay = backoff.retry_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= ceiling


@given(policies(), attempts, seeds, st.one_of(st.none(), st.floats(max_value=0.0, allow_nan=False)))
def test_non_positive_retry_after_is_ignored(
    policy: backoff.RetryPolicy, attempt: int, seed: int, retry_after: float | None
) -> None:
    plain = backoff.retry_delay(attempt, policy, random.Random(seed))
    hinted = backoff.retry_delay(attempt, policy, random.Random(seed), retry_after=retry_after)
    assert hinted == plain


@given(
    policies(),
    attempts,
    seeds,
    st.floats(min_value=1e-6, allow_nan=False, allow_infinity=True),
)
def test_retry_after_is_a_floor_capped_at_one_day(
    policy: backoff.RetryPolicy, attempt: int, seed: int, retry_after: float
) -> None:
    delay = backoff.retry_delay(attempt, policy, random.Random(seed), retry_after=retry_after)
    floor = min(retry_after, 86_400.0)
    assert delay >= floor
    # Never more than the larger of the jitter window and the (capped) hint.
    assert delay <= max(backoff.backoff_ceiling(attempt, policy), floor)
    assert math.isfinite(delay)


def test_huge_retry_after_is_capped_at_one_day() -> None:
    policy = backoff.RetryPolicy(base_s=1.0, cap_s=2.0)
    assert backoff.retry_delay(1, policy, random.Random(1), retry_after=10**9) == 86_400.0


@given(policies())
def test_ceiling_grows_then_stops_at_the_cap(policy: backoff.RetryPolicy) -> None:
    ceilings = [backoff.backoff_ceiling(a, policy) for a in range(1, 80)]
    assert ceilings[0] == policy.base_s
    assert all(x <= y for x, y in itertools.pairwise(ceilings))
    assert max(ceilings) <= policy.cap_s
    assert ceilings[-1] == policy.cap_s


@given(st.integers(max_value=0))
def test_ceiling_rejects_attempt_below_one(attempt: int) -> None:
    with pytest.raises(errors.InvalidInput):
        backoff.backoff_ceiling(attempt, backoff.RetryPolicy())


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=1, max_value=1000))
def test_exhausted(attempt: int, max_attempts: int) -> None:
    assert backoff.exhausted(attempt, max_attempts) is (attempt >= max_attempts)


def test_exhausted_boundaries() -> None:
    assert not backoff.exhausted(4, 5)
    assert backoff.exhausted(5, 5)
    assert backoff.exhausted(6, 5)
    assert backoff.exhausted(1, 1)


@given(st.floats(max_value=0.0, allow_nan=False))
def test_policy_rejects_non_positive_base(base: float) -> None:
    with pytest.raises(errors.InvalidInput, match="base_s"):
        backoff.RetryPolicy(base_s=base, cap_s=10.0)


@given(bases, st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
def test_policy_rejects_cap_below_base(base: float, cap: float) -> None:
    assume(cap < base)
    with pytest.raises(errors.InvalidInput, match="cap_s"):
        backoff.RetryPolicy(base_s=base, cap_s=cap)


@given(st.integers(max_value=0))
def test_policy_rejects_max_attempts_below_one(max_attempts: int) -> None:
    with pytest.raises(errors.InvalidInput, match="max_attempts"):
        backoff.RetryPolicy(max_attempts=max_attempts)


def test_policy_defaults_are_valid() -> None:
    policy = backoff.RetryPolicy()
    assert 0 < policy.base_s <= policy.cap_s
    assert policy.max_attempts >= 1


@pytest.mark.parametrize("kwargs", [{"base_s": math.nan}, {"cap_s": math.nan}])
def test_policy_rejects_nan(kwargs: dict[str, float]) -> None:
    with pytest.raises(errors.InvalidInput):
        backoff.RetryPolicy(**kwargs)


def test_jitter_is_spread() -> None:
    rng = random.Random(20240601)
    policy = backoff.RetryPolicy(base_s=1.0, cap_s=300.0)
    samples = [backoff.retry_delay(5, policy, rng) for _ in range(1000)]
    ceiling = backoff.backoff_ceiling(5, policy)  # 16 s
    assert len(set(samples)) > 900
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter: samples cover the window, not a band near the ceiling.
    assert min(samples) < 0.1 * ceiling
    assert max(samples) > 0.9 * ceiling
    mean = sum(samples) / len(samples)
    assert 0.4 * ceiling < mean < 0.6 * ceiling


def test_same_seed_same_delays() -> None:
    policy = backoff.RetryPolicy()
    a = [backoff.retry_delay(3, policy, random.Random(7)) for _ in range(3)]
    assert len(set(a)) == 1
