"""Job types the benchmarks register in their worker processes."""

from __future__ import annotations

import time

from worker.sdk import JobContext, job_handler

QUEUE = "bench"  # a queue of its own: leftovers of other work cannot skew the figures


@job_handler("bench.noop", queue=QUEUE, max_attempts=1)
def noop(ctx: JobContext) -> None:
    """Does nothing, like the built-in noop, on the benchmark's queue."""


@job_handler("bench.probe", queue=QUEUE, max_attempts=1)
def probe(ctx: JobContext) -> None:
    """Logs the wall-clock time at which the handler started: dispatch latency (throughput.py)
    and handler start times under a token bucket (ratelimit.py)."""
    ctx.log(repr(time.time()))
