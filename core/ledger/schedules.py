"""Schedule statements: one function per statement of core/ledger/sql/statements/schedules.sql
(named alike). Every function takes a Connection and never commits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping


def _rows(conn: sa.Connection, name: str, params: Mapping[str, Any]) -> list[Row]:
    return list(conn.execute(stmt(name), dict(params)).mappings().all())


def ensure_stream(
    conn: sa.Connection,
    *,
    tenant_id: int,
    source_id: int | None,
    job_type: str,
    digest: str,
    origin: dt.datetime,
    live: bool = False,
) -> int:
    """The stream's id, created on first use; `live` (a schedule fires it) sticks once set."""
    params = {
        "tenant_id": tenant_id,
        "source_id": source_id,
        "job_type": job_type,
        "digest": digest,
        "origin": origin,
        "live": live,
    }
    row = conn.execute(stmt("ensure_stream"), params).one()
    return int(row[0])


def find_stream(
    conn: sa.Connection, *, tenant_id: int, source_id: int | None, job_type: str, digest: str
) -> Row | None:
    params = {"tenant_id": tenant_id, "source_id": source_id, "job_type": job_type, "digest": digest}
    return conn.execute(stmt("find_stream"), params).mappings().first()


def insert_schedule(conn: sa.Connection, **values: Any) -> int | None:
    """The new schedule's id; None when the tenant has a schedule of that name."""
    values = dict(values, target=json.dumps(values["target"], sort_keys=True))
    row = conn.execute(stmt("insert_schedule"), values).first()
    return None if row is None else int(row[0])


def lock_schedule(conn: sa.Connection, tenant: str, name: str) -> Row | None:
    return conn.execute(stmt("lock_schedule"), {"tenant": tenant, "name": name}).mappings().first()


def lock_due_schedules(conn: sa.Connection, now: dt.datetime, limit: int) -> list[Row]:
    return _rows(conn, "lock_due_schedules", {"now": now, "limit": limit})


def lock_buffered_schedules(conn: sa.Connection, limit: int) -> list[Row]:
    return _rows(conn, "lock_buffered_schedules", {"limit": limit})


def oldest_buffered(conn: sa.Connection, ids: Sequence[int]) -> dict[int, Row]:
    return {int(r["schedule_id"]): r for r in _rows(conn, "oldest_buffered", {"ids": list(ids)})}


@dataclass(frozen=True, slots=True)
class NewTick:
    schedule_id: int
    scheduled_for: dt.datetime
    interval_start: dt.datetime
    status: str
    manual: bool = False
    note: str | None = None


def insert_ticks(conn: sa.Connection, ticks: Sequence[NewTick]) -> set[tuple[int, dt.datetime]]:
    """Insert tick rows; returns the (schedule id, scheduled_for) of those inserted (a tick
    that exists already is left alone)."""
    if not ticks:
        return set()
    rows = conn.execute(
        stmt("insert_ticks"),
        {
            "schedule_id": [t.schedule_id for t in ticks],
            "scheduled_for": [t.scheduled_for for t in ticks],
            "interval_start": [t.interval_start for t in ticks],
            "status": [t.status for t in ticks],
            "manual": [t.manual for t in ticks],
            "note": [t.note for t in ticks],
        },
    )
    return {(int(r[0]), r[1]) for r in rows}


@dataclass(frozen=True, slots=True)
class Fired:
    schedule_id: int
    scheduled_for: dt.datetime
    job_id: int | None
    run_id: int | None
    window_id: int | None
    note: str | None = None


def set_ticks_fired(conn: sa.Connection, fired: Sequence[Fired]) -> None:
    if not fired:
        return
    conn.execute(
        stmt("set_tick_fired"),
        {
            "schedule_id": [f.schedule_id for f in fired],
            "scheduled_for": [f.scheduled_for for f in fired],
            "job_id": [f.job_id for f in fired],
            "run_id": [f.run_id for f in fired],
            "window_id": [f.window_id for f in fired],
            "note": [f.note for f in fired],
        },
    )


def set_tick_status(conn: sa.Connection, changes: Sequence[tuple[int, dt.datetime, str, str | None]]) -> None:
    if not changes:
        return
    conn.execute(
        stmt("set_tick_status"),
        {
            "schedule_id": [c[0] for c in changes],
            "scheduled_for": [c[1] for c in changes],
            "status": [c[2] for c in changes],
            "note": [c[3] for c in changes],
        },
    )


def count_ticks(conn: sa.Connection, counts: Mapping[tuple[int, str], int]) -> None:
    if not counts:
        return
    keys = sorted(counts)
    conn.execute(
        stmt("count_ticks"),
        {"tenant_id": [k[0] for k in keys], "status": [k[1] for k in keys], "n": [counts[k] for k in keys]},
    )


@dataclass(frozen=True, slots=True)
class ScheduleAfter:
    id: int
    next_fire_at: dt.datetime | None
    last_tick_at: dt.datetime | None
    last_job_id: int | None
    last_run_id: int | None
    buffered_delta: int


def update_schedules_after_pass(conn: sa.Connection, rows: Sequence[ScheduleAfter]) -> None:
    if not rows:
        return
    conn.execute(
        stmt("update_schedules_after_pass"),
        {
            "id": [r.id for r in rows],
            "next_fire_at": [r.next_fire_at for r in rows],
            "last_tick_at": [r.last_tick_at for r in rows],
            "last_job_id": [r.last_job_id for r in rows],
            "last_run_id": [r.last_run_id for r in rows],
            "buffered_delta": [r.buffered_delta for r in rows],
        },
    )


def schedule_ticks(conn: sa.Connection, schedule_id: int, limit: int) -> list[Row]:
    return _rows(conn, "schedule_ticks", {"schedule_id": schedule_id, "limit": limit})


def paused_ticks(conn: sa.Connection, schedule_id: int, since: dt.datetime, limit: int) -> list[Row]:
    return _rows(conn, "paused_ticks", {"schedule_id": schedule_id, "since": since, "limit": limit})


def missed_ticks(conn: sa.Connection, schedule_id: int, limit: int) -> list[Row]:
    return _rows(conn, "missed_ticks", {"schedule_id": schedule_id, "limit": limit})


def mark_ticks_backfilled(
    conn: sa.Connection, schedule_id: int, backfill_id: int, scheduled_for: Sequence[dt.datetime]
) -> None:
    conn.execute(
        stmt("mark_ticks_backfilled"),
        {"schedule_id": schedule_id, "backfill_id": backfill_id, "scheduled_for": list(scheduled_for)},
    )


def set_schedule_paused(conn: sa.Connection, schedule_id: int, paused: bool) -> None:
    conn.execute(stmt("set_schedule_paused"), {"id": schedule_id, "paused": paused})


def set_schedule_next(conn: sa.Connection, schedule_id: int, next_fire_at: dt.datetime | None) -> None:
    conn.execute(stmt("set_schedule_next"), {"id": schedule_id, "next_fire_at": next_fire_at})


def remove_schedule(conn: sa.Connection, schedule_id: int) -> None:
    conn.execute(stmt("drop_buffered_ticks"), {"id": schedule_id, "note": "schedule removed"})
    conn.execute(stmt("remove_schedule"), {"id": schedule_id})


def prune_ticks(conn: sa.Connection, *, days: int, limit: int) -> int:
    return int(conn.execute(stmt("prune_ticks"), {"days": days, "limit": limit}).rowcount or 0)


def seconds_to_next_fire(conn: sa.Connection) -> float | None:
    value = conn.execute(stmt("seconds_to_next_fire")).scalar()
    return None if value is None else float(value)
