"""Event-time window, watermark and backfill statements: one function per statement of
core/ledger/sql/statements/windows.sql and the window inserts of schedules.sql (named alike).
Every function takes a Connection and never commits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping
#: Backfill jobs run at the lowest priority there is; jobs above it are live work.
BACKFILL_PRIORITY = -1000


def _rows(conn: sa.Connection, name: str, params: Mapping[str, Any]) -> list[Row]:
    return list(conn.execute(stmt(name), dict(params)).mappings().all())


@dataclass(frozen=True, slots=True)
class NewWindow:
    stream_id: int
    tenant_id: int
    span_start: dt.datetime
    span_end: dt.datetime
    schedule_id: int | None = None


def insert_windows(
    conn: sa.Connection, windows: Sequence[NewWindow], *, state: str, backfill_id: int | None = None
) -> dict[tuple[int | None, int, dt.datetime], int]:
    """Insert open windows; returns {(schedule id, stream id, span start): window id} of those
    inserted (a window overlapping an open one of its stream is not)."""
    if not windows:
        return {}
    rows = conn.execute(
        stmt("insert_windows"),
        {
            "stream_id": [w.stream_id for w in windows],
            "tenant_id": [w.tenant_id for w in windows],
            "span_start": [w.span_start for w in windows],
            "span_end": [w.span_end for w in windows],
            "schedule_id": [w.schedule_id for w in windows],
            "state": state,
            "backfill_id": backfill_id,
        },
    )
    return {(None if r[3] is None else int(r[3]), int(r[1]), r[2]): int(r[0]) for r in rows}


def delete_windows(conn: sa.Connection, ids: Sequence[int]) -> None:
    if ids:
        conn.execute(stmt("delete_windows"), {"ids": list(ids)})


def set_window_work(conn: sa.Connection, work: Sequence[tuple[int, int | None, int | None]]) -> None:
    """(window id, job id, run id): the window is running as that job or run."""
    if not work:
        return
    conn.execute(
        stmt("set_window_work"),
        {"id": [w[0] for w in work], "job_id": [w[1] for w in work], "run_id": [w[2] for w in work]},
    )


def classify_windows(
    conn: sa.Connection, stream_id: int | None, spans: Sequence[tuple[dt.datetime, dt.datetime]]
) -> list[tuple[bool, bool, bool]]:
    """(done, tried, in flight) for each span, in order."""
    if not spans:
        return []
    if stream_id is None:
        return [(False, False, False)] * len(spans)
    rows = conn.execute(
        stmt("classify_windows"),
        {"stream_id": stream_id, "span_start": [s for s, _ in spans], "span_end": [e for _, e in spans]},
    ).all()
    return [(bool(r[1]), bool(r[2]), bool(r[3])) for r in rows]


def insert_backfill(conn: sa.Connection, **values: Any) -> int:
    values = dict(values, target=json.dumps(values["target"], sort_keys=True))
    return int(conn.execute(stmt("insert_backfill"), values).one()[0])


def set_backfill_counts(conn: sa.Connection, backfill_id: int, *, total: int, in_flight: int) -> None:
    conn.execute(stmt("set_backfill_counts"), {"id": backfill_id, "total": total, "in_flight": in_flight})


def lock_backfill(conn: sa.Connection, backfill_id: int) -> Row | None:
    return conn.execute(stmt("lock_backfill"), {"id": backfill_id}).mappings().first()


def lock_active_backfills(conn: sa.Connection, limit: int) -> list[Row]:
    return _rows(conn, "lock_active_backfills", {"limit": limit})


def backfill_window_counts(conn: sa.Connection, backfill_id: int) -> dict[str, int]:
    return {r["state"]: int(r["n"]) for r in _rows(conn, "backfill_window_counts", {"id": backfill_id})}


def next_planned_windows(conn: sa.Connection, backfill_id: int, limit: int) -> list[Row]:
    return _rows(conn, "next_planned_windows", {"id": backfill_id, "limit": limit})


def live_ready(conn: sa.Connection, tenant_id: int, cap: int) -> int:
    params = {"tenant_id": tenant_id, "cap": cap, "backfill_priority": BACKFILL_PRIORITY}
    return int(conn.execute(stmt("live_ready"), params).scalar() or 0)


def set_backfill_state(
    conn: sa.Connection, backfill_id: int, state: str, *, wait_reason: str | None, operator_paused: bool = False
) -> None:
    conn.execute(
        stmt("set_backfill_state"),
        {"id": backfill_id, "state": state, "wait_reason": wait_reason, "operator_paused": operator_paused},
    )


def cancel_planned_windows(conn: sa.Connection, backfill_id: int) -> int:
    return int(conn.execute(stmt("cancel_planned_windows"), {"id": backfill_id}).rowcount or 0)


def running_window_work(conn: sa.Connection, backfill_id: int) -> list[Row]:
    return _rows(conn, "running_window_work", {"id": backfill_id})


def report_watermark(
    conn: sa.Connection,
    *,
    tenant_id: int,
    source_id: int | None,
    job_type: str,
    at: dt.datetime,
    actor: str,
    job_id: int | None,
) -> bool:
    """Move the watermark to `at` if that is later; returns whether it moved."""
    params = {
        "tenant_id": tenant_id,
        "source_id": source_id,
        "job_type": job_type,
        "at": at,
        "actor": actor,
        "job_id": job_id,
    }
    return conn.execute(stmt("report_watermark"), params).first() is not None


def watermark_rows(conn: sa.Connection, tenant: str | None, limit: int) -> list[Row]:
    return _rows(conn, "watermark_rows", {"tenant": tenant, "limit": limit})


def stream_done_beyond(conn: sa.Connection, watermark_ids: Sequence[int], limit: int) -> list[Row]:
    return _rows(conn, "stream_done_beyond", {"ids": list(watermark_ids), "limit": limit})


def sample_watermarks(conn: sa.Connection) -> None:
    conn.execute(stmt("sample_watermarks"))
    conn.execute(stmt("prune_watermark_samples"))


def fail_windows(conn: sa.Connection, ids: Sequence[int]) -> None:
    if ids:
        conn.execute(stmt("fail_windows"), {"ids": list(ids)})


def job_window(
    conn: sa.Connection, window_id: int | None, run_id: int | None
) -> tuple[dt.datetime, dt.datetime] | None:
    """The span a job covers: its own window, or its run's."""
    row = conn.execute(stmt("job_window"), {"window_id": window_id, "run_id": run_id}).first()
    return None if row is None else (row[0], row[1])


def job_tenant_id(conn: sa.Connection, job_id: int) -> int:
    return int(conn.execute(stmt("job_watermark_key"), {"job_id": job_id}).scalar_one())
