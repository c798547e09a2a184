"""Job types the benchmarks register in their worker processes."""

from __future__ import annotations

import functools
import time
from typing import Any

from worker.sdk import JobContext, job_handler

QUEUE = "bench"  # a queue of its own: leftovers of other work cannot skew the figures


@job_handler("bench.noop", queue=QUEUE, max_attempts=1)
def noop(ctx: JobContext) -> None:
    """Does nothing, like the built-in noop, on the benchmark's queue."""


@job_handler("bench.probe", queue=QUEUE, max_attempts=1)
def probe(ctx: JobContext) -> None:
    """Logs the wall-clock time at which the handler started: dispatch latency (throughput.py)
    and handler start times under a token bucket (ratelimit.py). With a "reply" in the
    payload it also pushes "<job id> <time>" onto the Redis list of that name, where
    throughput.py waits for it instead of polling the ledger."""
    started = repr(time.time())
    reply = ctx.payload.get("reply")
    if reply:
        _redis().rpush(str(reply), f"{ctx.job_id} {started}")
    ctx.log(started)


@functools.cache
def _redis() -> Any:
    import redis

    from core.settings import get_settings

    return redis.Redis.from_url(get_settings().redis_url)
