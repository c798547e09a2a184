"""Built-in job types for demos, tests and benchmarks: noop, sleep, fail, flaky."""

from __future__ import annotations

import random
import time

from core.domain.failures import ErrorClass
from worker.sdk import Canceled, FatalError, JobContext, RetryableError, job_handler

MAX_SLEEP_S = 24 * 3600


@job_handler("noop")
def noop(ctx: JobContext) -> None:
    """Does nothing: measures the orchestrator itself."""


@job_handler("sleep", backoff_base_s=1.0)
def sleep(ctx: JobContext) -> None:
    """{"seconds": s}: sleeps in small steps, reporting progress and honouring cancel."""
    seconds = float(ctx.payload.get("seconds", 1.0))
    if not 0 <= seconds <= MAX_SLEEP_S:
        raise FatalError(
            f"seconds must be within [0, {MAX_SLEEP_S}], got {seconds}", error_class=ErrorClass.PARSE_ERROR
        )
    deadline = time.monotonic() + seconds
    last_report = 0.0
    while (left := deadline - time.monotonic()) > 0:
        if ctx.should_cancel():
            raise Canceled()
        time.sleep(min(left, 0.1))
        now = time.monotonic()
        if seconds >= 1 and now - last_report >= 1.0:
            last_report = now
            ctx.progress(min(1.0, 1 - (deadline - now) / seconds), f"slept {seconds - max(0.0, deadline - now):.1f}s")


@job_handler("fail", max_attempts=3, backoff_base_s=0.5, backoff_cap_s=10.0)
def fail(ctx: JobContext) -> None:
    """{"error_class": c, "retryable": bool, "message": m, "retry_after": s}: always fails."""
    error_class = str(ctx.payload.get("error_class", ErrorClass.UNKNOWN))
    message = str(ctx.payload.get("message", "failed on purpose"))
    if ctx.payload.get("retryable", True):
        retry_after = ctx.payload.get("retry_after")
        raise RetryableError(
            message, error_class=error_class, retry_after=None if retry_after is None else float(retry_after)
        )
    raise FatalError(message, error_class=error_class)


@job_handler("flaky", max_attempts=5, backoff_base_s=0.5, backoff_cap_s=10.0)
def flaky(ctx: JobContext) -> None:
    """{"fail_ratio": r}: fails with a simulated upstream 503 with probability r."""
    ratio = float(ctx.payload.get("fail_ratio", 0.5))
    if random.random() < ratio:
        raise RetryableError(f"simulated upstream 503 on attempt {ctx.attempt}", error_class=ErrorClass.HTTP_5XX)
