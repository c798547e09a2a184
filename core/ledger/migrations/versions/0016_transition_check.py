"""job_history's transitions guarded by a CHECK instead of a foreign key (issue 11,
docs/adr/0021). The foreign key to job_transitions fired a row trigger per history row (three
rows per job), and each ran a query that took a KEY SHARE lock on one of twenty
job_transitions rows, which every concurrent writer of history locks too. The CHECK compares
"from_state event to_state" with the same transitions, written out: a hashed lookup in the
row's own evaluation, no query and no lock.

- job_transitions stays: the state machine's table, which tests compare with the Python
  table, the diagram and now this CHECK's list. A migration that changes the transitions
  replaces the CHECK too (tests/integration/test_state_table.py fails while they disagree).
- The CHECK is added NOT VALID and not validated here: every existing row was checked by the
  foreign key when it was written, and a VALIDATE would read all of job_history while this
  migration holds the table's ACCESS EXCLUSIVE lock (dropping the key takes it). New and
  updated rows are checked either way.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"

#: The transitions as of this migration (core.domain.states.TRANSITIONS, job_transitions).
TRANSITIONS = (
    ("leased", "ack", "running"),
    ("leased", "lease_expired", "queued"),
    ("pending", "cancel", "canceled"),
    ("pending", "deps_met", "queued"),
    ("pending", "parent_failed", "upstream_failed"),
    ("pending", "skip", "skipped"),
    ("queued", "cancel", "canceled"),
    ("queued", "claim", "leased"),
    ("queued", "deny", "throttled"),
    ("retrying", "cancel", "canceled"),
    ("retrying", "due", "queued"),
    ("running", "cancel", "canceled"),
    ("running", "fail_final", "dead_lettered"),
    ("running", "fail_retryable", "retrying"),
    ("running", "lease_expired", "dead_lettered"),
    ("running", "lease_expired", "retrying"),
    ("running", "succeed", "succeeded"),
    ("running", "throttle", "throttled"),
    ("throttled", "cancel", "canceled"),
    ("throttled", "due", "queued"),
)


def upgrade() -> None:
    listed = ", ".join(f"'{f} {e} {t}'" for f, e, t in TRANSITIONS)
    op.execute(
        f"""
ALTER TABLE job_history DROP CONSTRAINT job_history_transition_fk;
ALTER TABLE job_history ADD CONSTRAINT job_history_transition_valid
    CHECK (from_state IS NULL OR from_state || ' ' || event || ' ' || to_state = ANY (ARRAY[{listed}])) NOT VALID;
"""
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0016: restore a backup taken before")
