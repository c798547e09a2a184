"""Backfills: windows of event time over a range, planned against what is done (a union of
intervals) and in flight (the windows table's exclusion constraint), run below live
priority, at most max_active at once, paused on their own while the tenant's live backlog is
above a limit. Creating, pausing, resuming and canceling need orch:backfill, a reason and
(to create) a ticket; all are audited. The scheduler's pass moves them on (pump_backfills).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.control import common
from core.control.common import Doorbell, append_audit
from core.control.jobs import submit_in
from core.control.runs import submit_run_in
from core.control.targets import Target, check_target
from core.domain import errors, redaction
from core.domain import schedules as sched
from core.domain.auth import Principal, Scope
from core.ledger import jobs as ledger_jobs
from core.ledger import schedules as ledger_sched
from core.ledger import windows as ledger
from core.ledger.windows import BACKFILL_PRIORITY

log = logging.getLogger("core.control.backfills")

MAX_WINDOWS = 100_000
REPROCESS = ("missing", "failed", "all")
CHUNK = 5_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillSpec:
    tenant: str
    target: Target
    start: dt.datetime
    end: dt.datetime
    window: dt.timedelta | None = dt.timedelta(hours=1)
    reprocess: str = "missing"
    max_active: int = 2
    pause_above: int = 1000
    #: Explicit windows instead of start..end cut by window (backfill-missed).
    spans: Sequence[tuple[dt.datetime, dt.datetime]] | None = None
    schedule_id: int | None = None


@dataclass(frozen=True)
class BackfillPlan:
    backfill_id: int | None
    windows: int
    to_run: int
    skipped_done: int
    skipped_failed: int
    skipped_in_flight: int
    dry_run: bool
    reprocess: str
    #: The first windows with what happens to each: run, done, failed, in_flight.
    preview: list[tuple[dt.datetime, dt.datetime, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backfill_id": self.backfill_id,
            "windows": self.windows,
            "to_run": self.to_run,
            "skipped_done": self.skipped_done,
            "skipped_failed": self.skipped_failed,
            "skipped_in_flight": self.skipped_in_flight,
            "reprocess": self.reprocess,
            "dry_run": self.dry_run,
        }


def spans_of(start: dt.datetime, end: dt.datetime, window: dt.timedelta) -> list[tuple[dt.datetime, dt.datetime]]:
    """start..end cut into windows. Raises InvalidInput: a bad range, a window that does not
    divide it, too many windows."""
    if start.tzinfo is None or end.tzinfo is None:
        raise errors.InvalidInput("--from and --to must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    if start >= end:
        raise errors.InvalidInput(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    if window.total_seconds() < 1 or window.microseconds:
        raise errors.InvalidInput("--window must be a whole number of seconds, at least 1s")
    span = end - start
    n, rest = divmod(span, window)
    if rest:
        raise errors.InvalidInput(
            f"--window {sched.format_duration(window)} does not divide the range "
            f"{start.isoformat()} .. {end.isoformat()} ({sched.format_duration(span)}); "
            "pick a range that is a whole number of windows"
        )
    if n > MAX_WINDOWS:
        raise errors.InvalidInput(f"the range holds {n} windows; at most {MAX_WINDOWS} per backfill")
    return [(start + k * window, start + (k + 1) * window) for k in range(n)]


def create_backfill(
    engine: sa.Engine,
    principal: Principal,
    spec: BackfillSpec,
    *,
    reason: str | None,
    ticket: str | None,
    dry_run: bool = False,
    max_jobs: int = 10_000,
    progress: Progress | None = None,
) -> BackfillPlan:
    """Plan a backfill and (unless `dry_run`) store it with its windows. Under `missing`
    (default) a window covered by succeeded or failed windows of the stream is skipped,
    under `failed` only one covered by succeeded windows, under `all` none; a window that
    overlaps one in flight is always skipped. Raises ReasonRequired (no reason or ticket),
    InvalidInput, UnknownJobType, NotFound, Forbidden; nothing is written on error."""
    # A dry run writes nothing and is not audited: it needs no reason yet.
    if dry_run:
        common.check_reason(reason, ticket)
        why = reason or ""
    else:
        why = common.require_reason("backfill create", reason, ticket, ticket_required=True)
    common.check_tenant(spec.tenant)
    principal.require(Scope.BACKFILL, spec.tenant)
    if spec.reprocess not in REPROCESS:
        raise errors.InvalidInput(f"unknown --reprocess {spec.reprocess!r}; use one of {', '.join(REPROCESS)}")
    if not 1 <= spec.max_active <= 1000:
        raise errors.InvalidInput("--max-active must be between 1 and 1000")
    if spec.pause_above < 1:
        raise errors.InvalidInput("--pause-above must be at least 1")
    if spec.spans is not None:
        spans = list(spec.spans)
        if not spans:
            raise errors.InvalidInput("no windows to backfill")
        if len(spans) > MAX_WINDOWS:
            raise errors.InvalidInput(f"{len(spans)} windows; at most {MAX_WINDOWS} per backfill")
    else:
        spans = spans_of(spec.start, spec.end, spec.window or dt.timedelta(hours=1))
    now = dt.datetime.now(dt.UTC)
    if max(e for _, e in spans) > now:
        raise errors.InvalidInput("--to is in the future: a backfill covers windows that have ended")
    with engine.begin() as conn:
        source_id = check_target(conn, spec.target, spec.tenant, max_jobs=max_jobs)
        tenant_id = ledger_jobs.tenant_id(conn, spec.tenant)
        if tenant_id is None and not dry_run:
            tenant_id = common.tenant_id(conn, spec.tenant, create=True)
        job_type, digest = spec.target.stream_type(), spec.target.digest()
        stream_id: int | None
        if dry_run:
            found = (
                None
                if tenant_id is None
                else ledger_sched.find_stream(
                    conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type, digest=digest
                )
            )
            stream_id = None if found is None else int(found["id"])
        else:
            assert tenant_id is not None
            stream_id = ledger_sched.ensure_stream(
                conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type, digest=digest, origin=spans[0][0]
            )
        decisions: list[str] = []
        for k in range(0, len(spans), CHUNK):
            chunk = spans[k : k + CHUNK]
            for done, tried, busy in ledger.classify_windows(conn, stream_id, chunk):
                if done and spec.reprocess != "all":
                    decisions.append("done")
                elif tried and spec.reprocess == "missing":
                    decisions.append("failed")
                elif busy:
                    decisions.append("in_flight")
                else:
                    decisions.append("run")
            if progress is not None:
                progress(min(k + CHUNK, len(spans)), 2 * len(spans) if not dry_run else len(spans))
        wanted = [s for s, d in zip(spans, decisions, strict=True) if d == "run"]
        preview = [(s, e, d) for (s, e), d in list(zip(spans, decisions, strict=True))[:1000]]
        plan = BackfillPlan(
            backfill_id=None,
            windows=len(spans),
            to_run=len(wanted),
            skipped_done=decisions.count("done"),
            skipped_failed=decisions.count("failed"),
            skipped_in_flight=decisions.count("in_flight"),
            dry_run=dry_run,
            reprocess=spec.reprocess,
            preview=preview,
        )
        if dry_run:
            return plan
        assert tenant_id is not None and stream_id is not None
        window_s = None if spec.spans is not None or spec.window is None else int(spec.window.total_seconds())
        backfill_id = ledger.insert_backfill(
            conn,
            tenant_id=tenant_id,
            stream_id=stream_id,
            schedule_id=spec.schedule_id,
            target_kind=spec.target.kind,
            target=spec.target.doc(),
            range_start=min(s for s, _ in spans),
            range_end=max(e for _, e in spans),
            window_s=window_s,
            reprocess=spec.reprocess,
            max_active=spec.max_active,
            pause_above=spec.pause_above,
            skipped_done=plan.skipped_done + plan.skipped_failed,
            actor=principal.subject,
            reason=why,
            ticket=ticket,
        )
        inserted = 0
        for k in range(0, len(wanted), CHUNK):
            rows = [ledger.NewWindow(stream_id, tenant_id, s, e) for s, e in wanted[k : k + CHUNK]]
            # The exclusion constraint decides, not the classification above: a window taken
            # by a backfill committed since is not inserted.
            inserted += len(ledger.insert_windows(conn, rows, state="planned", backfill_id=backfill_id))
            if progress is not None:
                progress(len(spans) + min(k + CHUNK, len(wanted)), 2 * len(spans))
        in_flight = plan.skipped_in_flight + (len(wanted) - inserted)
        ledger.set_backfill_counts(conn, backfill_id, total=inserted, in_flight=in_flight)
        if spec.schedule_id is not None:
            ledger_sched.mark_ticks_backfilled(conn, spec.schedule_id, backfill_id, [e for _, e in spans])
        plan = BackfillPlan(
            backfill_id,
            len(spans),
            inserted,
            plan.skipped_done,
            plan.skipped_failed,
            in_flight,
            False,
            spec.reprocess,
            preview,
        )
        append_audit(
            conn,
            principal,
            Scope.BACKFILL,
            "backfill.create",
            f"backfill {backfill_id}",
            tenant=spec.tenant,
            reason=why,
            ticket=ticket,
            details={
                **plan.as_dict(),
                "target": redaction.redact(spec.target.doc()),
                "from": spans[0][0].isoformat(),
                "to": spans[-1][1].isoformat(),
            },
        )
    return plan


# -- operator actions ---------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillChange:
    backfill_id: int
    state: str
    action: str
    terminated: int = 0


def _locked(conn: sa.Connection, principal: Principal, backfill_id: int) -> Any:
    row = ledger.lock_backfill(conn, backfill_id)
    if row is None:
        raise errors.NotFound(f"no backfill {backfill_id}; list them with `orch backfill list`")
    principal.require(Scope.BACKFILL, row["tenant"])
    return row


def _audit(conn: sa.Connection, principal: Principal, row: Any, action: str, reason: str, **details: Any) -> None:
    append_audit(
        conn,
        principal,
        Scope.BACKFILL,
        f"backfill.{action}",
        f"backfill {row['id']}",
        tenant=row["tenant"],
        reason=reason,
        details=details,
    )


ENDED = ("succeeded", "failed", "canceled")


def pause_backfill(engine: sa.Engine, principal: Principal, backfill_id: int, *, reason: str | None) -> BackfillChange:
    """No new window starts until resumed (running ones finish). Raises ReasonRequired,
    NotFound, Forbidden, InvalidTransition (it has ended)."""
    why = common.require_reason("backfill pause", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, backfill_id)
        if row["state"] in ENDED:
            raise errors.InvalidTransition(f"backfill {backfill_id} is {row['state']}; it cannot be paused")
        ledger.set_backfill_state(
            conn, backfill_id, "paused", wait_reason=f"paused by {principal.subject}: {why}", operator_paused=True
        )
        _audit(conn, principal, row, "pause", why)
    return BackfillChange(backfill_id, "paused", "pause")


def resume_backfill(engine: sa.Engine, principal: Principal, backfill_id: int, *, reason: str | None) -> BackfillChange:
    why = common.require_reason("backfill resume", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, backfill_id)
        if row["state"] in ENDED:
            raise errors.InvalidTransition(f"backfill {backfill_id} is {row['state']}; it cannot be resumed")
        ledger.set_backfill_state(conn, backfill_id, "running", wait_reason=None, operator_paused=False)
        _audit(conn, principal, row, "resume", why)
    return BackfillChange(backfill_id, "running", "resume")


def cancel_backfill(
    engine: sa.Engine,
    principal: Principal,
    backfill_id: int,
    *,
    reason: str | None,
    terminate_running: bool = False,
    doorbell: Doorbell | None = None,
) -> BackfillChange:
    """Planned windows are canceled; running ones finish unless `terminate_running` (then
    their jobs or runs are canceled too)."""
    why = common.require_reason("backfill cancel", reason, None)
    with engine.begin() as conn:
        row = _locked(conn, principal, backfill_id)
        if row["state"] in ENDED:
            raise errors.InvalidTransition(f"backfill {backfill_id} is {row['state']}; it cannot be canceled")
        ledger.cancel_planned_windows(conn, backfill_id)
        running = ledger.running_window_work(conn, backfill_id) if terminate_running else []
        ledger.set_backfill_state(conn, backfill_id, "canceled", wait_reason=f"canceled: {why}")
        _audit(conn, principal, row, "cancel", why, terminate_running=terminate_running)
    from core.control.jobs import cancel
    from core.control.runs import cancel_run

    # orch:backfill on the tenant covers canceling the backfill's own windows' work, which
    # the job and run cancels would otherwise ask orch:operate for.
    acting = Principal(principal.subject, principal.scopes | {Scope.OPERATE}, frozenset({row["tenant"]}))
    terminated = 0
    for w in running:
        try:
            if w["run_id"] is not None:
                cancel_run(engine, acting, int(w["run_id"]), reason=f"backfill {backfill_id} canceled: {why}")
            elif w["job_id"] is not None:
                cancel(
                    engine,
                    acting,
                    int(w["job_id"]),
                    reason=f"backfill {backfill_id} canceled: {why}",
                    doorbell=doorbell,
                )
            terminated += 1
        except errors.OrchError as exc:  # it ended meanwhile
            log.info("backfill %d: window %d not canceled: %s", backfill_id, w["id"], exc)
    return BackfillChange(backfill_id, "canceled", "cancel", terminated)


# -- the scheduler's pass -----------------------------------------------------------------


@dataclass
class PumpResult:
    started: int = 0
    finished: int = 0
    #: Backfills running windows now: the scheduler passes more often while there are any,
    #: so a slot that frees is filled within a fraction of a second.
    active: int = 0
    to_ring: list[tuple[int, str]] = field(default_factory=list)


def pump_backfills(engine: sa.Engine, principal: Principal, *, batch: int, max_jobs: int) -> PumpResult:
    """Move every active backfill on: pause it while its tenant's live backlog is above its
    limit (resume below half of it), start planned windows into free slots, end it when
    every window has."""
    out = PumpResult()
    with engine.begin() as conn:
        for b in ledger.lock_active_backfills(conn, batch):
            if b["operator_paused"]:
                continue
            live = ledger.live_ready(conn, b["tenant_id"], cap=int(b["pause_above"]) + 1)
            limit = int(b["pause_above"])
            if b["state"] == "paused":
                if live >= limit / 2:
                    continue
            elif live > limit:
                ledger.set_backfill_state(
                    conn, b["id"], "paused", wait_reason=f"live backlog of {live}+ ready jobs is above {limit}"
                )
                continue
            counts = ledger.backfill_window_counts(conn, b["id"])
            running, planned = counts.get("running", 0), counts.get("planned", 0)
            if running == 0 and planned == 0:
                failed = counts.get("failed", 0) + counts.get("canceled", 0)
                state = "failed" if failed else "succeeded"
                ledger.set_backfill_state(
                    conn, b["id"], state, wait_reason=f"{failed} window(s) failed" if failed else None
                )
                out.finished += 1
                continue
            free = int(b["max_active"]) - running
            started = (
                _start(conn, principal, b, ledger.next_planned_windows(conn, b["id"], free), max_jobs, out)
                if (free > 0 and planned)
                else 0
            )
            out.active += 1
            busy = running + started >= int(b["max_active"])
            wait = f"{running + started} of max_active {b['max_active']} windows running" if busy else None
            if b["state"] != "running" or b["wait_reason"] != wait:
                ledger.set_backfill_state(conn, b["id"], "running", wait_reason=wait)
    return out


def _start(
    conn: sa.Connection, principal: Principal, b: Any, windows: Sequence[Any], max_jobs: int, out: PumpResult
) -> int:
    target = Target.load(b["target_kind"], b["target"])
    work: list[tuple[int, int | None, int | None]] = []
    failed: list[int] = []
    reason = f"backfill {b['id']}"
    for w in windows:
        try:
            with conn.begin_nested():
                if target.kind == "job":
                    spec = target.job_spec(b["tenant"], priority=BACKFILL_PRIORITY, correlation_id=reason)
                    result, ring = submit_in(conn, principal, [spec], reason=reason, window_ids=[w["id"]], audit=False)
                    work.append((int(w["id"]), result.job_ids[0], None))
                else:
                    run = target.run_spec(b["tenant"], max_jobs=max_jobs, priority=BACKFILL_PRIORITY)
                    rr, ring = submit_run_in(conn, principal, run, reason=reason, window_id=int(w["id"]), audit=False)
                    work.append((int(w["id"]), None, rr.run_id))
        except errors.Backpressure:
            break  # the tenant's backlog is full: try again next pass
        except errors.OrchError as exc:
            log.warning("backfill %d: window %s could not start: %s", b["id"], w["span_start"], exc)
            failed.append(int(w["id"]))
            continue
        out.to_ring.extend(ring)
    ledger.set_window_work(conn, work)
    ledger.fail_windows(conn, failed)
    out.started += len(work)
    return len(work)
