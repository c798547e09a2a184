"""What a job asks the ledger about event time through its JobContext: the window it covers
(ctx.data_interval) and a watermark it reports (ctx.watermark). The Pump's LedgerPort
methods call these."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from core import control
from core.ledger.statements import stmt
from worker.sdk import ActiveJob


def data_interval(engine: sa.Engine, job: ActiveJob) -> tuple[dt.datetime, dt.datetime] | None:
    if job.window_id is None and job.run_id is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(stmt("job_window"), {"window_id": job.window_id, "run_id": job.run_id}).first()
    return None if row is None else (row[0], row[1])


def watermark(engine: sa.Engine, owner: str, job: ActiveJob, at: dt.datetime) -> bool:
    with engine.begin() as conn:
        tenant_id = conn.execute(stmt("job_watermark_key"), {"job_id": job.id}).scalar_one()
        return control.report_watermark(
            conn,
            tenant_id=int(tenant_id),
            source_id=job.source_id,
            job_type=job.job_type,
            at=at,
            actor=owner,
            job_id=job.id,
        )
