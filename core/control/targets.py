"""What a schedule tick or a backfill window fires: one job (a type, payload and source) or
one run (a run document, as `orch runs submit` reads from a file). Stored as JSON in the
ledger and turned back into a JobSpec or RunSpec when it fires."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.control import common
from core.control.jobs import JobSpec
from core.control.runs import RunSpec
from core.domain import dag, errors, payloads
from core.ledger import flow as ledger_flow

#: The fields a job of a run document may have.
JOB_FIELDS = frozenset(
    {"key", "type", "payload", "source", "after", "trigger_rule", "allow_failure", "max_attempts", "priority"}
)
_FIELD_KINDS: tuple[tuple[str, type], ...] = (
    ("key", str),
    ("type", str),
    ("payload", dict),
    ("source", str),
    ("after", list),
    ("trigger_rule", str),
    ("allow_failure", bool),
    ("max_attempts", int),
    ("priority", int),
)


def run_spec(
    doc: Any, tenant: str, *, where: str, default_name: str, idempotency_key: str | None = None, max_jobs: int
) -> RunSpec:
    """A RunSpec from a run document ({"name": ..., "jobs": [{"key", "type", ...}]}). Raises
    InvalidInput naming `where` and the problem in one line."""
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise errors.InvalidInput(f'{where} must be an object {{"name": ..., "jobs": [...]}}')
    extra = sorted(set(doc) - {"name", "jobs"})
    if extra:
        raise errors.InvalidInput(f"{where}: unknown field {extra[0]!r} (fields: name, jobs)")
    name = doc.get("name", default_name)
    if not isinstance(name, str):
        raise errors.InvalidInput(f"{where}: name must be a string")
    return RunSpec(
        tenant=tenant,
        name=name,
        jobs=[_job(where, n, j, tenant) for n, j in enumerate(doc["jobs"])],
        idempotency_key=idempotency_key,
        max_jobs=max_jobs,
    )


def _job(where_doc: str, n: int, doc: Any, tenant: str) -> JobSpec:
    where = f"{where_doc}, job {n + 1}"
    if not isinstance(doc, dict):
        raise errors.InvalidInput(f"{where}: must be an object with key and type")
    extra = sorted(set(doc) - JOB_FIELDS)
    if extra:
        raise errors.InvalidInput(f"{where}: unknown field {extra[0]!r} (fields: {', '.join(sorted(JOB_FIELDS))})")
    for field, kinds in _FIELD_KINDS:
        value = doc.get(field)
        if value is not None and (not isinstance(value, kinds) or (kinds is int and isinstance(value, bool))):
            raise errors.InvalidInput(f"{where}: {field} must be a {kinds.__name__}")
    if "key" not in doc or "type" not in doc:
        raise errors.InvalidInput(f"{where}: needs a key and a type")
    after = doc.get("after") or []
    if not all(isinstance(p, str) for p in after):
        raise errors.InvalidInput(f"{where}: after must list job keys (strings)")
    return JobSpec(
        tenant=tenant,
        job_type=doc["type"],
        payload=doc.get("payload") or {},
        source=doc.get("source"),
        key=doc["key"],
        after=tuple(after),
        trigger_rule=doc.get("trigger_rule") or "all_success",
        allow_failure=bool(doc.get("allow_failure", False)),
        max_attempts=doc.get("max_attempts"),
        priority=doc.get("priority") or 0,
    )


@dataclass(frozen=True)
class Target:
    """kind "job": `job` holds type, payload, source, priority, max_attempts; kind "run":
    `run` holds the run document."""

    kind: str
    job: Mapping[str, Any] | None = None
    run: Mapping[str, Any] | None = None

    @classmethod
    def of_job(
        cls,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
    ) -> Target:
        doc: dict[str, Any] = {"type": job_type, "payload": dict(payload or {})}
        if source is not None:
            doc["source"] = source
        if priority:
            doc["priority"] = priority
        if max_attempts is not None:
            doc["max_attempts"] = max_attempts
        return cls("job", job=doc)

    @classmethod
    def of_run(cls, doc: Mapping[str, Any]) -> Target:
        return cls("run", run=dict(doc))

    @classmethod
    def load(cls, kind: str, doc: Mapping[str, Any]) -> Target:
        return cls("job", job=dict(doc)) if kind == "job" else cls("run", run=dict(doc))

    def doc(self) -> dict[str, Any]:
        body = self.job if self.kind == "job" else self.run
        return dict(body or {})

    def source(self) -> str | None:
        return None if self.job is None else self.job.get("source")

    def stream_type(self) -> str:
        """The watermark's job type: the job's type, or "run:<name>"."""
        if self.job is not None:
            return str(self.job["type"])
        return f"run:{(self.run or {}).get('name', 'run')}"

    def digest(self) -> str:
        """What makes two firings the same stream: the job's payload, or the whole run document."""
        body = self.job.get("payload", {}) if self.job is not None else self.run
        return payloads.digest(payloads.check_payload(dict(body or {})))

    def job_spec(self, tenant: str, *, priority: int | None = None, correlation_id: str | None = None) -> JobSpec:
        assert self.job is not None
        return JobSpec(
            tenant=tenant,
            job_type=str(self.job["type"]),
            payload=self.job.get("payload") or {},
            source=self.job.get("source"),
            priority=int(self.job.get("priority", 0)) if priority is None else priority,
            max_attempts=self.job.get("max_attempts"),
            correlation_id=correlation_id,
        )

    def run_spec(self, tenant: str, *, max_jobs: int, priority: int | None = None) -> RunSpec:
        spec = run_spec(self.run, tenant, where="run document", default_name="run", max_jobs=max_jobs)
        if priority is None:
            return spec
        return dataclasses.replace(spec, jobs=[dataclasses.replace(j, priority=priority) for j in spec.jobs])


def check_target(conn: sa.Connection, target: Target, tenant: str, *, max_jobs: int) -> int | None:
    """Check a target before it is stored: the job type is known, the payload canonical, the
    source exists, the run document is a valid DAG. Returns the source id. Raises
    InvalidInput, UnknownJobType, NotFound, DagCycle."""
    types = common.catalog.job_types(conn, set())
    if target.kind == "job":
        assert target.job is not None
        jt = str(target.job.get("type", ""))
        if jt not in types:
            types = common.catalog.job_types(conn, {jt})
        if jt not in types:
            known = ", ".join(sorted(types)) or "none registered"
            raise errors.UnknownJobType(f"unknown job type {jt!r} (known: {known}); start a worker that registers it")
        payloads.check_payload(dict(target.job.get("payload") or {}))
        priority = target.job.get("priority", 0)
        if not isinstance(priority, int) or not -common.MAX_PRIORITY <= priority <= common.MAX_PRIORITY:
            raise errors.InvalidInput(f"priority must be between {-common.MAX_PRIORITY} and {common.MAX_PRIORITY}")
    else:
        spec = target.run_spec(tenant, max_jobs=max_jobs)
        if not spec.jobs:
            raise errors.InvalidInput("a run needs at least one job")
        dag.check_graph({str(j.key): tuple(j.after) for j in spec.jobs})
        missing = sorted({j.job_type for j in spec.jobs} - types.keys())
        if missing:
            types = common.catalog.job_types(conn, set(missing))
            missing = sorted({j.job_type for j in spec.jobs} - types.keys())
        if missing:
            raise errors.UnknownJobType(f"unknown job type {missing[0]!r}; start a worker that registers it")
    source = target.source()
    if source is None:
        return None
    found = ledger_flow.source_ids(conn, [(tenant, source)])
    if (tenant, source) not in found:
        raise errors.NotFound(
            f"tenant {tenant!r} has no source {source!r}; "
            f"add it with `orch sources add --tenant {tenant} --name {source}`"
        )
    return found[(tenant, source)]
