"""Alembic environment: runs migrations on the connection handed in by core.ledger.db.upgrade."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` on the command line gets here
    raise SystemExit("run migrations with `orch db upgrade`")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
