"""Room reserved ahead for claims (issue 11, docs/adr/0026): the admission_reservations
table and orch_admit version 4.

A claim under a bucket or a quota locked the bucket, quota and minute rows in orch_admit and
held them until it committed, so every limited claim of a source queued behind the one
before (12% of the pool's statement time in bench/waits.py). Version 4 takes room for 64
more jobs where the room is ample, into a row of this table that only the claiming session
writes; its next claims of that tenant, job type and source admit from the row without
touching a shared one. Every count of a quota's free slots subtracts the room of the
reservations that exist; a reservation expires after 1 second.

The table starts empty and is written only by orch_admit; nothing is backfilled.

Revision ID: 0021
Revises: 0020
"""

from importlib import resources

from alembic import op

revision = "0021"
down_revision = "0020"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_admit", 4),)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    # No foreign keys: a claim inserts a row here once per reservation and updates it on
    # every claim that uses it, and a stale row (its bucket or quota changed or gone) is
    # never used (orch_admit compares them) and is deleted once expired.
    op.execute(
        """
CREATE TABLE admission_reservations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- pg_backend_pid() of the session that took it: only that session admits from it.
    holder        integer NOT NULL,
    tenant_id     bigint NOT NULL,
    job_type      text NOT NULL,
    source_id     bigint,
    -- What governed the group when the room was taken; the row is used only while these
    -- still hold (the bucket's rate not lower, no 429 since, the same quota and limits).
    bucket_id     bigint,
    rate          double precision,
    decreased_at  timestamptz,
    quota_id      bigint,
    max_active    integer,
    max_per_hour  integer,
    -- Jobs it may still start: tokens taken, starts counted and slots held for them.
    room          integer NOT NULL CHECK (room >= 0),
    expires_at    timestamptz NOT NULL
)"""
    )
    op.execute("CREATE INDEX admission_reservations_holder ON admission_reservations (holder, tenant_id, job_type)")
    op.execute(
        "CREATE INDEX admission_reservations_quota ON admission_reservations (quota_id) WHERE quota_id IS NOT NULL"
    )
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0021: restore a backup taken before")
