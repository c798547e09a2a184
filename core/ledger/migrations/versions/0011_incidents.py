"""Incidents (issue 12): conditions the scheduler finds (dead-letter growth, open circuits,
...) open an incident once they have held for a while, bump it while they hold, and resolve
it once they have been clear for a quiet period. One unresolved incident per dedup key
(tenant:kind:scope), however many schedulers evaluate: a partial unique index.

- incidents: the incidents, open, acknowledged or resolved.
- incident_pending: conditions seen but not yet held for their `for` period (no incident yet).
- jobs_dead_recent_idx: dead letters by finish time, for the dead-letter growth window.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"

SCHEMA = """
CREATE TABLE incidents (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        bigint REFERENCES tenants (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('stuck_job', 'sustained_throttling', 'dlq_growth',
                                                   'circuit_open', 'fast_burn')),
    scope            text NOT NULL,
    dedup_key        text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('warning', 'critical')),
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    -- Since when the condition has been clear (NULL while it holds): resolves after the quiet period.
    clear_since      timestamptz,
    resolved_at      timestamptz,
    occurrences      integer NOT NULL DEFAULT 1,
    evidence         jsonb NOT NULL DEFAULT '{}',
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    ack_reason       text CHECK (length(ack_reason) <= 256),
    resolved_by      text,
    resolve_reason   text CHECK (length(resolve_reason) <= 256),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL))
);
-- At most one unresolved incident per key: a repeated condition bumps it, and two
-- schedulers cannot open two.
CREATE UNIQUE INDEX incidents_unresolved_key_uq ON incidents (dedup_key) WHERE state <> 'resolved';
CREATE INDEX incidents_tenant_idx ON incidents (tenant_id, id DESC);

CREATE TABLE incident_pending (
    dedup_key      text PRIMARY KEY,
    tenant_id      bigint REFERENCES tenants (id) ON DELETE CASCADE,
    kind           text NOT NULL,
    scope          text NOT NULL,
    severity       text NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    evidence       jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX jobs_dead_recent_idx ON jobs (finished_at) INCLUDE (tenant_id) WHERE state = 'dead_lettered';
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0011: restore a backup taken before")
