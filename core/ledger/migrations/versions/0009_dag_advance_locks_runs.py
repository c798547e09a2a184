"""orch_dag_advance version 2: the runs a finishing transaction counts are locked before they
are counted, also when it is one run, so two transactions ending a run's last jobs at once
judge the run on what both committed (docs/adr/0017).

Revision ID: 0009
Revises: 0008
"""

from importlib import resources

from alembic import op

revision = "0009"
down_revision = "0008"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_dag_advance", 2),)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0009: restore a backup taken before")
