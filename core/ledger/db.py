"""Engines and migrations: how a process reaches the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.domain import errors

MIGRATIONS = Path(__file__).parent / "migrations"


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    application_name: str = "orch",
    synchronous_commit: bool = True,
    ordered_scans: bool = False,
    pre_ping: bool = False,
    **kw: Any,
) -> sa.Engine:
    """An engine for the ledger. Nothing connects until first use.

    No pre-ping by default: it costs a round trip per checkout on the hot paths; a broken
    pooled connection fails one call, invalidates the pool, and callers that must not fail
    (the pump, the scheduler) retry."""
    # The hot statements are CTEs whose planning costs more than their execution (about
    # 1 ms against 0.1 ms): prepare them on first use and keep the generic plan.
    options = ["-c plan_cache_mode=force_generic_plan"]
    # No JIT: every ledger statement is short, and compiling one costs more (about 20 ms)
    # than running it; the planner's cost estimates on a large ledger (a 10,000-job run's
    # view, say) cross jit_above_cost and would pay it on every call.
    options.append("-c jit=off")
    if not synchronous_commit:
        options.append("-c synchronous_commit=off")
    if ordered_scans:
        # The claim must walk jobs_claim_idx in order and stop after LIMIT rows. With stale
        # statistics (autovacuum off or behind) the planner may instead bitmap-scan every
        # entry of the queue and sort them: 10 ms a claim at 60,000 entries. Worker
        # statements never need a bitmap scan.
        options.append("-c enable_bitmapscan=off")
    connect_args: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": 5,
        "prepare_threshold": 1,
        "options": " ".join(options),
    }
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
        **kw,
    )


def constraint_name(exc: sa.exc.DBAPIError) -> str | None:
    """The constraint a database error names (psycopg's diag.constraint_name), if any: how
    callers tell one violated rule from another, never by the message text."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return None if name is None else str(name)


def describe(url: sa.URL | str) -> str:
    """A URL safe to print: no password."""
    return sa.make_url(url).render_as_string(hide_password=True)


def check_connection(engine: sa.Engine) -> None:
    """Connect once; raise Unavailable with a fixable message if the server is not there."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise errors.Unavailable(
            f"cannot reach PostgreSQL at {describe(engine.url)}: {reason} "
            "(check ORCH_DATABASE_URL, or run `orch up` for the embedded server)"
        ) from None


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine) -> str:
    """Migrate the ledger to head; safe to run again and from several processes at once."""
    check_connection(engine)
    with engine.begin() as conn:
        # Serialise concurrent upgrades (several services starting together).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7424851)"))
        command.upgrade(_alembic_config(conn), "head")
        return current_revision(conn) or ""


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def require_schema(conn: sa.Connection) -> None:
    """Raise InvalidInput when the ledger has not been migrated to head."""
    rev = current_revision(conn)
    if rev != head_revision():
        raise errors.InvalidInput(
            f"the ledger schema is at {rev or 'nothing'}, expected {head_revision()}: run `orch db upgrade`"
        )
