"""The outbox as a stream (issue 12): the relay numbers committed events with a gap-free
sequence in the order it finds them committed, and readers resume after a number.
Functions take a Connection and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


#: Most numbers one page reads past its cursor, whatever its filters match.
SPAN = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    """Events after a cursor that match a reader's filters, and where the next page starts."""

    events: list[sa.RowMapping]
    #: The number the next page starts after: the last event's, or how far the page scanned.
    cursor: int
    #: The stream's bounds in the page's snapshot (bounds()).
    oldest: int | None
    newest: int
    #: More may follow at once: the page hit its limit, or scanned its span short of newest.
    full: bool


def type_pattern(event_type: str, *, prefix: bool = False) -> str:
    """The LIKE pattern of one event type (or of every type starting with it)."""
    escaped = event_type.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%" if prefix else escaped


def page(
    conn: sa.Connection,
    after: int,
    *,
    limit: int,
    span: int = SPAN,
    tenants: Sequence[str] | None = None,
    type_patterns: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
) -> Page:
    """Up to `limit` numbered rows after `after` within about `span` numbers, filtered (None:
    no filter) by tenant name, type pattern (type_pattern()) and subject. A row may hold
    several events (a job batch, numbered seq - n + 1 .. seq; the first row may start at or
    before `after`): core.domain.events.expand gives them."""
    # Numbers are contiguous, so without filters the events a page wants lie within `limit`
    # numbers of its cursor; rows beyond need not be read (nor their JSON decoded).
    filtered = tenants is not None or type_patterns is not None or subjects is not None
    hi = after + (span if filtered else min(span, limit))
    straddling = conn.execute(stmt("straddling_row"), {"hi": hi}).mappings().first()
    if straddling is not None and int(straddling["first"]) <= hi:
        hi = int(straddling["seq"])
    params = {
        "after": after,
        "limit": limit,
        "hi": hi,
        "tenants": None if tenants is None else list(tenants),
        "type_patterns": None if type_patterns is None else list(type_patterns),
        "subjects": None if subjects is None else list(subjects),
    }
    rows = list(conn.execute(stmt("events_page"), params).mappings())
    oldest = None if rows[0]["oldest"] is None else int(rows[0]["oldest"])
    newest = int(rows[0]["newest"] or 0)
    found = [r for r in rows if r["seq"] is not None]
    if len(found) >= limit:
        return Page(found, int(found[-1]["seq"]), oldest, newest, True)
    scanned = max(after, min(hi, newest))
    return Page(found, scanned, oldest, newest, scanned < newest)
