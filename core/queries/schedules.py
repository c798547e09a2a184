"""Reads of schedules (with their next fire times and recent ticks), backfills (with window
counts and an ETA) and watermarks (with lag and holes)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from core.domain import cron, errors, redaction
from core.domain import schedules as sched
from core.domain.auth import Principal
from core.ledger import windows as ledger_windows
from core.ledger.reads import schedules as reads
from core.queries.common import db_now, plain, visible

MAX_HOLES = 100


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _trigger(row: Any) -> sched.Trigger:
    every = None if row["every_s"] is None else dt.timedelta(seconds=int(row["every_s"]))
    return sched.Trigger.of(cron_expr=row["cron"], every=every, tz=row["timezone"], anchor=row["start_at"])


def _describe(row: Any) -> str:
    try:
        return _trigger(row).describe()
    except errors.InvalidInput:
        return str(row["cron"] or row["every_s"])


def list_schedules(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Schedules by tenant and name, each with its trigger described and its next fire time."""
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    out = []
    for r in reads.schedules(conn, visible(principal, tenant), limit=limit):
        d = plain(r)
        d["trigger"] = _describe(r)
        d["target"] = redaction.redact(d["target"])
        out.append(d)
    return out


def next_fires(row: Any, n: int, now: dt.datetime) -> list[dict[str, str]]:
    """The next `n` fire times after now (or after the pending tick), in UTC and local time."""
    out: list[dict[str, str]] = []
    if row["next_fire_at"] is None:
        return out
    try:
        trigger = _trigger(row)
        zone = cron.zone(row["timezone"])
    except errors.InvalidInput:
        return out
    t = row["next_fire_at"]
    if t <= now:
        t = trigger.next_after(now)
    while len(out) < n and (row["end_at"] is None or t < row["end_at"]):
        out.append({"utc": _iso(t) or "", "local": t.astimezone(zone).isoformat()})
        t = trigger.next_after(t)
    return out


def get_schedule(
    conn: sa.Connection, principal: Principal, tenant: str, name: str, *, ticks: int = 50, next_n: int = 5
) -> dict[str, Any]:
    """A schedule, its next fire times and `ticks`: its recent ticks, newest first, each with
    scheduled_for, status and the job or run it created. Raises NotFound."""
    row = reads.schedule(conn, visible(principal, tenant), name)
    if row is None:
        raise errors.NotFound(f"tenant {tenant!r} has no schedule {name!r}; list them with `orch schedules list`")
    now = db_now(conn)
    d = plain(row)
    d["trigger"] = _describe(row)
    d["target"] = redaction.redact(d["target"])
    d["next_fires"] = next_fires(row, next_n, now)
    d["tick_counts"] = reads.tick_counts(conn, int(row["id"]))
    d["ticks"] = [plain(t) for t in reads.ticks(conn, int(row["id"]), ticks)]
    return d


def schedule_tick_counters(conn: sa.Connection) -> list[dict[str, Any]]:
    """Ticks by tenant and status since the ledger began (the exporter's counter)."""
    return [plain(r) for r in reads.tick_counters(conn)]


def list_backfills(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Backfills newest first, each with its windows by state."""
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    rows = reads.backfills(conn, visible(principal, tenant), state=state, limit=limit)
    counts = reads.backfills_windows(conn, [int(r["id"]) for r in rows])
    return [{**plain(r), "target": redaction.redact(r["target"]), "windows": counts[int(r["id"])]} for r in rows]


def get_backfill(conn: sa.Connection, principal: Principal, backfill_id: int, *, windows: int = 0) -> dict[str, Any]:
    """{"backfill": {...}, "windows": {state: count}, "eta_s": seconds or None}; with
    `windows` > 0 also "window_rows", the first windows in event-time order. Raises NotFound."""
    row = reads.backfill(conn, visible(principal, None), backfill_id)
    if row is None:
        raise errors.NotFound(f"no backfill {backfill_id}; list them with `orch backfill list`")
    counts = reads.backfills_windows(conn, [backfill_id])[backfill_id]
    left = counts.get("planned", 0) + counts.get("running", 0)
    eta: float | None = None
    pace = reads.backfill_pace(conn, backfill_id)
    if left == 0:
        eta = 0.0
    elif pace is not None and int(pace["n"] or 0) >= 1 and pace["span_s"]:
        eta = round(float(pace["span_s"]) / int(pace["n"]) * left, 1)
    shown = plain(row)
    shown["target"] = redaction.redact(shown["target"])
    out: dict[str, Any] = {"backfill": shown, "windows": counts, "eta_s": eta}
    if windows:
        out["window_rows"] = [plain(w) for w in reads.backfill_window_rows(conn, backfill_id, windows)]
    return out


def list_watermarks(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, holes: bool = True
) -> list[dict[str, Any]]:
    """{"tenant", "source", "job_type", "watermark", "lag_s", "holes": [[start, end], ...]}
    per watermark. A windowed stream's watermark is the end of the gap-free prefix of its
    done windows (the least over its live payloads: those a schedule fires; over all when
    none is), otherwise what its handlers reported. `holes=False` skips reading the holes
    (the exporter needs only the lag)."""
    vis = visible(principal, tenant)
    rows = [
        r
        for r in ledger_windows.watermark_rows(conn, tenant, 10_000)
        if vis.tenants is None or r["tenant"] in vis.tenants
    ]
    now = db_now(conn)
    beyond: dict[int, list[Any]] = {}
    windowed = [int(r["id"]) for r in rows if int(r["streams"] or 0) > 0]
    if windowed and holes:
        for b in ledger_windows.stream_done_beyond(conn, windowed, 100_000):
            beyond.setdefault(int(b["stream_id"]), []).append(b)
    stream_of: dict[int, list[int]] = {}
    if windowed:
        q = sa.text("SELECT id, watermark_id FROM streams WHERE watermark_id = ANY(:ids)")
        for sid, wid in conn.execute(q, {"ids": windowed}):
            stream_of.setdefault(int(wid), []).append(int(sid))
    out = []
    for r in rows:
        # A windowed stream whose first window has not ended yet knows nothing: the reported
        # watermark (if any) stands until then.
        mark = r["windowed"] if r["windowed"] is not None else r["reported"]
        gaps: list[list[str]] = []
        for sid in stream_of.get(int(r["id"]), []):
            gaps.extend(_holes(beyond.get(sid, [])))
        gaps.sort()
        out.append(
            {
                "tenant": r["tenant"],
                "source": r["source"],
                "job_type": r["job_type"],
                "watermark": _iso(mark),
                "lag_s": None if mark is None else round((now - mark).total_seconds(), 3),
                "holes": gaps[:MAX_HOLES],
                "reported": _iso(r["reported"]),
                "windowed": _iso(r["windowed"]) if int(r["streams"] or 0) > 0 else None,
                "moved_at": _iso(r["moved_at"]),
                "moved_by": r["moved_by"],
            }
        )
    return out


def _holes(done_beyond: list[Any]) -> list[list[str]]:
    """Gaps between a stream's prefix end and the succeeded windows past it (ordered by start)."""
    if not done_beyond:
        return []
    out: list[list[str]] = []
    cur = done_beyond[0]["until"]
    for w in done_beyond:
        if w["span_start"] > cur:
            out.append([_iso(cur) or "", _iso(w["span_start"]) or ""])
        cur = max(cur, w["span_end"])
    return out


def watermark_series(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, since_s: float = 86400
) -> list[dict[str, Any]]:
    """Watermark lag samples (one a minute) over the last `since_s` seconds, oldest first."""
    return [plain(r) for r in reads.watermark_series(conn, visible(principal, tenant), since_s=since_s)]
