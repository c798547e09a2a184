"""DAG runs: run state and keys, trigger rules, parent counts, results passed downstream,
the skipped state, and the functions and trigger that move runs on when their jobs end.

Revision ID: 0005
Revises: 0004
"""

from importlib import resources

from alembic import op

revision = "0005"
down_revision = "0004"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (
    ("orch_trigger_verdict", 1),
    ("orch_dag_advance", 1),
    ("orch_dag_note_ended", 1),
    ("orch_dag_jobs_ended", 1),
)

#: core.domain.states when this migration was written (a test checks the database against
#: the Python table; a later change is a new migration).
STATES = (
    "pending",
    "queued",
    "leased",
    "running",
    "throttled",
    "retrying",
    "succeeded",
    "dead_lettered",
    "canceled",
    "upstream_failed",
    "skipped",
)
NEW_TRANSITIONS = (("pending", "skip", "skipped"),)
TRIGGER_RULES = ("all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed")
RUN_STATES = ("running", "succeeded", "failed", "canceled")


def _list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SCHEMA = f"""
ALTER TABLE jobs DROP CONSTRAINT jobs_state_valid;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_valid CHECK (state IN ({_list(STATES)})) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_state_valid;
INSERT INTO job_transitions (from_state, event, to_state)
VALUES {", ".join(f"('{f}', '{e}', '{t}')" for f, e, t in NEW_TRANSITIONS)}
ON CONFLICT DO NOTHING;

-- A run: its own state, explicit (never read off its last jobs), and how many of its
-- current jobs have not ended (jobs_live; 0 ends the run, orch_dag_advance).
ALTER TABLE runs
    ADD COLUMN name text NOT NULL DEFAULT '',
    ADD COLUMN state text NOT NULL DEFAULT 'running' CONSTRAINT runs_state_valid CHECK (state IN ({_list(RUN_STATES)})),
    ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 256),
    ADD COLUMN spec_digest text,
    ADD COLUMN jobs_total integer NOT NULL DEFAULT 0 CHECK (jobs_total >= 0),
    ADD COLUMN jobs_live integer NOT NULL DEFAULT 0 CHECK (jobs_live >= 0),
    ADD COLUMN max_jobs integer NOT NULL DEFAULT 10000 CHECK (max_jobs >= 1),
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN started_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN finished_at timestamptz,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT runs_live_le_total CHECK (jobs_live <= jobs_total),
    ADD CONSTRAINT runs_finished_when_ended CHECK ((state = 'running') = (finished_at IS NULL));
-- One run per idempotency key and tenant.
CREATE UNIQUE INDEX runs_idempotency_uq ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The console and CLI: a tenant's runs newest first; runs by state; runs that ended lately.
CREATE INDEX runs_tenant_idx ON runs (tenant_id, id DESC);
CREATE INDEX runs_state_idx ON runs (state, id DESC);
CREATE INDEX runs_finished_idx ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- Each job of a run: its key, trigger rule, and how its parents have ended so far. A replay
-- adds a new job for a key and marks the old one not current: history is never rewritten,
-- and one current job per key is what the run's state and views use.
CREATE TABLE run_jobs (
    job_id         bigint PRIMARY KEY REFERENCES jobs (id),
    run_id         bigint NOT NULL REFERENCES runs (id),
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    trigger_rule   text NOT NULL CONSTRAINT run_jobs_rule_valid CHECK (trigger_rule IN ({_list(TRIGGER_RULES)})),
    allow_failure  boolean NOT NULL DEFAULT false,
    -- The job whose handler added it (ctx.spawn), NULL for jobs of the submitted run.
    spawned_by     bigint REFERENCES jobs (id),
    current        boolean NOT NULL DEFAULT true,
    deps_total     integer NOT NULL DEFAULT 0,
    deps_ok        integer NOT NULL DEFAULT 0,
    deps_failed    integer NOT NULL DEFAULT 0,
    deps_skipped   integer NOT NULL DEFAULT 0,
    CONSTRAINT run_jobs_deps CHECK (
        least(deps_ok, deps_failed, deps_skipped) >= 0 AND deps_ok + deps_failed + deps_skipped <= deps_total)
);
CREATE UNIQUE INDEX run_jobs_key_uq ON run_jobs (run_id, key) WHERE current;
CREATE INDEX run_jobs_run_idx ON run_jobs (run_id, job_id);
CREATE INDEX run_jobs_spawned_idx ON run_jobs (spawned_by) WHERE spawned_by IS NOT NULL;

-- What a handler returned (JSON, at most 64 KiB encoded), written by the statement that
-- records its success; its children read it.
CREATE TABLE job_results (
    job_id      bigint PRIMARY KEY REFERENCES jobs (id),
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    result      jsonb NOT NULL,
    size_bytes  integer NOT NULL CHECK (size_bytes BETWEEN 0 AND 65536),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Runs that ended, by tenant and state (orch_runs_finished_total).
CREATE TABLE run_counters (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    state      text NOT NULL,
    finished   bigint NOT NULL,
    PRIMARY KEY (tenant_id, state)
);

-- Jobs of runs released by a finishing transaction whose doorbells are still to ring: the
-- finisher takes its runs' rows after commit and rings them (ring_unrung); the scheduler
-- rings what a crash left here past the grace. A queue of its own, so ringing deletes a few
-- small rows instead of updating the jobs (whose updates are not HOT when they touch state).
CREATE TABLE dag_released (
    job_id  bigint PRIMARY KEY,
    run_id  bigint NOT NULL,
    queue   text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dag_released_run_idx ON dag_released (run_id);

-- Edges carry their run: a run's graph is one index range, however large the ledger. The
-- foreign keys to jobs go (as job_history's never had one): edges are written only in the
-- transaction that creates their jobs, and two checks per edge cost a 20,000-edge submit
-- a third of its time.
ALTER TABLE dag_edges ADD COLUMN run_id bigint,
    DROP CONSTRAINT dag_edges_parent_id_fkey,
    DROP CONSTRAINT dag_edges_child_id_fkey;
CREATE INDEX dag_edges_run_idx ON dag_edges (run_id);
"""

TERMINAL = ("succeeded", "dead_lettered", "canceled", "upstream_failed", "skipped")

# A row trigger notes the jobs of runs a statement ends, a statement trigger moves their runs
# on once per statement (docs/adr/0014). Both WHEN clauses are evaluated without calling a
# function body: statements that end no job of a run (every plain job's) pay only for them.
# The row trigger is BEFORE: it runs on the locked, re-checked row that is about to change,
# while the statement trigger's WHEN is evaluated as the statement ends, before any AFTER
# row trigger would have run.
TRIGGER = f"""
CREATE TRIGGER jobs_dag_note BEFORE UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.run_id IS NOT NULL AND NEW.state IN ({_list(TERMINAL)}) AND OLD.state NOT IN ({_list(TERMINAL)})
          AND current_setting('orch.dag_advancing', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION orch_dag_note_ended();
CREATE TRIGGER jobs_dag_advance AFTER UPDATE ON jobs
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('orch.dag_ended', true), '') <> '')
    EXECUTE FUNCTION orch_dag_jobs_ended();
"""


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    op.execute(SCHEMA)
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))
    op.execute(TRIGGER)


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0005: restore a backup taken before")
