"""What a job of a run asks the ledger through its JobContext: its parents (results and
artifacts), an artifact's bytes, and jobs it spawns into its run. The Pump's LedgerPort
methods call these."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from core import control
from core.control import Doorbell
from core.control.common import ring
from core.domain import errors
from core.ledger import runs as ledger_runs
from worker.sdk import ActiveJob, ArtifactInfo, ParentInfo, SpawnSpec


def parents(engine: sa.Engine, job: ActiveJob) -> dict[str, ParentInfo]:
    with engine.connect() as conn:
        rows = ledger_runs.parents_of(conn, job.id)
    return {
        r["key"]: ParentInfo(
            key=r["key"],
            job_id=int(r["id"]),
            state=r["state"],
            result=r["result"],
            artifacts=tuple(
                ArtifactInfo(int(a["id"]), a["name"], a["media_type"], a["sha256"], int(a["size_bytes"]))
                for a in r["artifacts"]
            ),
        )
        for r in rows
    }


def read_artifact(engine: sa.Engine, job: ActiveJob, artifact_id: int) -> bytes:
    with engine.connect() as conn:
        data = ledger_runs.artifact_data(conn, job.id, artifact_id)
    if data is None:
        raise errors.NotFound(f"artifact {artifact_id} is not an artifact of a parent of job {job.id}")
    return data


def spawn(
    engine: sa.Engine, owner: str, doorbell: Doorbell, job: ActiveJob, specs: Sequence[SpawnSpec]
) -> dict[str, int]:
    own = job.key or ""
    jobs = [
        control.JobSpec(
            tenant=job.tenant,
            job_type=s.job_type,
            payload=dict(s.payload),
            priority=s.priority,
            max_attempts=s.max_attempts,
            correlation_id=job.correlation_id,
            source=s.source,
            key=s.key,
            after=tuple([own] if s.after is None else s.after),
            trigger_rule=s.trigger_rule,
            allow_failure=s.allow_failure,
        )
        for s in specs
    ]
    made, rung = control.spawn(engine, job_id=job.id, lease_id=job.lease_id, specs=jobs, actor=owner)
    job.has_children = job.has_children or any(s.after is None or own in s.after for s in specs)
    ring(doorbell, rung)
    return made
