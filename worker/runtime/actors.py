"""Thin actors: a doorbell claims the next ready job of its queue, runs its handler through
the SDK and hands the outcome to the pump. Dramatiq only wakes us; the ledger decides."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Mapping

import dramatiq

from core.control.common import ring
from core.domain import backoff, dag, errors, redaction
from core.domain.failures import ErrorClass, truncate_message
from worker import sdk
from worker.runtime import broker as broker_mod
from worker.runtime import exporter
from worker.runtime.pump import CanceledOutcome, FailedFinal, FailedRetryable, Outcome, Pump, Succeeded, Throttled

log = logging.getLogger(__name__)

#: Most jobs a thread runs for one doorbell before it goes back to Dramatiq for the next.
DRAIN_MAX = 100


class Runtime:
    """Runs claimed jobs with the handlers registered in this process."""

    def __init__(
        self, pump: Pump, handlers: Mapping[str, sdk.HandlerSpec], *, rng: random.Random | None = None
    ) -> None:
        self.pump = pump
        self.handlers = handlers
        self.rng = rng or random.Random()

    def on_doorbell(self, queue: str) -> None:
        """A doorbell wakes this thread; it then runs ready jobs of the queue one after the
        other, without waiting for another doorbell, until none is ready. After DRAIN_MAX
        jobs it rings the queue's doorbell again and returns, so doorbells of other queues
        waiting for this thread get their turn and the work goes on. A doorbell that finds
        nothing costs one empty claim."""
        job: sdk.ActiveJob | None = None
        done: sdk.ActiveJob | None = None  # its success rides on the next claim
        for n in range(DRAIN_MAX):
            try:
                job = self.pump.claim(queue, done)
            except (errors.Unavailable, TimeoutError) as exc:
                # The doorbell is acknowledged anyway; the scheduler re-rings. The pump
                # writes `done`'s success whatever became of the claim.
                log.warning("claim on %s failed: %s", queue, exc)
                return
            done = None
            if job is None:
                if n == 0:
                    log.debug("doorbell on %s: nothing to claim", queue)
                return
            done = self.run(job, defer=True)
        if done is not None:
            self.pump.finish(done, Succeeded())
        if job is not None:
            ring(self.pump.doorbell, [(job.id, queue)])

    def run(self, job: sdk.ActiveJob, *, defer: bool = False) -> sdk.ActiveJob | None:
        """Run the job's handler and hand its outcome to the pump. With `defer`, a success
        that may ride on this thread's next claim (Pump.can_finish_with_claim) is not handed
        over: the job is returned, for the caller to pass to its next claim."""
        spec = self.handlers.get(job.job_type)
        if spec is None:  # claims filter on our types, so only a registry change gets here
            self.pump.finish(
                job, FailedFinal(ErrorClass.UNKNOWN, f"no handler for job type {job.job_type!r}", "no handler")
            )
            return None
        if job.cancel_requested:
            self.pump.finish(job, CanceledOutcome())
            return None
        m = exporter.metrics()
        m.attempt_started(job.job_type, job.queue, job.queue_wait_s)
        if job.release_s is not None and job.attempt == 1:
            m.dag_released(job.release_s)
        ctx = sdk.JobContext(job, self.pump)
        started = time.perf_counter()
        outcome = self._execute(spec, ctx, job)
        if outcome is None:
            return None
        deferred = defer and self.pump.can_finish_with_claim(job, outcome)
        if not deferred:
            self.pump.finish(job, outcome)
        label, error_class = _outcome_label(outcome)
        m.attempt_ended(job.tenant, job.job_type, job.queue, label, time.perf_counter() - started, error_class)
        return job if deferred else None

    def _execute(self, spec: sdk.HandlerSpec, ctx: sdk.JobContext, job: sdk.ActiveJob) -> Outcome | None:
        try:
            value = spec.fn(ctx)
        except errors.LeaseLost:
            log.warning("job %d: handler stopped, lease lost", job.id)
            return None
        except sdk.Canceled:
            return CanceledOutcome()
        except sdk.UpstreamThrottled as exc:
            # Not a failure of the job: it waits for the bucket again, attempt given back.
            delay = exc.retry_after if exc.retry_after is not None and exc.retry_after >= 0 else 1.0
            return Throttled(min(delay, backoff.MAX_RETRY_AFTER_S), truncate_message(str(exc)), exc.retry_after)
        except sdk.RetryableError as exc:
            return self._retry_or_dead(spec, job, exc.error_class, str(exc), exc.retry_after)
        except sdk.FatalError as exc:
            return FailedFinal(exc.error_class, truncate_message(str(exc) or type(exc).__name__), "fatal error")
        except Exception as exc:  # the handler's bug or an unclassified failure: retried
            message = f"{type(exc).__name__}: {exc}"
            log.info("job %d (%s) raised %s", job.id, job.job_type, redaction.redact_text(message[:200]))
            return self._retry_or_dead(spec, job, ErrorClass.UNKNOWN, message, None)
        if job.lease_lost:
            return None
        if job.cancel_requested:
            # The SDK tells handlers to return (or raise Canceled) once should_cancel() is
            # true; a return after a cancel request is the handler honouring it.
            return CanceledOutcome()
        if value is None:
            return Succeeded()
        if isinstance(value, dict) and "watermark" in value:
            try:
                _report_watermark(ctx, value["watermark"])
            except errors.InvalidInput as exc:
                return FailedFinal(ErrorClass.BAD_RESULT, truncate_message(str(exc)), "bad result")
        try:
            return Succeeded(dag.check_result(value))
        except errors.InvalidInput as exc:
            # Retrying would return the same thing: the handler broke its contract.
            return FailedFinal(ErrorClass.BAD_RESULT, truncate_message(str(exc)), "bad result")

    def _retry_or_dead(
        self, spec: sdk.HandlerSpec, job: sdk.ActiveJob, error_class: str, message: str, retry_after: float | None
    ) -> Outcome:
        message = truncate_message(message or error_class)
        if backoff.exhausted(job.attempt, job.max_attempts):
            return FailedFinal(error_class, message, f"attempts exhausted ({job.attempt}/{job.max_attempts})")
        delay = backoff.retry_delay(job.attempt, spec.policy, self.rng, retry_after)
        return FailedRetryable(delay, error_class, message)


def _report_watermark(ctx: sdk.JobContext, value: object) -> None:
    """A result's "watermark" (an ISO 8601 time or a datetime) moves the job's watermark, as
    ctx.watermark would. Raises InvalidInput for anything else."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise errors.InvalidInput(f"result watermark {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise errors.InvalidInput("a result's watermark must be a timezone-aware ISO 8601 time")
    ctx.watermark(value)


def _outcome_label(outcome: Outcome) -> tuple[str, str | None]:
    if isinstance(outcome, Succeeded):
        return "succeeded", None
    if isinstance(outcome, FailedRetryable):
        return "retried", outcome.error_class
    if isinstance(outcome, FailedFinal):
        return "dead_lettered", outcome.error_class
    if isinstance(outcome, Throttled):
        return "throttled", ErrorClass.HTTP_429
    return "canceled", None


def declare_doorbells(broker: broker_mod.OrchRedisBroker, queues: list[str], runtime: Runtime) -> None:
    """One actor per queue; its message body is the job id that rang (for tracing only)."""
    for queue in queues:

        def ring(job_id: int, _queue: str = queue) -> None:
            runtime.on_doorbell(_queue)

        dramatiq.Actor(
            ring, broker=broker, actor_name=broker_mod.actor_name(queue), queue_name=queue, priority=0, options={}
        )
