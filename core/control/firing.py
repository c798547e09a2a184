"""Firing schedules: the leader scheduler's pass takes due schedules from their index, in
batches, decides each due tick (catch-up, then overlap), records every tick as a row keyed
(schedule, scheduled_for) and creates the jobs or runs of the fired ones with their
event-time windows, all in one transaction per batch. Doorbells ring after commit;
cancel_other cancels the previous firing after commit too.

Also here: buffered ticks firing once their schedule's previous firing ends, a manual
trigger, and the catch-up of a resumed schedule (core.control.schedules calls them).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.control import common
from core.control.jobs import submit_in
from core.control.runs import submit_run_in
from core.control.targets import Target
from core.domain import errors
from core.domain import schedules as sched
from core.domain.auth import Principal
from core.domain.schedules import Catchup, Overlap, OverlapAction, TickStatus
from core.ledger import schedules as ledger
from core.ledger import windows as ledger_windows

log = logging.getLogger("core.control.firing")
EPS = dt.timedelta(microseconds=1)


def trigger_of(row: Any) -> sched.Trigger:
    """The trigger of a schedule row (parsed once per process for each distinct trigger)."""
    return _trigger(row["cron"], row["every_s"], row["timezone"], row["start_at"])


@functools.lru_cache(maxsize=4096)
def _trigger(cron: str | None, every_s: int | None, tz: str, start_at: dt.datetime | None) -> sched.Trigger:
    every = None if every_s is None else dt.timedelta(seconds=int(every_s))
    return sched.Trigger.of(cron_expr=cron, every=every, tz=tz, anchor=start_at)


def next_fire(trigger: sched.Trigger, after: dt.datetime, end_at: dt.datetime | None) -> dt.datetime | None:
    """The first tick after `after`, or None once the schedule's end is reached."""
    try:
        t = trigger.next_after(after)
    except errors.InvalidInput:
        return None
    return None if end_at is not None and t >= end_at else t


@dataclass
class Item:
    """A tick that fires."""

    row: Any
    scheduled_for: dt.datetime
    interval_start: dt.datetime
    manual: bool = False


@dataclass
class Outcome:
    fired: list[ledger.Fired] = field(default_factory=list)
    failed: list[tuple[int, dt.datetime, str, str | None]] = field(default_factory=list)
    to_ring: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class PassResult:
    fired: int = 0
    recorded: int = 0
    schedules: int = 0
    full: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    to_ring: list[tuple[int, str]] = field(default_factory=list)
    #: (job id, run id) of previous firings that cancel_other replaces.
    to_cancel: list[tuple[int | None, int | None, str, str]] = field(default_factory=list)


def fire_items(conn: sa.Connection, principal: Principal, items: Sequence[Item], *, max_jobs: int) -> Outcome:
    """Create the windows and the jobs or runs of ticks that fire, in the caller's
    transaction. A tick whose work cannot be created (its tenant at a refusing backlog
    limit, an unknown job type, a source removed) is recorded skipped with the reason."""
    out = Outcome()
    if not items:
        return out
    windows = ledger_windows.insert_windows(
        conn,
        [
            ledger_windows.NewWindow(
                it.row["stream_id"], it.row["tenant_id"], it.interval_start, it.scheduled_for, it.row["id"]
            )
            for it in items
        ],
        state="running",
    )
    window_of = [windows.get((it.row["id"], it.row["stream_id"], it.interval_start)) for it in items]
    jobs = [n for n, it in enumerate(items) if it.row["target_kind"] == "job"]
    runs = [n for n, it in enumerate(items) if it.row["target_kind"] == "run"]
    work: list[tuple[int, int | None, int | None]] = []
    unused: list[int] = []
    # Jobs: one insert per tenant, each in a savepoint so one tenant's refusal skips only its
    # ticks; a failing group is retried tick by tick to find the one that fails.
    by_tenant: dict[str, list[int]] = {}
    for n in jobs:
        by_tenant.setdefault(items[n].row["tenant"], []).append(n)
    for group in by_tenant.values():
        for part in _fire_jobs(conn, principal, items, group, window_of, out):
            _fire_jobs(conn, principal, items, part, window_of, out, last=True)
    for n in runs:
        it = items[n]
        target = Target.load("run", it.row["target"])
        try:
            with conn.begin_nested():
                spec = target.run_spec(it.row["tenant"], max_jobs=max_jobs)
                result, ring = submit_run_in(
                    conn, principal, spec, reason=_reason(it), window_id=window_of[n], audit=False
                )
        except errors.OrchError as exc:
            out.failed.append((it.row["id"], it.scheduled_for, TickStatus.SKIPPED.value, f"not fired: {exc}"))
            continue
        out.to_ring.extend(ring)
        out.fired.append(
            ledger.Fired(it.row["id"], it.scheduled_for, None, result.run_id, window_of[n], _note(window_of[n]))
        )
    by_window = {f.window_id: f for f in out.fired if f.window_id is not None}
    for w in window_of:
        if w is None:
            continue
        f = by_window.get(w)
        if f is None:
            unused.append(w)
        else:
            work.append((w, f.job_id, f.run_id))
    ledger_windows.set_window_work(conn, work)
    ledger_windows.delete_windows(conn, unused)
    return out


def _note(window_id: int | None) -> str | None:
    """A fired tick without a window: another schedule or a backfill of the same stream
    (tenant, source, job type and payload) has that span in flight."""
    return None if window_id is not None else "no window recorded: the same stream has this span in flight"


def _reason(it: Item) -> str:
    kind = "manual trigger" if it.manual else "tick"
    return f"schedule {it.row['name']}: {kind} {it.scheduled_for.isoformat()}"


def _fire_jobs(
    conn: sa.Connection,
    principal: Principal,
    items: Sequence[Item],
    group: Sequence[int],
    window_of: Sequence[int | None],
    out: Outcome,
    *,
    last: bool = False,
) -> list[list[int]]:
    """Fire a group of job ticks in a savepoint; returns the single-tick groups to retry when
    the group failed (none when it succeeded or was a single tick already)."""
    specs = [
        Target.load("job", items[n].row["target"]).job_spec(
            items[n].row["tenant"], correlation_id=f"schedule:{items[n].row['id']}"
        )
        for n in group
    ]
    try:
        with conn.begin_nested():
            result, ring = submit_in(
                conn,
                principal,
                specs,
                reason=_reason(items[group[0]]) if len(group) == 1 else f"{len(group)} schedule ticks",
                window_ids=[window_of[n] for n in group],
                audit=False,
            )
    except errors.OrchError as exc:
        if len(group) > 1 and not last:
            return [[n] for n in group]
        for n in group:
            out.failed.append(
                (items[n].row["id"], items[n].scheduled_for, TickStatus.SKIPPED.value, f"not fired: {exc}")
            )
        return []
    out.to_ring.extend(ring)
    for n, job_id in zip(group, result.job_ids, strict=True):
        it = items[n]
        out.fired.append(ledger.Fired(it.row["id"], it.scheduled_for, job_id, None, window_of[n], _note(window_of[n])))
    return []


@dataclass
class Plan:
    """What a schedule's due ticks do: the rows to record, the ticks that fire, the change
    to its buffer, and the previous firing to cancel (cancel_other)."""

    ticks: list[ledger.NewTick] = field(default_factory=list)
    fire: list[Item] = field(default_factory=list)
    buffered_delta: int = 0
    cancel_previous: bool = False


def plan(row: Any, trigger: sched.Trigger, due: Sequence[dt.datetime], now: dt.datetime, *, catchup: bool) -> Plan:
    """Decide each due tick of one schedule (oldest first): paused, missed (catch-up), then
    fired, skipped or buffered (overlap). `catchup=False` treats every tick as on time."""
    p = Plan()
    sid = row["id"]
    if row["paused"]:
        p.ticks = [ledger.NewTick(sid, t, trigger.prev_before(t), TickStatus.PAUSED.value) for t in due]
        return p
    if catchup:
        decisions = sched.catch_up(
            due,
            now,
            Catchup(row["catchup"]),
            window=dt.timedelta(seconds=int(row["catchup_window_s"])),
            max_runs=int(row["max_catchup"]),
        )
    else:
        decisions = [sched.LateTick(t, True) for t in due]
    live = bool(row.get("previous_live"))
    buffered = int(row["buffered"])
    overlap = Overlap(row["overlap"])
    for d in decisions:
        start = trigger.prev_before(d.scheduled_for)
        if not d.fire:
            p.ticks.append(ledger.NewTick(sid, d.scheduled_for, start, TickStatus.MISSED.value, note="late"))
            continue
        action = sched.on_overlap(overlap, previous_live=live, buffered=buffered)
        if action is OverlapAction.CANCEL_AND_FIRE and p.fire:
            # The firing this tick replaces is one of this pass's own: it does not start.
            older = p.fire.pop()
            p.ticks = [
                ledger.NewTick(sid, t.scheduled_for, t.interval_start, TickStatus.SKIPPED.value, note="superseded")
                if t.scheduled_for == older.scheduled_for
                else t
                for t in p.ticks
            ]
            action = OverlapAction.FIRE
        elif action is OverlapAction.CANCEL_AND_FIRE:
            p.cancel_previous = True
            action = OverlapAction.FIRE
        if action is OverlapAction.FIRE:
            p.ticks.append(ledger.NewTick(sid, d.scheduled_for, start, TickStatus.FIRED.value))
            p.fire.append(Item(row, d.scheduled_for, start))
            live = True
        elif action is OverlapAction.BUFFER:
            p.ticks.append(ledger.NewTick(sid, d.scheduled_for, start, TickStatus.BUFFERED.value))
            buffered += 1
            p.buffered_delta += 1
        else:
            note = "previous firing still running" if live else "buffer full"
            p.ticks.append(ledger.NewTick(sid, d.scheduled_for, start, TickStatus.SKIPPED.value, note=note))
    return p


def _record(
    conn: sa.Connection,
    principal: Principal,
    plans: Sequence[tuple[Any, Plan]],
    result: PassResult,
    *,
    max_jobs: int,
    insert: bool = True,
) -> dict[int, ledger.Fired]:
    """Write the plans' tick rows, fire what fires, count; returns the last firing per schedule."""
    all_ticks = [t for _, p in plans for t in p.ticks]
    inserted = ledger.insert_ticks(conn, all_ticks) if insert else {(t.schedule_id, t.scheduled_for) for t in all_ticks}
    items = [it for _, p in plans for it in p.fire if (it.row["id"], it.scheduled_for) in inserted]
    out = fire_items(conn, principal, items, max_jobs=max_jobs)
    ledger.set_ticks_fired(conn, out.fired)
    ledger.set_tick_status(conn, out.failed)
    failed = {(f[0], f[1]) for f in out.failed}
    counts: Counter[tuple[int, str]] = Counter()
    tenant_of = {row["id"]: row["tenant_id"] for row, _ in plans}
    for t in all_ticks:
        if (t.schedule_id, t.scheduled_for) not in inserted:
            continue
        status = TickStatus.SKIPPED.value if (t.schedule_id, t.scheduled_for) in failed else t.status
        counts[(tenant_of[t.schedule_id], status)] += 1
        result.counts[status] += 1
    ledger.count_ticks(conn, counts)
    result.recorded += sum(counts.values())
    result.fired += len(out.fired)
    result.to_ring.extend(out.to_ring)
    last: dict[int, ledger.Fired] = {}
    for f in out.fired:
        if f.schedule_id not in last or f.scheduled_for > last[f.schedule_id].scheduled_for:
            last[f.schedule_id] = f
    return last


def _due_ticks(trigger: sched.Trigger, row: Any, at: dt.datetime) -> list[dt.datetime]:
    """The ticks from the schedule's next fire time up to `at`. After downtime so long that
    they are more than MAX_LATE_TICKS, the newest MAX_LATE_TICKS of them (older ones could
    never fire under any catch-up policy; they are not recorded one by one)."""
    after = row["next_fire_at"] - EPS
    due = trigger.ticks(after, at, limit=sched.MAX_LATE_TICKS)
    if len(due) < sched.MAX_LATE_TICKS:
        return due
    newest: list[dt.datetime] = []
    t = at + EPS
    while len(newest) < sched.MAX_LATE_TICKS:
        t = trigger.prev_before(t)
        if t <= after:
            break
        newest.append(t)
    log.warning(
        "schedule %d: more than %d ticks since %s; recording the newest %d (from %s)",
        row["id"],
        sched.MAX_LATE_TICKS,
        row["next_fire_at"].isoformat(),
        len(newest),
        newest[-1].isoformat() if newest else "-",
    )
    return newest[::-1]


def fire_due(
    engine: sa.Engine, principal: Principal, *, now: dt.datetime | None = None, batch: int, max_jobs: int
) -> PassResult:
    """Fire every due schedule, `batch` schedules per transaction, until none is due."""
    result = PassResult()
    while True:
        at = now or dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            rows = ledger.lock_due_schedules(conn, at, batch)
            plans: list[tuple[Any, Plan]] = []
            after: list[ledger.ScheduleAfter] = []
            for row in rows:
                try:
                    trigger = trigger_of(row)
                except errors.InvalidInput as exc:  # checked when stored; a zone may vanish from tzdata
                    log.warning("schedule %d cannot tick: %s", row["id"], exc)
                    after.append(ledger.ScheduleAfter(row["id"], None, None, None, None, 0))
                    continue
                end_at = row["end_at"]
                due = _due_ticks(trigger, row, at)
                if end_at is not None:
                    due = [t for t in due if t < end_at]
                p = plan(row, trigger, due, at, catchup=True)
                plans.append((row, p))
                if p.cancel_previous:
                    result.to_cancel.append((row["last_job_id"], row["last_run_id"], row["tenant"], row["name"]))
                after.append(
                    ledger.ScheduleAfter(
                        row["id"],
                        next_fire(trigger, max([at, *due]), end_at),
                        due[-1] if due else None,
                        None,
                        None,
                        p.buffered_delta,
                    )
                )
            last = _record(conn, principal, plans, result, max_jobs=max_jobs)
            after = [
                a
                if a.id not in last
                else ledger.ScheduleAfter(
                    a.id, a.next_fire_at, a.last_tick_at, last[a.id].job_id, last[a.id].run_id, a.buffered_delta
                )
                for a in after
            ]
            ledger.update_schedules_after_pass(conn, after)
        result.schedules += len(rows)
        if len(rows) < batch:
            return result
        result.full = True


def drain_buffers(engine: sa.Engine, principal: Principal, *, batch: int, max_jobs: int) -> PassResult:
    """Schedules whose previous firing ended fire their oldest buffered tick."""
    result = PassResult()
    with engine.begin() as conn:
        rows = ledger.lock_buffered_schedules(conn, batch)
        if not rows:
            return result
        oldest = ledger.oldest_buffered(conn, [r["id"] for r in rows])
        plans = []
        for row in rows:
            tick = oldest.get(row["id"])
            if tick is None:
                continue
            p = Plan(fire=[Item(row, tick["scheduled_for"], tick["interval_start"])], buffered_delta=-1)
            p.ticks = [ledger.NewTick(row["id"], tick["scheduled_for"], tick["interval_start"], TickStatus.FIRED.value)]
            plans.append((row, p))
        last = _record(conn, principal, plans, result, max_jobs=max_jobs, insert=False)
        ledger.update_schedules_after_pass(
            conn,
            [
                ledger.ScheduleAfter(
                    row["id"],
                    row["next_fire_at"],
                    None,
                    last[row["id"]].job_id if row["id"] in last else None,
                    last[row["id"]].run_id if row["id"] in last else None,
                    -1 if row["id"] in oldest else 0,
                )
                for row, _ in plans
            ],
        )
    return result


def fire_now(conn: sa.Connection, principal: Principal, row: Any, *, max_jobs: int) -> tuple[ledger.Fired, PassResult]:
    """A manual trigger: one tick at this instant that fires whatever the overlap policy
    says. Raises InvalidInput when its work cannot be created."""
    trigger = trigger_of(row)
    now = dt.datetime.now(dt.UTC)
    p = Plan(fire=[Item(row, now, trigger.prev_before(now), manual=True)])
    p.ticks = [ledger.NewTick(row["id"], now, p.fire[0].interval_start, TickStatus.FIRED.value, manual=True)]
    result = PassResult()
    last = _record(conn, principal, [(row, p)], result, max_jobs=max_jobs)
    if row["id"] not in last:
        raise errors.InvalidInput(f"schedule {row['name']!r} could not fire: see `orch schedules show` for the tick")
    f = last[row["id"]]
    ledger.update_schedules_after_pass(
        conn, [ledger.ScheduleAfter(row["id"], row["next_fire_at"], None, f.job_id, f.run_id, 0)]
    )
    return f, result


def record_paused(conn: sa.Connection, row: Any) -> None:
    """Before a paused schedule resumes: the ticks that fell due while no pass recorded them
    (the scheduler was down, or had not run yet) are recorded `paused` too, and its next fire
    time moves past now, so resuming fires nothing by itself."""
    if row["next_fire_at"] is None:
        return
    trigger = trigger_of(row)
    now = dt.datetime.now(dt.UTC)
    due = [t for t in _due_ticks(trigger, row, now) if row["end_at"] is None or t < row["end_at"]]
    ledger.insert_ticks(
        conn, [ledger.NewTick(row["id"], t, trigger.prev_before(t), TickStatus.PAUSED.value) for t in due]
    )
    if due:
        counts: Counter[tuple[int, str]] = Counter({(row["tenant_id"], TickStatus.PAUSED.value): len(due)})
        ledger.count_ticks(conn, counts)
    ledger.set_schedule_next(conn, row["id"], next_fire(trigger, max([now, *due]), row["end_at"]))


def catch_up_paused(
    conn: sa.Connection, principal: Principal, row: Any, ticks: Iterable[Any], *, max_jobs: int
) -> PassResult:
    """Resume --catchup: the ticks recorded `paused` go through the catch-up and overlap
    policies as if the pause had been downtime: each becomes fired (with its job or run),
    skipped, buffered or missed."""
    trigger = trigger_of(row)
    now = dt.datetime.now(dt.UTC)
    due = [t["scheduled_for"] for t in ticks]
    live_row = dict(row, paused=False)
    p = plan(live_row, trigger, due, now, catchup=True)
    result = PassResult()
    fired = [t for t in p.ticks if t.status == TickStatus.FIRED]
    ledger.set_tick_status(
        conn, [(t.schedule_id, t.scheduled_for, t.status, t.note) for t in p.ticks if t.status != TickStatus.FIRED]
    )
    last = _record(
        conn, principal, [(live_row, Plan(ticks=fired, fire=p.fire))], result, max_jobs=max_jobs, insert=False
    )
    if p.cancel_previous:
        result.to_cancel.append((row["last_job_id"], row["last_run_id"], row["tenant"], row["name"]))
    f = last.get(row["id"])
    ledger.update_schedules_after_pass(
        conn,
        [
            ledger.ScheduleAfter(
                row["id"], row["next_fire_at"], None, f.job_id if f else None, f.run_id if f else None, p.buffered_delta
            )
        ],
    )
    result.counts.update(t.status for t in p.ticks if t.status != TickStatus.FIRED)
    return result


def ring_and_cancel(engine: sa.Engine, principal: Principal, doorbell: common.Doorbell, result: PassResult) -> None:
    """After commit: ring the fired jobs, cancel what cancel_other replaced."""
    common.ring(doorbell, result.to_ring)
    if not result.to_cancel:
        return
    from core.control.jobs import cancel
    from core.control.runs import cancel_run

    for job_id, run_id, tenant, name in result.to_cancel:
        reason = f"schedule {name}: cancel_other, a newer tick fired"
        try:
            if run_id is not None:
                cancel_run(engine, principal, run_id, reason=reason)
            elif job_id is not None:
                cancel(engine, principal, job_id, reason=reason, doorbell=doorbell)
        except errors.OrchError as exc:  # it ended in the meantime
            log.info("schedule %s of %s: previous firing not canceled: %s", name, tenant, exc)
