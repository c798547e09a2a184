"""Principals and the audit log; failure fingerprints for error clusters; queue depth samples.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
-- API tokens, stored as sha256 of the token (the token itself is shown once).
CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_sha256  text NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
    subject       text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    tenants       text[],              -- NULL: every tenant
    scopes        text[] NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Append-only, hash-chained record of every control action. Rows are written one at a time
-- under an advisory lock, each hash covering the previous one; `orch audit verify`
-- recomputes the chain.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    subject     text NOT NULL,
    scopes      text[] NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    tenant      text,
    reason      text CHECK (length(reason) <= 256),
    ticket      text CHECK (length(ticket) <= 128),
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   text NOT NULL,
    hash        text NOT NULL UNIQUE
);
-- Filters of the console's audit page.
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant, id DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Failures carry their class, fingerprint and message on the history row of the failing
-- transition, so error clusters are a scan of recent failure rows.
ALTER TABLE job_history ADD COLUMN error_class text, ADD COLUMN fingerprint text, ADD COLUMN message text;
-- Error clusters and trends: recent failure rows.
CREATE INDEX job_history_failures_idx ON job_history (at) WHERE fingerprint IS NOT NULL;

ALTER TABLE jobs ADD COLUMN error_fingerprint text;
-- Burn rate and throughput: jobs finished in a window.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- Dead letters grouped by cluster.
CREATE INDEX jobs_dead_cluster_idx ON jobs (error_fingerprint) WHERE state = 'dead_lettered';

-- Running totals of submitted jobs, kept by the submit statement itself, so the metrics
-- collector reads a counter without scanning jobs.
CREATE TABLE submit_counters (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    job_type   text NOT NULL,
    submitted  bigint NOT NULL,
    PRIMARY KEY (tenant_id, job_type)
);

-- Queue depth over time, sampled by the scheduler (the console's chart); pruned by age.
CREATE TABLE queue_depth_samples (
    at         timestamptz NOT NULL,
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    queue      text NOT NULL,
    state      text NOT NULL,
    count      bigint NOT NULL
);
CREATE INDEX queue_depth_samples_at_idx ON queue_depth_samples (at);
"""
    )
