"""The outbox's sequence (issue 12, the event stream's resume cursor): the relay gives each
committed event the next number of one gap-free counter, in the order it finds them
committed, so a reader that resumes after N never skips an event that committed late (an id
alone is not commit order).

- events.seq: the event's place in the stream (NULL until the relay numbers it), unique.
- event_relay: the counter (one row); the relay holds it while it numbers, so two relays take
  turns and the numbers a reader sees are contiguous.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"

SCHEMA = """
ALTER TABLE events ADD COLUMN seq bigint;
CREATE UNIQUE INDEX events_seq_uq ON events (seq) WHERE seq IS NOT NULL;

CREATE TABLE event_relay (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_seq  bigint NOT NULL DEFAULT 0
);
INSERT INTO event_relay (one, last_seq) VALUES (true, 0);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0012: restore a backup taken before")
