"""Admission's fast path in fewer statements, and none that waits on a conflict (issue 11,
docs/adr/0022): orch_admit version 3.

A claim whose batch is one tenant, job type and source with room for all of it (the usual
claim under flow control) ran nine statements in version 2, and held the bucket and quota
rows it locked until its claim committed. Version 3:

- takes the batch's tokens in the UPDATE that locks the bucket (its condition is the room
  check, re-evaluated on the row as it stands once the lock is granted); if a quota then has
  no slot for all of them, the tokens go back before the general path decides job by job;
- reads the quota's active slots and the hour's starts in one statement, after the quota's
  lock is granted (so on a snapshot that sees every claim committed before);
- adds to the minute's starts with an UPDATE, and only the minute's first claim inserts: an
  INSERT ... ON CONFLICT on a row that a concurrent claim has just written waits for that
  claim's transaction and then re-runs.

The general path and what admission decides are unchanged
(tests/integration/test_flow_control.py holds them).

Revision ID: 0018
Revises: 0017
"""

from importlib import resources

from alembic import op

revision = "0018"
down_revision = "0017"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_admit", 3),)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0018: restore a backup taken before")
