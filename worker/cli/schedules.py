"""`orch schedules`, `orch backfill` and `orch watermarks`: thin over core.control and
core.queries (docs/design.md, "Schedules, windows and backfills")."""

from __future__ import annotations

import json
import sys
from typing import Any

from core import control, queries
from core.domain import errors
from core.domain import schedules as sched
from worker.cli.common import (
    Context,
    add_json,
    add_limit,
    add_tenant,
    iso_time,
    print_json,
    read_run_document,
    table,
    to_int,
)


def _target(a: Any) -> control.Target:
    """--type/--payload/--source, or --run-file. Raises InvalidInput."""
    if (a.type is None) == (a.run_file is None):
        raise errors.InvalidInput("give what it fires: --type (with --payload, --source) or --run-file, not both")
    if a.run_file is not None:
        if a.payload is not None or a.source is not None:
            raise errors.InvalidInput("--payload and --source go with --type; a run file names them per job")
        doc = read_run_document(a.run_file)
        if isinstance(doc, dict) and "name" not in doc:
            doc = {**doc, "name": a.run_file.rsplit("/", 1)[-1].removesuffix(".json")}
        return control.Target.of_run(doc)
    payload: Any = {}
    if a.payload is not None:
        try:
            payload = json.loads(a.payload)
        except json.JSONDecodeError as exc:
            raise errors.InvalidInput(f"--payload is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(payload, dict):
            raise errors.InvalidInput("--payload must be a JSON object")
    return control.Target.of_job(a.type, payload, source=a.source)


def _progress(total_hint: str) -> Any:
    """A progress bar on standard error (only on a terminal, or when asked)."""
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct == last[0]:
            return
        last[0] = pct
        bar = "#" * (pct // 4)
        sys.stderr.write(f"\r{total_hint} [{bar:<25}] {pct:3d}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# -- schedules ------------------------------------------------------------------------------


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    every = None if a.every is None else sched.parse_duration(a.every, "--every")
    spec = control.ScheduleSpec(
        tenant=a.tenant,
        name=a.name,
        target=_target(a),
        cron=a.cron,
        every=every,
        timezone=a.timezone,
        overlap=a.overlap,
        catchup=a.catchup,
        catchup_window=sched.parse_duration(a.catchup_window, "--catchup-window"),
        max_catchup=a.max_catchup,
        start=None if a.start is None else iso_time(a.start, "--start"),
        end=None if a.end is None else iso_time(a.end, "--end"),
    )
    added = control.add_schedule(ctx.engine, ctx.principal, spec, reason=a.reason, max_jobs=ctx.settings.run_max_jobs)
    if a.json:
        print_json(added)
    else:
        nxt = "never" if added.next_fire_at is None else added.next_fire_at.isoformat()
        print(f"schedule {added.name} of {added.tenant} ({added.trigger}): next tick {nxt}")
    return 0


LIST_COLUMNS = ("tenant", "name", "trigger", "timezone", "overlap", "catchup", "paused", "next_fire_at", "target")


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_schedules(conn, ctx.principal, tenant=a.tenant, limit=a.limit)
    if a.json:
        print_json({"schedules": rows})
        return 0
    table(
        [{**r, "target": r["target"].get("type") or f"run {r['target'].get('name', '')}".strip()} for r in rows],
        LIST_COLUMNS,
    )
    return 0


TICK_COLUMNS = ("scheduled_for", "status", "job_id", "run_id", "work_state", "note")


def cmd_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        s = queries.get_schedule(conn, ctx.principal, a.tenant, a.name, ticks=a.limit)
    if a.json:
        print_json(s)
        return 0
    paused = " (paused)" if s["paused"] else ""
    print(f"schedule {s['name']} of {s['tenant']}: {s['trigger']}{paused}")
    print(f"  fires {json.dumps(s['target'], sort_keys=True)} ({s['target_kind']})")
    print(
        f"  overlap {s['overlap']}, catch-up {s['catchup']} (window {s['catchup_window_s']}s, max {s['max_catchup']})"
    )
    print("  next: " + (", ".join(f"{n['local']} ({n['utc']})" for n in s["next_fires"]) or "none"))
    print("  ticks: " + (", ".join(f"{n} {k}" for k, n in sorted(s["tick_counts"].items())) or "none"))
    table(s["ticks"], TICK_COLUMNS)
    return 0


def _change(ctx: Context, change: control.ScheduleChange) -> int:
    if ctx.args.json:
        print_json(change)
    else:
        ticks = ", ".join(f"{n} {k}" for k, n in sorted(change.ticks.items()))
        made = f" (job {change.job_id})" if change.job_id else f" (run {change.run_id})" if change.run_id else ""
        print(
            f"schedule {change.name} of {change.tenant}: {change.action}{made}" + (f"; ticks: {ticks}" if ticks else "")
        )
    return 0


def cmd_pause(ctx: Context) -> int:
    a = ctx.args
    return _change(ctx, control.pause_schedule(ctx.engine, ctx.principal, a.tenant, a.name, reason=a.reason))


def cmd_resume(ctx: Context) -> int:
    a = ctx.args
    change = control.resume_schedule(
        ctx.engine,
        ctx.principal,
        a.tenant,
        a.name,
        reason=a.reason,
        catchup=a.catchup,
        doorbell=ctx.doorbell(),
        max_jobs=ctx.settings.run_max_jobs,
    )
    return _change(ctx, change)


def cmd_remove(ctx: Context) -> int:
    a = ctx.args
    return _change(ctx, control.remove_schedule(ctx.engine, ctx.principal, a.tenant, a.name, reason=a.reason))


def cmd_trigger(ctx: Context) -> int:
    a = ctx.args
    change = control.trigger_schedule(
        ctx.engine,
        ctx.principal,
        a.tenant,
        a.name,
        reason=a.reason,
        doorbell=ctx.doorbell(),
        max_jobs=ctx.settings.run_max_jobs,
    )
    return _change(ctx, change)


def cmd_backfill_missed(ctx: Context) -> int:
    a = ctx.args
    plan = control.backfill_missed(
        ctx.engine,
        ctx.principal,
        a.tenant,
        a.name,
        reason=a.reason,
        ticket=a.ticket,
        max_active=a.max_active,
        pause_above=a.pause_above,
        dry_run=a.dry_run,
        max_jobs=ctx.settings.run_max_jobs,
    )
    return _plan_out(ctx, plan)


# -- backfills ------------------------------------------------------------------------------


def _plan_out(ctx: Context, plan: control.BackfillPlan) -> int:
    if ctx.args.json:
        print_json(plan.as_dict())
        return 0
    head = "would run" if plan.dry_run else f"backfill {plan.backfill_id}: runs"
    print(
        f"{head} {plan.to_run} of {plan.windows} window(s); skipped: {plan.skipped_done} done, "
        f"{plan.skipped_failed} failed before (re-run them with --reprocess failed), "
        f"{plan.skipped_in_flight} in flight"
    )
    if plan.reprocess == "all":
        print("--reprocess all: windows already done are done again")
    return 0


def cmd_backfill_create(ctx: Context) -> int:
    a = ctx.args
    spec = control.BackfillSpec(
        tenant=a.tenant,
        target=_target(a),
        start=iso_time(a.from_, "--from"),
        end=iso_time(a.to, "--to"),
        window=sched.parse_duration(a.window, "--window"),
        reprocess=a.reprocess,
        max_active=a.max_active,
        pause_above=a.pause_above,
    )
    progress = _progress("planning windows") if sys.stderr.isatty() or a.progress else None
    plan = control.create_backfill(
        ctx.engine,
        ctx.principal,
        spec,
        reason=a.reason,
        ticket=a.ticket,
        dry_run=a.dry_run,
        max_jobs=ctx.settings.run_max_jobs,
        progress=progress,
    )
    return _plan_out(ctx, plan)


BACKFILL_COLUMNS = (
    "id",
    "tenant",
    "source",
    "job_type",
    "state",
    "progress",
    "range_start",
    "range_end",
    "wait_reason",
)


def _progress_text(windows: dict[str, int]) -> str:
    total = sum(windows.values())
    done = windows.get("succeeded", 0) + windows.get("failed", 0) + windows.get("canceled", 0)
    return f"{done}/{total}"


def cmd_backfill_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_backfills(conn, ctx.principal, tenant=a.tenant, state=a.state, limit=a.limit)
    if a.json:
        print_json({"backfills": rows})
        return 0
    table([{**r, "progress": _progress_text(r["windows"])} for r in rows], BACKFILL_COLUMNS)
    return 0


def cmd_backfill_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        b = queries.get_backfill(conn, ctx.principal, a.id)
    if a.json:
        print_json(b)
        return 0
    row = b["backfill"]
    print(
        f"backfill {row['id']} of {row['tenant']}: {row['state']}"
        + (f" ({row['wait_reason']})" if row["wait_reason"] else "")
    )
    print(f"  {row['range_start']} .. {row['range_end']}, reprocess {row['reprocess']}, max active {row['max_active']}")
    print(f"  reason: {row['reason']} (ticket {row['ticket']}, by {row['created_by']})")
    print("  windows: " + (", ".join(f"{n} {k}" for k, n in sorted(b["windows"].items())) or "none"))
    if b["eta_s"] is not None:
        print(f"  eta: {b['eta_s']:.0f}s")
    return 0


def _backfill_change(ctx: Context, change: control.BackfillChange) -> int:
    if ctx.args.json:
        print_json(change)
    else:
        extra = f", {change.terminated} running window(s) canceled" if change.terminated else ""
        print(f"backfill {change.backfill_id}: {change.state}{extra}")
    return 0


def cmd_backfill_pause(ctx: Context) -> int:
    return _backfill_change(ctx, control.pause_backfill(ctx.engine, ctx.principal, ctx.args.id, reason=ctx.args.reason))


def cmd_backfill_resume(ctx: Context) -> int:
    return _backfill_change(
        ctx, control.resume_backfill(ctx.engine, ctx.principal, ctx.args.id, reason=ctx.args.reason)
    )


def cmd_backfill_cancel(ctx: Context) -> int:
    a = ctx.args
    change = control.cancel_backfill(
        ctx.engine,
        ctx.principal,
        a.id,
        reason=a.reason,
        terminate_running=a.terminate_running,
        doorbell=ctx.doorbell() if a.terminate_running else None,
    )
    return _backfill_change(ctx, change)


# -- watermarks -----------------------------------------------------------------------------


def cmd_watermarks(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_watermarks(conn, ctx.principal, tenant=a.tenant)
    if a.json:
        print_json({"watermarks": rows})
        return 0
    table(
        [{**r, "source": r["source"] or "-", "holes": len(r["holes"])} for r in rows],
        ("tenant", "source", "job_type", "watermark", "lag_s", "holes"),
    )
    return 0


# -- parsers --------------------------------------------------------------------------------


def _reason(p: Any, *, ticket: bool = False) -> None:
    p.add_argument("--reason", help="why, for the audit log (at most 256 characters; required)")
    if ticket:
        p.add_argument("--ticket", help="change or incident ticket (at most 128 characters; required)")
    add_json(p)


def _named(p: Any) -> None:
    p.add_argument("name", help="schedule name")
    add_tenant(p, required=True, what=" of the schedule")


def _what(p: Any) -> None:
    p.add_argument("--type", help="job type it fires")
    p.add_argument("--payload", help="the job's payload, a JSON object (default {})")
    p.add_argument("--source", help="the source the job reads (its limits and circuit apply)")
    p.add_argument("--run-file", help="a run file, as `orch runs submit --file` reads: fires one run")


def register(sub: Any) -> None:
    s = sub.add_parser("schedules", help="cron and interval schedules that fire jobs or runs").add_subparsers(
        dest="schedules_command", required=True
    )
    ad = s.add_parser("add", help="add a schedule (orch:operate)")
    add_tenant(ad, required=True, what=" the schedule belongs to")
    ad.add_argument("--name", required=True, help="its name, unique in the tenant")
    ad.add_argument("--cron", help='5-field cron expression or a macro (@hourly, @daily, ...), e.g. "*/15 * * * *"')
    ad.add_argument("--every", help="or a fixed interval, e.g. 30s, 15m, 1h")
    ad.add_argument("--timezone", default="UTC", help="IANA time zone the cron fields are read in (default UTC)")
    _what(ad)
    ad.add_argument(
        "--overlap",
        default="skip",
        choices=[o.value for o in sched.Overlap],
        help="when the previous firing is still running (default skip)",
    )
    ad.add_argument(
        "--catchup",
        default="latest",
        choices=[c.value for c in sched.Catchup],
        help="what late ticks do after downtime or a pause (default latest)",
    )
    ad.add_argument("--catchup-window", default="24h", help="how far back catch-up reaches (default 24h)")
    ad.add_argument(
        "--max-catchup",
        type=to_int,
        default=sched.DEFAULT_MAX_CATCHUP,
        help=f"most late ticks one catch-up fires (default {sched.DEFAULT_MAX_CATCHUP})",
    )
    ad.add_argument("--start", help="first instant it may tick (ISO 8601; in the past: downtime, caught up)")
    ad.add_argument("--end", help="it never ticks at or after this (ISO 8601)")
    _reason(ad)
    ad.set_defaults(fn=cmd_add)

    ls = s.add_parser("list", help="schedules")
    add_tenant(ls)
    add_limit(ls, 1000)
    add_json(ls)
    ls.set_defaults(fn=cmd_list)

    sh = s.add_parser("show", help="a schedule, its next fire times and recent ticks")
    _named(sh)
    add_limit(sh, 50)
    add_json(sh)
    sh.set_defaults(fn=cmd_show)

    for name, fn, text in (
        ("pause", cmd_pause, "ticks from now on are recorded paused (orch:operate)"),
        ("remove", cmd_remove, "stop and remove a schedule; its ticks stay on record (orch:operate)"),
        ("trigger", cmd_trigger, "fire once now (orch:operate)"),
    ):
        p = s.add_parser(name, help=text)
        _named(p)
        _reason(p)
        p.set_defaults(fn=fn)
    rs = s.add_parser("resume", help="tick again; paused ticks fire only with --catchup (orch:operate)")
    _named(rs)
    rs.add_argument("--catchup", action="store_true", help="put the ticks passed while paused through catch-up")
    _reason(rs)
    rs.set_defaults(fn=cmd_resume)
    bm = s.add_parser("backfill-missed", help="turn a schedule's missed ticks into a backfill (orch:backfill)")
    _named(bm)
    bm.add_argument("--max-active", type=to_int, default=2, help="windows running at once (default 2)")
    bm.add_argument("--pause-above", type=to_int, default=1000, help="pause while live ready jobs exceed this")
    bm.add_argument("--dry-run", action="store_true", help="print what would run; write nothing")
    _reason(bm, ticket=True)
    bm.set_defaults(fn=cmd_backfill_missed)

    b = sub.add_parser("backfill", help="re-run windows of event time, below live work").add_subparsers(
        dest="backfill_command", required=True
    )
    cr = b.add_parser("create", help="plan and start a backfill (orch:backfill)")
    add_tenant(cr, required=True, what=" of the backfill")
    _what(cr)
    cr.add_argument("--from", dest="from_", required=True, help="start of the range (ISO 8601, inclusive)")
    cr.add_argument("--to", required=True, help="end of the range (ISO 8601, exclusive)")
    cr.add_argument("--window", default="1h", help="window length, dividing the range (default 1h)")
    cr.add_argument(
        "--reprocess",
        default="missing",
        choices=("missing", "failed", "all"),
        help="missing: skip windows done or failed before; failed: re-run failed ones too; all: everything",
    )
    cr.add_argument("--max-active", type=to_int, default=2, help="windows running at once (default 2)")
    cr.add_argument(
        "--pause-above",
        type=to_int,
        default=1000,
        help="pause while the tenant's live ready jobs exceed this; resume below half (default 1000)",
    )
    cr.add_argument("--dry-run", action="store_true", help="print what would run and what is skipped; write nothing")
    cr.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when not a terminal")
    _reason(cr, ticket=True)
    cr.set_defaults(fn=cmd_backfill_create)

    bl = b.add_parser("list", help="backfills, newest first")
    add_tenant(bl)
    bl.add_argument("--state", help="only backfills in this state")
    add_limit(bl, 100)
    add_json(bl)
    bl.set_defaults(fn=cmd_backfill_list)

    bs = b.add_parser("show", help="a backfill, its windows by state and an ETA")
    bs.add_argument("id", type=to_int, help="backfill id")
    add_json(bs)
    bs.set_defaults(fn=cmd_backfill_show)
    for name, fn, text in (
        ("pause", cmd_backfill_pause, "start no new window until resumed (orch:backfill)"),
        ("resume", cmd_backfill_resume, "start windows again (orch:backfill)"),
    ):
        p = b.add_parser(name, help=text)
        p.add_argument("id", type=to_int, help="backfill id")
        _reason(p)
        p.set_defaults(fn=fn)
    bc = b.add_parser("cancel", help="cancel the planned windows (orch:backfill)")
    bc.add_argument("id", type=to_int, help="backfill id")
    bc.add_argument("--terminate-running", action="store_true", help="cancel the running windows' jobs too")
    _reason(bc)
    bc.set_defaults(fn=cmd_backfill_cancel)

    w = sub.add_parser("watermarks", help="event-time watermarks").add_subparsers(
        dest="watermarks_command", required=True
    )
    wl = w.add_parser("list", help="watermarks with their lag and holes")
    add_tenant(wl)
    add_json(wl)
    wl.set_defaults(fn=cmd_watermarks)
