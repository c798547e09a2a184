"""The webhook notifier's durable cursor (issue 12, "Notifiers"): where in the event stream a
notifier has delivered (or given up on) every event, and what it has counted, so a restart
resumes exactly after it and the exporter and console read its backlog and failures from the
ledger.

- notifier_cursors: one row per notifier (`webhook`): last_seq (the last event number handled),
  the running totals `delivered` and `dropped` (given up: rejected by the endpoint, or pruned
  before delivery), `failures` (failed attempts by reason, a JSON object of counts),
  consecutive_failures and the last error, and when the last delivery succeeded.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"

SCHEMA = """
CREATE TABLE notifier_cursors (
    name                  text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    last_seq              bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    delivered             bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    dropped               bigint NOT NULL DEFAULT 0 CHECK (dropped >= 0),
    failures              jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(failures) = 'object'),
    consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_error            text CHECK (length(last_error) <= 1000),
    last_error_at         timestamptz,
    last_success_at       timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0014: restore a backup taken before")
