"""Reads the console's schedule views need beyond core.queries.schedules: the ticks a paused
schedule recorded since its pause, which Resume with catch-up puts through its policies."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain import schedules as sched
from core.domain.auth import Principal
from core.ledger.reads import schedules as reads
from core.queries.common import visible

_PAUSED_SINCE = sa.text(
    """SELECT count(*) AS n, min(scheduled_for) AS first, max(scheduled_for) AS last
       FROM (SELECT scheduled_for FROM schedule_ticks
             WHERE schedule_id = :id AND status = 'paused' AND scheduled_for >= :since
             ORDER BY scheduled_for LIMIT :limit) AS k"""
)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def paused_ticks(conn: sa.Connection, principal: Principal, tenant: str, name: str) -> dict[str, Any]:
    """{"paused": bool, "paused_at", "count", "first", "last"}: the ticks recorded `paused`
    since the schedule's pause, as many as resume_schedule(catchup=True) takes (times in ISO
    8601, None when there are none). Raises NotFound, Forbidden."""
    row = reads.schedule(conn, visible(principal, tenant), name)
    if row is None:
        raise errors.NotFound(f"tenant {tenant!r} has no schedule {name!r}; list them with `orch schedules list`")
    out: dict[str, Any] = {
        "paused": bool(row["paused"]),
        "paused_at": _iso(row["paused_at"]),
        "count": 0,
        "first": None,
        "last": None,
    }
    if not row["paused"] or row["paused_at"] is None:
        return out
    found = (
        conn.execute(_PAUSED_SINCE, {"id": row["id"], "since": row["paused_at"], "limit": sched.MAX_LATE_TICKS})
        .mappings()
        .one()
    )
    out.update(count=int(found["n"]), first=_iso(found["first"]), last=_iso(found["last"]))
    return out
