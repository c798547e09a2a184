"""The row rules of jobs as one CHECK that calls a PL/pgSQL function, orch_check_job version
1 (issue 11, docs/adr/0024), instead of ten CHECKs.

PostgreSQL builds a table's CHECK expressions again for every statement node that inserts
or updates rows of it: it parses each expression's stored node text (10 KB for the ten) and
simplifies it. That cost every claim, success and submit about 25 µs per node that writes
jobs, whatever the number of rows, much of it while a claim holds its flow-control rows
locked. A call of the function is a short expression; PL/pgSQL keeps the function compiled
for the session, and a row costs what the ten CHECKs cost it. A row that breaks a rule is
still refused with the name and message of the CHECK that held the rule: the function
raises check_violation with it.

job_history keeps its three CHECKs: the same function for them costs a row about 1.8 µs
against 0.4 (bench/row_checks.py), more than the build saves from about 15 rows a statement
on, and a batch submit writes thousands.

The new CHECK is added NOT VALID and the old ones dropped in the same ALTER TABLE: the rules
are the same, every existing row passed the old CHECKs, and a VALIDATE would read all of
jobs under the ACCESS EXCLUSIVE lock this ALTER holds. New and updated rows are checked
either way.

Revision ID: 0020
Revises: 0019
"""

from importlib import resources

from alembic import op

revision = "0020"
down_revision = "0019"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_check_job", 1),)

#: The CHECKs orch_check_job holds since this revision; it raises their names.
DROPPED = (
    "jobs_state_valid",
    "jobs_wait_reason_valid",
    "jobs_wait_reason",
    "jobs_wait_until",
    "jobs_lease_held",
    "jobs_attempt_check",
    "jobs_max_attempts_check",
    "jobs_progress_check",
    "jobs_idempotency_key_check",
    "jobs_payload_digest_check",
)


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))
    op.execute(
        "ALTER TABLE jobs ADD CONSTRAINT jobs_row_valid CHECK (orch_check_job(state, wait_reason, not_before,"
        " lease_id, lease_expires_at, attempt, max_attempts, progress, idempotency_key, payload_digest)) NOT VALID, "
        + ", ".join(f"DROP CONSTRAINT {name}" for name in DROPPED)
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0020: restore a backup taken before")
