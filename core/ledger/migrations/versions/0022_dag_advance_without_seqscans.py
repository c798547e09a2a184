"""orch_dag_advance version 4 (docs/adr/0027): the function runs with enable_seqscan off, so
its key lookups stay index lookups under a cached generic plan whatever run_jobs' size.

Nothing else changes: no table, no data.

Revision ID: 0022
Revises: 0021
"""

from importlib import resources

from alembic import op

revision = "0022"
down_revision = "0021"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_dag_advance", 4),)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0022: restore a backup taken before")
