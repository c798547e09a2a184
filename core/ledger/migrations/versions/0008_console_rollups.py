"""Console rollups: what the console and the CLI read on a big ledger without counting its
history (docs/design.md, "Reads on a big ledger").

- job_finish_rollups: jobs that ended succeeded, dead-lettered or canceled, per tenant, job
  type and 5-minute bucket of finished_at; job_state_totals: succeeded and canceled jobs per
  tenant since the ledger began. Both hold exactly the jobs that finished before
  rollup_marks.until ('job_finish'); the scheduler moves the mark on (core/ledger/rollups.py,
  never the workers), retention takes off what it deletes, and a read adds the jobs that
  finished since the mark from jobs_finished_idx.
- jobs_created_brin: the jobs created in a time range (the Jobs page lists the newest of the
  last hour) without a full index on the workers' write path; a BRIN index costs an insert
  almost nothing, and the scheduler summarises the new ranges.
- jobs_dead_letters_idx: dead letters by error cluster, newest first, with what the Dead
  letters page shows of them (index-only); only rows that dead-letter ever enter it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"

SCHEMA = """
CREATE TABLE rollup_marks (
    name   text PRIMARY KEY,
    -- Every job that finished before this is in the rollups of this name.
    until  timestamptz NOT NULL
);
INSERT INTO rollup_marks (name, until) VALUES ('job_finish', timestamptz 'epoch');

CREATE TABLE job_finish_rollups (
    tenant_id      bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_type       text NOT NULL,
    bucket         timestamptz NOT NULL,
    succeeded      integer NOT NULL DEFAULT 0,
    dead_lettered  integer NOT NULL DEFAULT 0,
    canceled       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, job_type, bucket)
);
CREATE INDEX job_finish_rollups_bucket_idx ON job_finish_rollups (bucket);

CREATE TABLE job_state_totals (
    tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    state      text NOT NULL CHECK (state IN ('succeeded', 'canceled')),
    jobs       bigint NOT NULL,
    PRIMARY KEY (tenant_id, state)
);

CREATE INDEX jobs_created_brin ON jobs USING brin (created_at) WITH (pages_per_range = 32);

CREATE INDEX jobs_dead_letters_idx ON jobs (error_class, error_fingerprint, id DESC)
    INCLUDE (tenant_id, job_type, finished_at) WHERE state = 'dead_lettered';
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0008: restore a backup taken before")
