"""Every job state change writes its outbox event (issue 12, docs/adr/0019): a statement-level
trigger on job_history (orch_job_history_events version 1) announces the history rows a
statement wrote, in the same transaction, as one outbox row per tenant and target state.

- Sources' circuits, schedules (paused or active) and backfills announce their state
  changes through a row trigger that fires only when the state column changed
  (orch_row_state_events version 1).
- events.n: how many stream events the row holds (1 for every row but a job batch); the
  relay numbers a row with n consecutive numbers, and events.seq becomes the row's last.

Revision ID: 0013
Revises: 0012
"""

from importlib import resources

from alembic import op

revision = "0013"
down_revision = "0012"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_job_history_events", 1), ("orch_row_state_events", 1))


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN n integer NOT NULL DEFAULT 1 CHECK (n >= 1)")
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))
    op.execute(
        """
CREATE TRIGGER job_history_events AFTER INSERT ON job_history
    REFERENCING NEW TABLE AS orch_new_history
    FOR EACH STATEMENT EXECUTE FUNCTION orch_job_history_events();

CREATE TRIGGER sources_circuit_events AFTER UPDATE OF circuit_state ON sources
    FOR EACH ROW WHEN (OLD.circuit_state IS DISTINCT FROM NEW.circuit_state)
    EXECUTE FUNCTION orch_row_state_events('source.circuit_', 'source_id', 'circuit_state');
CREATE TRIGGER schedules_state_events AFTER UPDATE OF paused ON schedules
    FOR EACH ROW WHEN (OLD.paused IS DISTINCT FROM NEW.paused)
    EXECUTE FUNCTION orch_row_state_events('schedule.', 'schedule_id', 'paused', 'paused', 'active');
CREATE TRIGGER backfills_state_events AFTER UPDATE OF state ON backfills
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION orch_row_state_events('backfill.', 'backfill_id', 'state');
"""
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0013: restore a backup taken before")
