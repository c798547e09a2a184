"""`orch sources | pause | resume | blackouts | quotas`: flow-control commands, thin over
core.control (typed results) and core.queries."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from core import control, queries
from core.domain import errors
from worker.cli.common import (
    Context,
    add_json,
    add_tenant,
    add_why,
    duration,
    out,
    print_json,
    table,
    to_float,
    to_int,
)

# -- sources -------------------------------------------------------------------------------


def cmd_sources_add(ctx: Context) -> int:
    a = ctx.args
    r = control.add_source(
        ctx.engine,
        ctx.principal,
        tenant=a.tenant,
        name=a.name,
        host=a.host,
        rate=a.rate,
        burst=a.burst,
        max_active=a.max_active,
        allow_private=a.allow_private,
        reason=a.reason,
        ticket=a.ticket,
    )
    limit = f", rate {a.rate}/s burst {a.burst or max(1.0, a.rate)}" if a.rate is not None else ""
    slots = f", at most {a.max_active} running" if a.max_active is not None else ""
    private = ", private addresses allowed" if r.allow_private else ""
    verb = "added" if r.created else "updated"
    return out(ctx, r, f"source {a.name} of {a.tenant} {verb}: host {a.host}{limit}{slots}{private}")


SOURCE_COLUMNS = ["tenant", "name", "host", "health", "rate", "base_rate", "tokens", "circuit_state", "active"]


def cmd_sources_list(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        rows = queries.sources(conn, ctx.principal, tenant=ctx.args.tenant)
    if ctx.args.json:
        print_json({"sources": rows})
    else:
        table(rows, SOURCE_COLUMNS)
    return 0


def cmd_sources_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        src = queries.source(conn, ctx.principal, tenant=a.tenant, name=a.name)
    if a.json:
        print_json(src)
        return 0
    private = "; private addresses allowed" if src["allow_private"] else ""
    print(f"source {src['name']} of {src['tenant']} ({src['host']}{private}): {src['health']}")
    if src["bucket_id"] is not None:
        blocked = f", blocked until {src['blocked_until']}" if src["blocked_until"] else ""
        ceiling = f", learned limit {src['ceiling']}/s" if src["ceiling"] else ""
        print(
            f"  bucket: {src['tokens']}/{src['capacity']} tokens, rate {src['rate']}/s"
            f" (configured {src['base_rate']}/s){ceiling}{blocked}; {src['denied_total']} denials,"
            f" {src['upstream_429_total']} upstream 429s"
        )
    else:
        print("  bucket: none (no rate limit)")
    until = f" until {src['circuit_until']}" if src["circuit_until"] else ""
    print(
        f"  circuit: {src['circuit_state']}{until}; {src['circuit_failures']} failures in the last"
        f" {src['circuit_outcomes']} outcomes (opens at {src['cb_failure_ratio']:.0%} of {src['cb_window']},"
        f" at least {src['cb_min_outcomes']}); opened {src['opened_total']} times"
    )
    cap = f"/{src['max_active']}" if src["max_active"] else ""
    print(f"  running: {src['active']}{cap}")
    if src["paused_reason"]:
        print(f"  paused: {src['paused_reason']}")
    if src["blackout_until"]:
        print(f"  blackout until {src['blackout_until']}")
    elif src["next_blackout"]:
        print(f"  next blackout at {src['next_blackout']}")
    waiting = ", ".join(f"{k} {v}" for k, v in sorted(src["waiting"].items())) or "none"
    print(f"  waiting: {waiting}")
    if src["throttles"]:
        print("  rate changes:")
        for t in src["throttles"][:10]:
            print(f"    {t['at']}  {t['old_rate']} -> {t['new_rate']}  {t['actor']}: {t['reason']}")
    return 0


def cmd_sources_pause(ctx: Context) -> int:
    a = ctx.args
    r = control.pause(ctx.engine, ctx.principal, tenant=a.tenant, source=a.name, reason=a.reason, ticket=a.ticket)
    return out(ctx, r, f"source {a.name} of {a.tenant} paused" + ("" if r.changed else " (already was)"))


def cmd_sources_resume(ctx: Context) -> int:
    a = ctx.args
    r = control.resume(ctx.engine, ctx.principal, tenant=a.tenant, source=a.name, reason=a.reason, ticket=a.ticket)
    text = f"source {a.name} of {a.tenant} resumed; {r.released} waiting job(s) released"
    return out(ctx, r, text if r.changed else f"source {a.name} of {a.tenant} was not paused")


def cmd_sources_throttle(ctx: Context) -> int:
    a = ctx.args
    r = control.throttle_source(
        ctx.engine,
        ctx.principal,
        tenant=a.tenant,
        source=a.name,
        rate=a.rate,
        burst=a.burst,
        reason=a.reason,
        ticket=a.ticket,
    )
    return out(ctx, r, f"source {a.name} of {a.tenant}: rate {r.old_rate} -> {a.rate}/s")


def cmd_sources_reset_circuit(ctx: Context) -> int:
    a = ctx.args
    r = control.reset_circuit(
        ctx.engine, ctx.principal, tenant=a.tenant, source=a.name, reason=a.reason, ticket=a.ticket
    )
    text = f"circuit of {a.name} ({a.tenant}): {r.old_state} -> closed; {r.released} waiting job(s) released"
    return out(ctx, r, text)


# -- pause / resume of a tenant or a job type ------------------------------------------------


def cmd_pause(ctx: Context) -> int:
    a = ctx.args
    r = control.pause(
        ctx.engine,
        ctx.principal,
        tenant=a.tenant,
        source=a.source,
        job_type=a.job_type,
        reason=a.reason,
        ticket=a.ticket,
    )
    return out(ctx, r, f"{a.tenant}: {r.scope} paused" + ("" if r.changed else " (already was)"))


def cmd_resume(ctx: Context) -> int:
    a = ctx.args
    r = control.resume(
        ctx.engine,
        ctx.principal,
        tenant=a.tenant,
        source=a.source,
        job_type=a.job_type,
        reason=a.reason,
        ticket=a.ticket,
    )
    if not r.changed:
        return out(ctx, r, f"{a.tenant}: {r.scope} was not paused")
    return out(ctx, r, f"{a.tenant}: {r.scope} resumed; {r.released} waiting job(s) released")


# -- blackouts -------------------------------------------------------------------------------


def _when(value: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidInput(f"not an ISO 8601 time: {value!r} (e.g. 2026-12-01T02:00:00Z)") from None
    if when.tzinfo is None:
        raise errors.InvalidInput(f"{value!r} has no time zone; add Z for UTC or an offset like +01:00")
    return when


def cmd_blackouts_add(ctx: Context) -> int:
    a = ctx.args
    if a.cron is None and (a.start is None or a.end is None):
        raise errors.InvalidInput("give --start and --end, or --cron and --duration")
    r = control.add_blackout(
        ctx.engine,
        ctx.principal,
        tenant=a.tenant,
        source=a.source,
        starts_at=None if a.start is None else _when(a.start),
        ends_at=None if a.end is None else _when(a.end),
        cron_expr=a.cron,
        duration_s=None if a.duration is None else duration(a.duration),
        reason=a.reason,
        ticket=a.ticket,
    )
    scope = f"source {a.source}" if a.source else "every source"
    return out(ctx, r, f"blackout {r.id} for {a.tenant} ({scope}): next window {r.window_start} .. {r.window_end}")


BLACKOUT_COLUMNS = ["id", "tenant", "source", "cron", "window_start", "window_end", "active", "reason"]


def cmd_blackouts_list(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        rows = queries.blackouts(conn, ctx.principal, tenant=ctx.args.tenant, include_past=ctx.args.all)
    if ctx.args.json:
        print_json({"blackouts": rows})
    else:
        table(rows, BLACKOUT_COLUMNS)
    return 0


def cmd_blackouts_remove(ctx: Context) -> int:
    a = ctx.args
    r = control.remove_blackout(ctx.engine, ctx.principal, a.id, reason=a.reason, ticket=a.ticket)
    return out(ctx, r, f"blackout {a.id} removed; {r.released} waiting job(s) released")


# -- quotas and backlog limits ----------------------------------------------------------------


def cmd_quotas_set(ctx: Context) -> int:
    a = ctx.args
    if a.job_type is None and a.backlog_limit is None and not a.no_backlog_limit:
        raise errors.InvalidInput(
            "give --job-type with --max-active/--max-per-hour, or --backlog-limit N (or --no-backlog-limit)"
        )
    if a.job_type is None and (a.max_active is not None or a.max_per_hour is not None):
        raise errors.InvalidInput("--max-active and --max-per-hour need --job-type")
    result: dict[str, Any] = {}
    lines: list[str] = []
    if a.job_type is not None:
        q = control.set_quota(
            ctx.engine,
            ctx.principal,
            tenant=a.tenant,
            job_type=a.job_type,
            max_active=a.max_active,
            max_per_hour=a.max_per_hour,
            reason=a.reason,
            ticket=a.ticket,
        )
        result["quota"] = q
        if a.max_active is None and a.max_per_hour is None:
            lines.append(f"quota of {a.job_type} ({a.tenant}) removed")
        else:
            lines.append(
                f"quota of {a.job_type} ({a.tenant}): max_active {a.max_active or '-'},"
                f" max_per_hour {a.max_per_hour or '-'}"
            )
    if a.backlog_limit is not None or a.no_backlog_limit:
        b = control.set_backlog_limit(
            ctx.engine,
            ctx.principal,
            tenant=a.tenant,
            limit=None if a.no_backlog_limit else a.backlog_limit,
            policy=a.backlog_policy,
            reason=a.reason,
            ticket=a.ticket,
        )
        result["backlog"] = b
        lines.append(f"backlog limit of {a.tenant}: {b.backlog_limit or 'none'} (beyond it: {b.backlog_policy})")
    return out(ctx, result, "\n".join(lines))


def cmd_quotas_list(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        rows = queries.quotas(conn, ctx.principal, tenant=ctx.args.tenant)
        limits = queries.backlog_limits(conn, ctx.principal, tenant=ctx.args.tenant)
    if ctx.args.json:
        print_json({"quotas": rows, "backlog_limits": limits})
        return 0
    table(rows, ["tenant", "job_type", "max_active", "active", "max_per_hour", "started_last_hour", "waiting"])
    if limits:
        print()
        table(limits, ["tenant", "backlog_limit", "backlog_policy", "backlog", "deferred"])
    return 0


# -- parser ----------------------------------------------------------------------------------


def _source_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the source's name")
    add_tenant(p, required=True, what=" the source belongs to")


def register(sub: Any) -> None:
    src = sub.add_parser("sources", help="upstream sources: rate limits, circuits, pauses").add_subparsers(
        dest="sources_command", required=True
    )
    sa_ = src.add_parser("add", help="register (or update) a source of a tenant on an upstream host (orch:quota)")
    add_tenant(sa_, required=True, what=" the source belongs to (created if new)")
    sa_.add_argument("--name", required=True, help="the source's name, unique within the tenant")
    sa_.add_argument("--host", required=True, help="upstream host (its bucket is shared by the tenant's sources)")
    sa_.add_argument("--rate", type=to_float, help="jobs per second the host may take (token bucket refill)")
    sa_.add_argument("--burst", type=to_float, help="bucket capacity (default: max(1, rate))")
    sa_.add_argument("--max-active", type=to_int, help="jobs of this source running at once")
    sa_.add_argument(
        "--allow-private",
        action="store_true",
        help="let its jobs fetch loopback, private and link-local addresses (refused by default)",
    )
    add_why(sa_, required=False)
    sa_.set_defaults(fn=cmd_sources_add)
    sl = src.add_parser("list", help="sources with their health, bucket and circuit")
    add_tenant(sl)
    add_json(sl)
    sl.set_defaults(fn=cmd_sources_list)
    ss = src.add_parser("show", help="one source: bucket, circuit, pause, blackouts, quotas, waiting jobs")
    _source_arg(ss)
    add_json(ss)
    ss.set_defaults(fn=cmd_sources_show)
    for name, fn, text in [
        ("pause", cmd_sources_pause, "stop dispatching a source's jobs (orch:operate)"),
        ("resume", cmd_sources_resume, "dispatch a paused source's jobs again (orch:operate)"),
        ("reset-circuit", cmd_sources_reset_circuit, "close a source's circuit by hand (orch:operate)"),
    ]:
        sp = src.add_parser(name, help=text)
        _source_arg(sp)
        add_why(sp)
        sp.set_defaults(fn=fn)
    st = src.add_parser("throttle", help="set a source's rate (orch:quota)")
    _source_arg(st)
    st.add_argument("--rate", type=to_float, required=True, help="jobs per second (the bucket's refill)")
    st.add_argument("--burst", type=to_float, help="bucket capacity (default: unchanged)")
    add_why(st)
    st.set_defaults(fn=cmd_sources_throttle)

    for name, fn, text in [
        ("pause", cmd_pause, "stop dispatching a tenant, one of its job types or sources (orch:operate)"),
        ("resume", cmd_resume, "undo a pause of that exact scope (orch:operate)"),
    ]:
        pp = sub.add_parser(name, help=text)
        add_tenant(pp, required=True)
        scope = pp.add_mutually_exclusive_group()
        scope.add_argument("--job-type", help="only this job type of the tenant")
        scope.add_argument("--source", help="only this source of the tenant")
        add_why(pp)
        pp.set_defaults(fn=fn)

    bo = sub.add_parser("blackouts", help="windows with no dispatch").add_subparsers(
        dest="blackouts_command", required=True
    )
    ba = bo.add_parser("add", help="a one-off (--start/--end) or recurring (--cron/--duration) window (orch:quota)")
    add_tenant(ba, required=True)
    ba.add_argument("--source", help="one source (default: every source of the tenant)")
    ba.add_argument("--start", help="ISO 8601 with a time zone, e.g. 2026-12-01T02:00:00Z")
    ba.add_argument("--end", help="ISO 8601 with a time zone")
    ba.add_argument("--cron", help="5-field cron expression in UTC, e.g. '0 2 * * SUN'")
    ba.add_argument("--duration", help="length of each recurring window, e.g. 30m, 2h")
    add_why(ba)
    ba.set_defaults(fn=cmd_blackouts_add)
    bl = bo.add_parser("list", help="current and coming blackouts")
    add_tenant(bl)
    bl.add_argument("--all", action="store_true", help="include one-off windows that are over")
    add_json(bl)
    bl.set_defaults(fn=cmd_blackouts_list)
    br = bo.add_parser("remove", help="delete a blackout (orch:quota)")
    br.add_argument("id", type=to_int, help="the blackout's id (orch blackouts list)")
    add_why(br)
    br.set_defaults(fn=cmd_blackouts_remove)

    qu = sub.add_parser("quotas", help="concurrency quotas and backlog limits").add_subparsers(
        dest="quotas_command", required=True
    )
    qs = qu.add_parser("set", help="a job type's quota and/or the tenant's backlog limit (orch:quota)")
    add_tenant(qs, required=True)
    qs.add_argument("--job-type", help="the job type the quota limits")
    qs.add_argument("--max-active", type=to_int, help="jobs of the type running at once (omit both: remove)")
    qs.add_argument("--max-per-hour", type=to_int, help="jobs of the type started in any hour")
    qs.add_argument("--backlog-limit", type=to_int, help="waiting jobs the tenant may have")
    qs.add_argument("--no-backlog-limit", action="store_true", help="remove the tenant's backlog limit")
    qs.add_argument(
        "--backlog-policy",
        choices=control.BACKLOG_POLICIES,
        default="refuse",
        help="beyond the limit: refuse the submit (exit 8) or accept the jobs deferred (default refuse)",
    )
    add_why(qs)
    qs.set_defaults(fn=cmd_quotas_set)
    ql = qu.add_parser("list", help="quotas with slots in use, and backlog limits")
    add_tenant(ql)
    add_json(ql)
    ql.set_defaults(fn=cmd_quotas_list)
