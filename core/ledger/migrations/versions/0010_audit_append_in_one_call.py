"""orch_audit_append version 1: an audit row is appended to its chain in one round trip (the
head locked, the time read, the hash computed and the row written by the server), where it
took two (lock the head and read it; write the row the caller hashed). Every control action
and every submit writes one (docs/adr/0017, idle dispatch).

Revision ID: 0010
Revises: 0009
"""

from importlib import resources

from alembic import op

revision = "0010"
down_revision = "0009"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_audit_append", 1),)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0010: restore a backup taken before")
