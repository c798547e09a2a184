"""What a job asks the ledger about event time through its JobContext: the window it covers
(ctx.data_interval) and a watermark it reports (ctx.watermark). The Pump's LedgerPort
methods call these."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from core import control
from core.ledger import windows as ledger_windows
from worker.sdk import ActiveJob


def data_interval(engine: sa.Engine, job: ActiveJob) -> tuple[dt.datetime, dt.datetime] | None:
    if job.window_id is None and job.run_id is None:
        return None
    with engine.connect() as conn:
        return ledger_windows.job_window(conn, job.window_id, job.run_id)


def watermark(engine: sa.Engine, owner: str, job: ActiveJob, at: dt.datetime) -> bool:
    with engine.begin() as conn:
        return control.report_watermark(
            conn,
            tenant_id=ledger_windows.job_tenant_id(conn, job.id),
            source_id=job.source_id,
            job_type=job.job_type,
            at=at,
            actor=owner,
            job_id=job.id,
        )
