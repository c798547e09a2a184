"""The outbox without a foreign key to tenants (issue 11, docs/adr/0021). Every job-changing
statement writes its events rows through orch_job_history_events, and the key's check ran a
query per row that took a KEY SHARE lock on the tenant's row: the same row for every
concurrent writer of a tenant, so their locks made a MultiXact each time they overlapped.
pgbench of a worker's history writes with the events trigger on: 1.20-1.38x without it.

The key guarded nothing else does: every tenant_id an events row gets is copied from a row
that references its tenant itself (a job, run, source, schedule, backfill, incident), or
looked up by name in tenants (control actions' events, append_audit); and no code deletes a
tenant. A bundle import loads events with triggers off, so the key was not checked there
either.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.execute("ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey")


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0017: restore a backup taken before")
