"""The row rules of jobs as one CHECK that calls a PL/pgSQL function, orch_check_job version
1 (issue 11, docs/adr/0024), instead of ten CHECKs.

PostgreSQL builds a table's CHECK expressions again for every statement node that inserts
or updates rows of it: it parses each expression's stored node text (10 KB for the ten) and
simplifies it. That cost every claim, success and submit about 25 µs per node that writes
jobs more than the function's call does, whatever the number of rows, and a claim's part of
it ran while the claim held its flow-control rows locked. PL/pgSQL keeps the function
compiled for the session; a row costs about 0.5 µs more than through the ten CHECKs (0.92
against 0.44 µs, bench/row_checks.py), which a batch submit of 5,000 jobs pays (about 1.4%
of its statement). A row that breaks a rule is still refused with the name and message of
the CHECK that held the rule: the function raises check_violation with it.

job_history keeps its three CHECKs: the same design for them saved the build too, but cost
a row 0.56 µs against 0.17, and a batch submit writes a history row per job (on 1,000 rows
it was 380 µs slower; on a worker's 24, 15 µs faster).

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
