"""What bench/schedules.py's pieces share: the job type and queue, the clock helpers, the
Bench handle (engine, principal, doorbell, broker, settings) and progress on stderr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
import sys
from typing import Any

from bench import dag

JOB_TYPE = "bench.noop"
QUEUE = "bench"
FIRE_CRON = "* * * * *"
#: Next fire on 1 January: never due during a run (unless run in the last minute of a year).
IDLE_CRON = "0 0 1 1 *"
HOUR = dt.timedelta(hours=1)

percentile = dag.percentile


def say(msg: str) -> None:
    """Progress: stderr, so stdout carries only the figures and the JSON line."""
    print(msg, file=sys.stderr, flush=True)


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def past_hour() -> dt.datetime:
    """The start of the last whole hour: a backfill's range must have ended."""
    return utcnow().replace(minute=0, second=0, microsecond=0) - HOUR


@dataclasses.dataclass
class Bench:
    engine: Any
    principal: Any
    bell: Any
    broker: Any
    settings: Any
    db_url: str
    lg: dag.Ledger

    def vacuum(self, *tables: str) -> None:
        import sqlalchemy as sa

        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM (ANALYZE) {', '.join(tables)}"))

    def scalar(self, sql: str, **params: Any) -> Any:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()


LEDGER_TABLES = ("jobs", "job_history", "schedules", "schedule_ticks", "windows", "streams", "backfills")
