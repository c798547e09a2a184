"""Retention: a per-tenant override of how long finished work is kept, the indexes the
pruning pass reads, and running totals of what it removed.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"

SCHEMA = """
-- Days finished work of the tenant is kept (NULL: ORCH_RETENTION_DAYS).
ALTER TABLE tenants ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 3650);

-- Plain jobs that may be pruned one day, oldest first per tenant: dead letters (kept until an
-- operator removes them) and jobs of runs (pruned with their run) are not in it, so the
-- pass never re-reads what it must keep.
CREATE INDEX jobs_prunable_idx ON jobs (tenant_id, finished_at)
    WHERE finished_at IS NOT NULL AND run_id IS NULL AND state <> 'dead_lettered';

-- The outbox's own retention reads it by time.
CREATE INDEX events_at_idx ON events (at);

-- What pruning removed since the ledger began, by kind (orch ledger prune, the scheduler).
CREATE TABLE prune_counters (
    kind     text PRIMARY KEY,
    removed  bigint NOT NULL
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0007: restore a backup taken before")
