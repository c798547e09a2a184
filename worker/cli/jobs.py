"""`orch submit | jobs | dlq | errors`: submit, inspect and steer jobs, dead letters and error
clusters, thin over core.control and core.queries."""

from __future__ import annotations

import json
from typing import Any

from core import control, queries
from core.domain import errors, payloads
from worker.cli.common import (
    Context,
    add_json,
    add_limit,
    add_tenant,
    add_why,
    duration,
    print_json,
    table,
    to_int,
)

SUBMIT_CHUNK = 10_000


def cmd_submit(ctx: Context) -> int:
    a = ctx.args
    payload = payloads.parse_payload(a.payload) if a.payload is not None else {}
    if a.count < 1 or a.count > 1_000_000:
        raise errors.InvalidInput(f"--count must be between 1 and 1000000, got {a.count}")
    if a.idempotency_key is not None and a.count > 1:
        raise errors.InvalidInput("--idempotency-key names one job; it cannot be combined with --count > 1")
    spec = control.JobSpec(
        tenant=a.tenant,
        job_type=a.type,
        payload=payload,
        idempotency_key=a.idempotency_key,
        priority=a.priority,
        max_attempts=a.max_attempts,
        source=a.source,
    )
    engine = ctx.engine
    bell = ctx.doorbell()
    ids: list[int] = []
    for start in range(0, a.count, SUBMIT_CHUNK):
        n = min(SUBMIT_CHUNK, a.count - start)
        ids += control.submit_many(engine, ctx.principal, [spec] * n, doorbell=bell, reason=a.reason).job_ids
    if a.json:
        print_json({"job_ids": ids})
    elif len(ids) == 1:
        print(f"job {ids[0]}")
    else:
        print(f"{len(ids)} jobs: {ids[0]}..{ids[-1]}")
    return 0


LIST_COLUMNS = ["id", "tenant", "job_type", "state", "attempt", "max_attempts", "error_class", "updated_at"]


def cmd_jobs_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_jobs(conn, ctx.principal, tenant=a.tenant, state=a.state, job_type=a.type, limit=a.limit)
    if a.json:
        print_json({"jobs": rows})
    else:
        table(rows, LIST_COLUMNS)
    return 0


def describe_wait(job: dict[str, Any]) -> str | None:
    """Why a job waits and until when, in words (None when it does not wait)."""
    reason, until = job.get("wait_reason"), job.get("not_before")
    if job.get("state") == "retrying":
        return f"retrying after a failure; next attempt at {until}"
    if job.get("state") != "throttled" or reason is None:
        return None
    words = {
        "rate_limited": f"rate limited: its token comes at {until}",
        "quota": f"quota full: tries again at {until}",
        "paused": f"paused: waits until resumed (checked again at {until})",
        "blackout": f"blackout: until {until}",
        "circuit_open": f"circuit open: until {until}",
        "backpressure": "backpressure: waits until the tenant's backlog is under its limit",
    }
    return words.get(str(reason), f"{reason} until {until}")


SHOW_FIELDS = (
    "id",
    "tenant",
    "job_type",
    "source",
    "queue",
    "state",
    "wait_reason",
    "not_before",
    "attempt",
    "max_attempts",
    "priority",
    "error_class",
    "last_error",
    "progress",
    "progress_message",
    "lease_owner",
    "lease_expires_at",
    "correlation_id",
    "replay_of",
    "idempotency_key",
    "created_at",
    "started_at",
    "finished_at",
)


def cmd_jobs_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        job = queries.get_job(conn, ctx.principal, a.id)
        history = queries.job_history(conn, ctx.principal, a.id)
        logs = queries.job_logs(conn, ctx.principal, a.id)
        artifacts = queries.job_artifacts(conn, ctx.principal, a.id)
    if a.json:
        print_json({"job": job, "history": history, "logs": logs, "artifacts": artifacts})
        return 0
    if (wait := describe_wait(job)) is not None:
        print(f"{'waits':>17}: {wait}")
    for key in SHOW_FIELDS:
        if job.get(key) is not None:
            print(f"{key:>17}: {job[key]}")
    print(f"{'payload':>17}: {json.dumps(job['payload'], sort_keys=True)}")
    print("\nhistory:")
    for h in history:
        arrow = f"{h['from_state'] or '-'} -> {h['to_state']}"
        print(f"  {h['at']}  {arrow:<28} {h['event']:<15} {h['actor']}  {h['reason'] or ''}")
    if artifacts:
        print("\nartifacts:")
        for art in artifacts:
            print(f"  {art['name']}  {art['media_type']}  {art['size_bytes']} bytes  sha256 {art['sha256']}")
    if logs:
        print("\nlog:")
        for line in logs:
            print(f"  {line['at']}  [{line['attempt']}] {line['level']}: {line['message']}")
    return 0


def cmd_jobs_stats(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        stats = queries.job_stats(conn, ctx.principal, tenant=ctx.args.tenant)
    if ctx.args.json:
        print_json(stats)
    else:
        print(f"total: {stats['total']}")
        for state, n in stats["by_state"].items():
            print(f"  {state:<16}{n}")
    return 0


def cmd_jobs_cancel(ctx: Context) -> int:
    a = ctx.args
    result = control.cancel(ctx.engine, ctx.principal, a.id, reason=a.reason, ticket=a.ticket, doorbell=ctx.doorbell())
    if a.json:
        print_json({"job_id": a.id, "result": result})
    elif result == "canceled":
        print(f"job {a.id} canceled")
    else:
        print(f"job {a.id} is running; cancellation requested (the handler stops at its next check)")
    return 0


def cmd_jobs_retry(ctx: Context) -> int:
    a = ctx.args
    new_id = control.retry(ctx.engine, ctx.principal, a.id, doorbell=ctx.doorbell(), reason=a.reason, ticket=a.ticket)
    if a.json:
        print_json({"job_id": new_id, "replay_of": None if new_id == a.id else a.id})
    elif new_id == a.id:
        print(f"job {new_id} will be retried now")
    else:
        print(f"job {new_id} replays job {a.id}")
    return 0


def cmd_dlq_list(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        rows = queries.dead_letters(conn, ctx.principal, tenant=ctx.args.tenant, limit=ctx.args.limit)
    if ctx.args.json:
        print_json({"jobs": rows})
    else:
        table(rows, ["id", "tenant", "job_type", "attempt", "error_class", "finished_at"])
    return 0


def cmd_errors_clusters(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.error_clusters(conn, ctx.principal, tenant=a.tenant, since_s=duration(a.since), limit=a.limit)
    if a.json:
        print_json({"clusters": rows})
    else:
        table(rows, ["error_class", "fingerprint", "count", "last_seen", "job_types", "message"])
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("submit", help="submit jobs")
    add_tenant(s, required=True, what=" the jobs belong to (created if new)")
    s.add_argument("--type", required=True, help="job type, e.g. noop, sleep, fail, flaky, http_fetch")
    s.add_argument("--payload", help="the job's input, a JSON object (default {})")
    s.add_argument("--idempotency-key", help="submitting the same key again returns the existing job")
    s.add_argument("--priority", type=to_int, default=0, help="-1000..1000; higher runs first (default 0)")
    s.add_argument("--max-attempts", type=to_int, help="attempts before dead-lettering (default: the job type's)")
    s.add_argument("--count", type=to_int, default=1, help="submit this many identical jobs (default 1)")
    s.add_argument("--source", help="the tenant's source (upstream feed) the job reads")
    s.add_argument("--reason", help="why, recorded with the jobs and in the audit log")
    add_json(s)
    s.set_defaults(fn=cmd_submit)

    jobs = sub.add_parser("jobs", help="inspect and steer jobs").add_subparsers(dest="jobs_command", required=True)
    jl = jobs.add_parser("list", help="newest jobs first")
    add_tenant(jl)
    jl.add_argument("--state", help="only jobs in this state, e.g. queued, running, dead_lettered")
    jl.add_argument("--type", help="only jobs of this job type")
    add_limit(jl, 50)
    add_json(jl)
    jl.set_defaults(fn=cmd_jobs_list)
    js = jobs.add_parser("show", help="one job with its history, logs and artifacts")
    js.add_argument("id", type=to_int, help="the job's id")
    add_json(js)
    js.set_defaults(fn=cmd_jobs_show)
    jst = jobs.add_parser("stats", help="jobs per state")
    add_tenant(jst)
    add_json(jst)
    jst.set_defaults(fn=cmd_jobs_stats)
    for name, fn, text in [
        ("cancel", cmd_jobs_cancel, "cancel a job (orch:operate)"),
        ("retry", cmd_jobs_retry, "replay a dead-lettered job, or retry a retrying one now (orch:operate)"),
    ]:
        jp = jobs.add_parser(name, help=text)
        jp.add_argument("id", type=to_int, help="the job's id")
        add_why(jp)
        jp.set_defaults(fn=fn)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq_command", required=True)
    dl = dlq.add_parser("list", help="dead-lettered jobs, newest first")
    add_tenant(dl)
    add_limit(dl, 100)
    add_json(dl)
    dl.set_defaults(fn=cmd_dlq_list)

    err = sub.add_parser("errors", help="error clusters").add_subparsers(dest="errors_command", required=True)
    ec = err.add_parser("clusters", help="failures grouped by class and normalised message")
    add_tenant(ec)
    ec.add_argument("--since", default="1h", help="how far back, e.g. 15m, 1h, 3d (default 1h)")
    add_limit(ec, 20)
    add_json(ec)
    ec.set_defaults(fn=cmd_errors_clusters)
