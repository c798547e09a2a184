"""History rows that carry their job's tenant, type and run (issue 11, docs/adr/0023):
orch_job_history_events version 2 and orch_dag_advance version 3.

- job_history.tenant_id, job_type, run_id: copies of the job's (which never change once it
  is inserted), written by every live writer of job_history from the job row it has just
  updated or inserted. They exist for the events trigger, which read them with one
  primary-key lookup of jobs per history row: a third of its time, and all of it spent
  while a claim held its bucket and quota rows locked. NULL in rows written before this
  revision and in rows a bundle import loads (with triggers off); the trigger still looks
  those up, so a writer of the previous release keeps announcing its changes during a
  rolling upgrade. Adding nullable columns without a default rewrites nothing.
- orch_dag_advance version 3 writes them for the jobs a DAG release moves; the transition
  statements and submit write them from core/ledger (no function of the ledger's).

Revision ID: 0019
Revises: 0018
"""

from importlib import resources

from alembic import op

revision = "0019"
down_revision = "0018"

#: Installed from core/ledger/sql/functions/NAME.vN.sql; frozen with this migration.
FUNCTIONS = (("orch_job_history_events", 2), ("orch_dag_advance", 3))


def _function(name: str, version: int) -> str:
    path = resources.files("core.ledger").joinpath("sql", "functions", f"{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def upgrade() -> None:
    op.execute(
        "ALTER TABLE job_history ADD COLUMN tenant_id bigint, ADD COLUMN job_type text, ADD COLUMN run_id bigint"
    )
    for name, version in FUNCTIONS:
        op.execute(_function(name, version))


def downgrade() -> None:
    raise NotImplementedError("the ledger cannot go back below revision 0019: restore a backup taken before")
