"""Job types for the flow-control worker tests (loaded by workers with ORCH_HANDLER_MODULES)."""

from __future__ import annotations

import time

from worker.sdk import JobContext, job_handler


@job_handler("flow.hold", lease_s=1.5, heartbeat_s=0.3, max_attempts=3)
def hold(ctx: JobContext) -> None:
    """{"seconds": s}: holds its quota slot for s seconds. With a 1.5 s lease, the job of a
    killed worker is reaped (and its slot freed) quickly."""
    deadline = time.monotonic() + float(ctx.payload.get("seconds", 1.0))
    while time.monotonic() < deadline:
        if ctx.should_cancel():
            return
        time.sleep(0.05)
