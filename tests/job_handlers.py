"""Job types used by the tests (registered by workers started with ORCH_HANDLER_MODULES)."""

from __future__ import annotations

import time

from worker.sdk import JobContext, RetryableError, job_handler


@job_handler("test.report", max_attempts=1)
def report(ctx: JobContext) -> None:
    """Exercises the SDK: progress, a log line, an artifact."""
    ctx.progress(0.5, "half way")
    ctx.log(f"attempt {ctx.attempt} of tenant {ctx.tenant}")
    ctx.artifact("result.txt", str(ctx.payload.get("text", "hello")).encode(), "text/plain")


@job_handler("test.retry_after", max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.1)
def retry_after(ctx: JobContext) -> None:
    """Fails once with a Retry-After hint, then succeeds."""
    if ctx.attempt == 1:
        raise RetryableError(
            "throttled", retry_after=float(ctx.payload.get("retry_after", 1.0)), error_class="http_429"
        )


@job_handler("test.short_lease", lease_s=2.0, heartbeat_s=0.5, max_attempts=3)
def short_lease(ctx: JobContext) -> None:
    """Sleeps; with a 2 s lease, a killed worker's job is reaped quickly."""
    deadline = time.monotonic() + float(ctx.payload.get("seconds", 1.0))
    while time.monotonic() < deadline:
        if ctx.should_cancel():
            return
        time.sleep(0.05)


@job_handler("test.env_probe", max_attempts=1)
def env_probe(ctx: JobContext) -> None:
    """Logs the names of the ORCH_ variables its process sees, and whether any variable holds
    the value the payload names (a credential a handler must not be given)."""
    import os

    secret = str(ctx.payload.get("secret", ""))
    names = sorted(k for k in os.environ if k.startswith("ORCH_"))
    holders = sorted(k for k, v in os.environ.items() if secret and secret in v)
    ctx.log("orch variables: " + ",".join(names))
    ctx.log("holding the secret: " + (",".join(holders) or "none"))
