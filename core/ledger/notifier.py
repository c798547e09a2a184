"""The webhook notifier's durable cursor (migration 0014; worker/runtime/notifier.py): where in
the event stream a notifier has handled every event, its running totals and its last error.
Functions take a Connection and never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping

import sqlalchemy as sa

from core.ledger.statements import stmt

#: The cursor of the webhook notifier (ORCH_WEBHOOK_URL).
WEBHOOK = "webhook"


def ensure_cursor(conn: sa.Connection, name: str, *, start: int) -> sa.RowMapping:
    """The cursor called `name`, created after `start` if it did not exist."""
    conn.execute(stmt("notifier_cursor_create"), {"name": name, "start": max(0, start)})
    return conn.execute(stmt("notifier_cursor"), {"name": name}).mappings().one()


def record(
    conn: sa.Connection,
    name: str,
    *,
    last_seq: int,
    delivered: int,
    dropped: int,
    failures: Mapping[str, int],
    consecutive_failures: int,
    error: str | None,
    succeeded: bool,
) -> None:
    """Add one step's outcome to the cursor (it never moves back)."""
    conn.execute(
        stmt("notifier_record"),
        {
            "name": name,
            "last_seq": last_seq,
            "delivered": delivered,
            "dropped": dropped,
            "failures": json.dumps(dict(failures), sort_keys=True),
            "consecutive_failures": consecutive_failures,
            "error": error,
            "succeeded": succeeded,
        },
    )


def status(conn: sa.Connection, name: str) -> sa.RowMapping | None:
    """The cursor with the stream's newest number and the backlog; None before its first run."""
    return conn.execute(stmt("notifier_status"), {"name": name}).mappings().first()
