"""Watermarks reported by handlers (ctx.watermark): event time up to which a tenant's data
of a source and job type is complete. Monotone: an earlier time never moves it back."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from core.domain import errors
from core.ledger import windows as ledger

#: A watermark further ahead of the clock than this is a mistake (a unit error, a bad parse).
MAX_AHEAD = dt.timedelta(days=1)


def report_watermark(
    conn: sa.Connection,
    *,
    tenant_id: int,
    source_id: int | None,
    job_type: str,
    at: dt.datetime,
    actor: str,
    job_id: int | None = None,
) -> bool:
    """Move the watermark to `at` if that is later (in the caller's transaction); returns
    whether it moved. Raises InvalidInput for a naive time or one over a day ahead."""
    if not isinstance(at, dt.datetime) or at.tzinfo is None:
        raise errors.InvalidInput("a watermark must be a timezone-aware datetime")
    if at - dt.datetime.now(dt.UTC) > MAX_AHEAD:
        raise errors.InvalidInput(f"watermark {at.isoformat()} is more than a day ahead of the clock")
    return ledger.report_watermark(
        conn, tenant_id=tenant_id, source_id=source_id, job_type=job_type, at=at, actor=actor, job_id=job_id
    )
