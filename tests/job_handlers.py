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


# -- DAG runs ------------------------------------------------------------------------------


@job_handler("test.emit", max_attempts=1)
def emit(ctx: JobContext) -> object:
    """Returns its payload's value (its children read it)."""
    return {"value": ctx.payload.get("value", 0), "key": ctx.key}


@job_handler("test.sum_parents", max_attempts=1)
def sum_parents(ctx: JobContext) -> object:
    """Returns the sum of its parents' values, and the keys it read them from."""
    values = {k: (p.result or {}).get("value", 0) for k, p in ctx.parents.items()}
    return {"value": sum(values.values()), "from": sorted(values)}


@job_handler("test.fail_unless_file", max_attempts=1)
def fail_unless_file(ctx: JobContext) -> object:
    """Dead-letters until the file its payload names exists (a fix an operator makes)."""
    from pathlib import Path

    from worker.sdk import FatalError

    if not Path(str(ctx.payload["flag"])).exists():
        raise FatalError(f"no {ctx.payload['flag']} yet", error_class="schema_mismatch")
    return {"value": int(ctx.payload.get("value", 1))}


@job_handler("test.fan_out", max_attempts=2)
def fan_out(ctx: JobContext) -> object:
    """Spawns payload["n"] test.emit jobs (after itself); a join after it waits for them."""
    from worker.sdk import SpawnSpec

    n = int(ctx.payload["n"])
    made = ctx.spawn(*[SpawnSpec(key=f"part-{i}", job_type="test.emit", payload={"value": i}) for i in range(n)])
    return {"spawned": len(made), "value": 0}


# -- schedules and backfills ---------------------------------------------------------------


@job_handler("test.windowed", max_attempts=1)
def windowed(ctx: JobContext) -> object:
    """Reads its data interval, reports its end as the watermark, and returns the interval;
    sleeps payload["seconds"] first (0 by default). With payload["result_watermark"], it
    reports that watermark with its result instead."""
    time.sleep(float(ctx.payload.get("seconds", 0)))
    if "result_watermark" in ctx.payload:
        return {"watermark": ctx.payload["result_watermark"]}
    interval = ctx.data_interval
    if interval is None:
        return {"interval": None}
    ctx.watermark(interval[1])
    return {"interval": [interval[0].isoformat(), interval[1].isoformat()]}
