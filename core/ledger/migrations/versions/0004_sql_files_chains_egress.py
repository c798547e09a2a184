"""Database functions installed from versioned files; one ledger whatever version of earlier
migrations built it; wait reasons on history rows; audit chains per tenant; what a source's
jobs may fetch; log lines written once.

Revision ID: 0004
Revises: 0003
"""

from importlib import resources

from alembic import op

revision = "0004"
down_revision = "0003"

#: The function versions this migration installs, from core/ledger/sql/functions/NAME.vN.sql.
#: Frozen with the migration: a later change to a function is a new file and a new migration.
FUNCTIONS = (
    ("orch_bucket_tokens", 1),
    ("orch_holds_slot", 1),
    ("orch_tenant_backlog", 1),
    ("orch_circuit_learns", 1),
    ("orch_bucket_learns", 1),
    ("orch_admit", 2),
    ("orch_record_outcomes", 2),
    ("audit_log_append_only", 1),
)

#: core.domain.states.WaitReason when this migration was written (a test checks that the
#: database's CHECKs still equal the Python enum; a change is a new migration).
WAIT_REASONS = ("paused", "blackout", "circuit_open", "quota", "rate_limited", "backpressure")

# Migrations 0001 to 0003 were edited after ledgers had been built with them. Make every
# such ledger equal to what they say now: the storage settings of the queue table, the
# submit counters, the active-per-source index (once it also held jobs without a source) and
# the history index of the flow views. Each step is a no-op where it is already so.
RECONCILE = """
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05,
    fillfactor = 85
);
CREATE TABLE IF NOT EXISTS submit_counters (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    job_type   text NOT NULL,
    submitted  bigint NOT NULL,
    PRIMARY KEY (tenant_id, job_type)
);
DO $do$
BEGIN
    IF (SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid WHERE c.relname = 'jobs_active_source_idx')
       NOT LIKE '%source_id IS NOT NULL%' THEN
        DROP INDEX jobs_active_source_idx;
        CREATE INDEX jobs_active_source_idx ON jobs (source_id)
            WHERE state IN ('leased', 'running') AND source_id IS NOT NULL;
    END IF;
END
$do$;
CREATE INDEX IF NOT EXISTS job_history_flow_idx ON job_history (at) WHERE event IN ('deny', 'throttle');
"""


def _reasons() -> str:
    return ", ".join(f"'{r}'" for r in WAIT_REASONS)


SCHEMA = f"""
-- Why a job waited, on the history row that sent it to wait (deny, throttle): the views
-- count denials by it instead of parsing the reason text. Rows written before are filled in
-- from that text, which starts with the wait reason.
ALTER TABLE job_history ADD COLUMN wait_reason text;
ALTER TABLE job_history ADD CONSTRAINT job_history_wait_reason_valid
    CHECK (wait_reason IN ({_reasons()})) NOT VALID;
UPDATE job_history SET wait_reason = CASE
        WHEN event = 'throttle' THEN 'rate_limited'
        WHEN split_part(reason, ' ', 1) IN ({_reasons()}) THEN split_part(reason, ' ', 1) END
    WHERE event IN ('deny', 'throttle') AND wait_reason IS NULL;
ALTER TABLE job_history VALIDATE CONSTRAINT job_history_wait_reason_valid;

-- What a source's jobs may fetch: its own host, and only public addresses unless it
-- allows private ones (loopback, RFC 1918, link-local, ...).
ALTER TABLE sources ADD COLUMN allow_private boolean NOT NULL DEFAULT false;

-- Log lines carry their number within the attempt; a batch a worker writes again after its
-- connection broke adds no line twice. Lines written before have none.
ALTER TABLE job_logs ADD COLUMN seq integer;
-- One line per (job, attempt, number): insert_logs relies on it (ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX job_logs_line_uq ON job_logs (job_id, attempt, seq) WHERE seq IS NOT NULL;

-- Audit chains per tenant (docs/adr/0012-audit-chains-per-tenant.md). Rows written from now on
-- belong to a chain (a tenant's name, or '*' for actions across tenants) at a place in it;
-- rows written before form the legacy chain (chain NULL), which this migration closes.
ALTER TABLE audit_log ADD COLUMN chain text, ADD COLUMN chain_seq bigint,
    ADD CONSTRAINT audit_log_chain_seq CHECK ((chain IS NULL) = (chain_seq IS NULL));
-- One row per place in a chain: two appends can never both follow the same row.
CREATE UNIQUE INDEX audit_log_chain_uq ON audit_log (chain, chain_seq) WHERE chain IS NOT NULL;
-- Where the legacy chain ends: its last row and hash (the anchor every new chain starts
-- from) and its length, so verify notices a removed tail. One row.
CREATE TABLE audit_legacy (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id    bigint,
    last_hash  text NOT NULL,
    row_count  bigint NOT NULL
);
INSERT INTO audit_legacy (last_id, last_hash, row_count)
SELECT max(id), coalesce((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), repeat('0', 64)), count(*)
FROM audit_log;
-- Each chain's head: appends lock this row (not a global lock), so tenants never wait on
-- each other; verify checks a chain ends at its head.
CREATE TABLE audit_chains (
    chain        text PRIMARY KEY,
    anchor_hash  text NOT NULL,
    head_seq     bigint NOT NULL,
    head_hash    text NOT NULL,
    head_id      bigint
);
"""


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    op.execute(RECONCILE)
    op.execute(SCHEMA)
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0004: restore a backup taken before")
