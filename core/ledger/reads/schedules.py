"""Read statements on schedules and their ticks, backfills and their windows, watermarks."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from core.ledger.reads import Visible

Row = sa.RowMapping

SCHEDULE_FIELDS = """s.id, t.name AS tenant, s.name, s.cron, s.every_s, s.timezone, s.target_kind, s.target,
    s.overlap, s.catchup, s.catchup_window_s, s.max_catchup, s.start_at, s.end_at, s.paused, s.paused_at,
    s.next_fire_at, s.last_tick_at, s.last_job_id, s.last_run_id, s.buffered, s.created_by, s.created_at,
    s.updated_at, s.stream_id"""

BACKFILL_FIELDS = """b.id, t.name AS tenant, src.name AS source, st.job_type, b.schedule_id, b.target_kind, b.target,
    b.range_start, b.range_end, b.window_s, b.reprocess, b.max_active, b.pause_above, b.state, b.operator_paused,
    b.wait_reason, b.windows_total, b.skipped_done, b.skipped_in_flight, b.created_by, b.reason, b.ticket,
    b.created_at, b.started_at, b.updated_at, b.finished_at"""


def _all(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[Row]:
    return list(conn.execute(sa.text(sql), params).mappings())


def schedules(conn: sa.Connection, visible: Visible, *, limit: int) -> list[Row]:
    where, params = visible.where()
    sql = (
        f"SELECT {SCHEDULE_FIELDS} FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id"
        f" WHERE s.removed_at IS NULL AND {where} ORDER BY t.name, s.name LIMIT :limit"
    )
    return _all(conn, sql, {**params, "limit": limit})


def schedule(conn: sa.Connection, visible: Visible, name: str) -> Row | None:
    where, params = visible.where()
    sql = (
        f"SELECT {SCHEDULE_FIELDS} FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id"
        f" WHERE s.removed_at IS NULL AND s.name = :name AND {where}"
    )
    return conn.execute(sa.text(sql), {**params, "name": name}).mappings().first()


def ticks(conn: sa.Connection, schedule_id: int, limit: int) -> list[Row]:
    sql = """SELECT k.scheduled_for, k.interval_start, k.status, k.manual, k.job_id, k.run_id, k.window_id,
                    k.backfill_id, k.note, k.fired_at, coalesce(j.state, r.state) AS work_state
             FROM schedule_ticks AS k
             LEFT JOIN jobs AS j ON j.id = k.job_id LEFT JOIN runs AS r ON r.id = k.run_id
             WHERE k.schedule_id = :id ORDER BY k.scheduled_for DESC LIMIT :limit"""
    return _all(conn, sql, {"id": schedule_id, "limit": limit})


def tick_counts(conn: sa.Connection, schedule_id: int) -> dict[str, int]:
    sql = "SELECT status, count(*) AS n FROM schedule_ticks WHERE schedule_id = :id GROUP BY status"
    return {r["status"]: int(r["n"]) for r in _all(conn, sql, {"id": schedule_id})}


def tick_counters(conn: sa.Connection) -> list[Row]:
    sql = """SELECT t.name AS tenant, c.status, c.ticks FROM schedule_tick_counters AS c
             JOIN tenants AS t ON t.id = c.tenant_id ORDER BY t.name, c.status"""
    return _all(conn, sql, {})


def backfills(conn: sa.Connection, visible: Visible, *, state: str | None, limit: int) -> list[Row]:
    where, params = visible.where()
    clause = " AND b.state = :state" if state is not None else ""
    sql = (
        f"SELECT {BACKFILL_FIELDS} FROM backfills AS b JOIN tenants AS t ON t.id = b.tenant_id"
        " JOIN streams AS st ON st.id = b.stream_id LEFT JOIN sources AS src ON src.id = st.source_id"
        f" WHERE {where}{clause} ORDER BY b.id DESC LIMIT :limit"
    )
    return _all(conn, sql, {**params, "state": state, "limit": limit})


def backfill(conn: sa.Connection, visible: Visible, backfill_id: int) -> Row | None:
    where, params = visible.where()
    sql = (
        f"SELECT {BACKFILL_FIELDS} FROM backfills AS b JOIN tenants AS t ON t.id = b.tenant_id"
        " JOIN streams AS st ON st.id = b.stream_id LEFT JOIN sources AS src ON src.id = st.source_id"
        f" WHERE b.id = :id AND {where}"
    )
    return conn.execute(sa.text(sql), {**params, "id": backfill_id}).mappings().first()


def backfills_windows(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, int]]:
    """{backfill id: {state: windows}} for several backfills in one statement."""
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    sql = """SELECT backfill_id, state, count(*) AS n FROM windows WHERE backfill_id = ANY(:ids)
             GROUP BY backfill_id, state"""
    for r in _all(conn, sql, {"ids": ids}):
        out[int(r["backfill_id"])][r["state"]] = int(r["n"])
    return out


def backfill_pace(conn: sa.Connection, backfill_id: int) -> Row | None:
    """How long its finished windows took, for an ETA: count and span of finish times."""
    sql = """SELECT count(*) AS n, extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span_s
             FROM windows WHERE backfill_id = :id AND state IN ('succeeded', 'failed') AND started_at IS NOT NULL"""
    return conn.execute(sa.text(sql), {"id": backfill_id}).mappings().first()


def backfill_window_rows(conn: sa.Connection, backfill_id: int, limit: int) -> list[Row]:
    sql = """SELECT id, span_start, span_end, state, job_id, run_id, started_at, finished_at FROM windows
             WHERE backfill_id = :id ORDER BY span_start LIMIT :limit"""
    return _all(conn, sql, {"id": backfill_id, "limit": limit})


#: Points of the watermark lag chart per stream at most; samples come once a minute.
WATERMARK_POINTS = 120
WATERMARK_SAMPLE_S = 60


def watermark_series(conn: sa.Connection, visible: Visible, *, since_s: float) -> list[Row]:
    """Per watermark and bucket (a sample a minute, or wider so that a line has at most
    WATERMARK_POINTS points): the last sample time, the lowest watermark and the largest lag."""
    where, params = visible.where()
    bucket_s = max(WATERMARK_SAMPLE_S, math.ceil(since_s / WATERMARK_POINTS))
    sql = f"""SELECT max(ws.at) AS at, t.name AS tenant, coalesce(src.name, '-') AS source, w.job_type,
                     min(ws.watermark) AS watermark, max(ws.lag_s) AS lag_s
              FROM watermark_samples AS ws JOIN watermarks AS w ON w.id = ws.watermark_id
              JOIN tenants AS t ON t.id = w.tenant_id LEFT JOIN sources AS src ON src.id = w.source_id
              WHERE ws.at > now() - make_interval(secs => :since) AND {where}
              GROUP BY w.id, t.name, src.name, w.job_type,
                       date_bin(make_interval(secs => :b), ws.at, timestamptz 'epoch')
              ORDER BY 1"""
    return _all(conn, sql, {**params, "since": since_s, "b": bucket_s})
