"""The outbox as a stream (issue 12): the relay numbers committed events with a gap-free
sequence in the order it finds them committed, and readers resume after a number.
Functions take a Connection and never commit."""

from __future__ import annotations

import sqlalchemy as sa

from core.ledger.statements import stmt


def sequence(conn: sa.Connection, *, limit: int) -> int:
    """Number up to `limit` committed events nobody numbered yet; returns how many. Hold the
    transaction short: the counter stays locked until it commits."""
    last = int(conn.execute(stmt("lock_event_counter")).scalar_one())
    return int(conn.execute(stmt("sequence_events"), {"last_seq": last, "limit": limit}).scalar_one())


def waiting(conn: sa.Connection) -> bool:
    return bool(conn.execute(stmt("events_waiting")).scalar_one())


def after(conn: sa.Connection, seq: int, *, limit: int) -> list[sa.RowMapping]:
    """Numbered events after `seq`, in order."""
    return list(conn.execute(stmt("events_after"), {"after": seq, "limit": limit}).mappings())


def bounds(conn: sa.Connection) -> tuple[int | None, int]:
    """(the oldest retained number or None, the newest number given: 0 before any)."""
    row = conn.execute(stmt("stream_bounds")).mappings().one()
    return (None if row["oldest"] is None else int(row["oldest"])), int(row["newest"] or 0)
