"""Job types the benchmarks register in their worker processes."""

from __future__ import annotations

import time

from worker.sdk import JobContext, job_handler


@job_handler("bench.probe", max_attempts=1)
def probe(ctx: JobContext) -> None:
    """Logs the wall-clock time at which the handler started (dispatch latency probe)."""
    ctx.log(repr(time.time()))
