"""The orch.event.v1 envelope (issue 12): an outbox row as a CloudEvents 1.0 event in its
structured JSON form, with Orch's extension attributes. The schema is
docs/schemas/orch.event.v1.json; tests check emitted events against it.

The outbox stores a compact `kind` and `payload` (written in the hot transactions, so kept
small); the envelope is derived from them when an event is read, so what a reader gets does
not depend on what else changed in the ledger since.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.domain.redaction import redact, redact_text

SPECVERSION = "1.0"
#: The value of every envelope's `source` unless the deployment names itself
#: (ORCH_EVENT_SOURCE).
DEFAULT_SOURCE = "urn:orch"
DATACONTENTTYPE = "application/json"
#: Kinds whose payload names what they are about, and the subject's prefix for each key.
_SUBJECTS = (
    ("job_id", "job"),
    ("run_id", "run"),
    ("incident_id", "incident"),
    ("schedule_id", "schedule"),
    ("backfill_id", "backfill"),
    ("source_id", "source"),
    ("source", "source"),
)
ENVELOPE_KEYS = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "tenantid",
    "correlationid",
    "idempotencykey",
    "actor",
    "sequence",
    "data",
)


def event_type(kind: str, payload: Mapping[str, Any]) -> str:
    """`orch.<noun>.<verb>`, e.g. orch.job.succeeded. A run's change is stored as
    run.state with the state it reached."""
    if kind == "run.state":
        return f"orch.run.{payload.get('state')}"
    return f"orch.{kind}"


def subject(payload: Mapping[str, Any]) -> str | None:
    for key, prefix in _SUBJECTS:
        if payload.get(key) is not None:
            return f"{prefix}/{payload[key]}"
    target = payload.get("target")
    return str(target) if target else None


#: The fields of one job change in a job batch row's `jobs` arrays (orch_job_history_events).
JOB_FIELDS = ("job_id", "job_type", "run_id", "event", "from_state", "state", "attempt", "reason")


def expand(
    row: Mapping[str, Any], *, after: int = 0, source: str = DEFAULT_SOURCE, limit: int | None = None
) -> list[dict[str, Any]]:
    """The envelopes of one numbered outbox row (seq, id, at, tenant, kind, payload, and n:
    how many events it holds, numbered seq - n + 1 .. seq), skipping those numbered at or
    before `after`, at most `limit` of them. A job batch row (payload `jobs`) holds one
    change per job."""
    payload = row["payload"] or {}
    seq = int(row["seq"])
    jobs = payload.get("jobs") if str(row["kind"]).startswith("job.") else None
    if jobs is None:
        return [envelope(row, source=source)] if seq > after and limit != 0 else []
    first = seq - len(jobs) + 1
    start = max(0, after - first + 1)
    stop = len(jobs) if limit is None else min(len(jobs), start + limit)
    etype = event_type(str(row["kind"]), payload)
    common = {
        "specversion": SPECVERSION,
        "source": source,
        "type": etype,
        "time": _time(row["at"]),
        "datacontenttype": DATACONTENTTYPE,
        "tenantid": row.get("tenant"),
        "actor": payload.get("actor"),
    }
    out = []
    for i in range(start, stop):
        # A job change's keys are JOB_FIELDS, none secret-looking: only its reason (a
        # failure's message) can carry one.
        data = dict(zip(JOB_FIELDS, jobs[i], strict=True))
        if isinstance(data["reason"], str):
            data["reason"] = redact_text(data["reason"])
        job_id, run_id = data["job_id"], data["run_id"]
        out.append(
            {
                **common,
                "id": f"{row['id']}.{i}",
                "subject": f"job/{job_id}",
                "correlationid": f"run/{run_id}" if run_id is not None else f"job/{job_id}",
                "idempotencykey": f"orch-{etype}-{job_id}-{data['attempt']}",
                "sequence": str(first + i),
                "data": data,
            }
        )
    return out


def envelope(row: Mapping[str, Any], *, source: str = DEFAULT_SOURCE, index: int | None = None) -> dict[str, Any]:
    """The envelope of one event: a numbered outbox row holding one (seq, id, at, tenant,
    kind, payload), or one change of a job batch row (`index` within it; expand())."""
    payload = dict(row["payload"] or {})
    etype = event_type(str(row["kind"]), payload)
    actor = payload.pop("actor", None)
    subj = subject(payload)
    if payload.get("job_id") is not None:
        idem = f"orch-{etype}-{payload['job_id']}-{payload.get('attempt', 0)}"
    else:
        idem = f"orch-{etype}-{row['id']}"
    correlation = payload.get("correlation_id") or (
        f"run/{payload['run_id']}" if payload.get("run_id") is not None else subj
    )
    return {
        "specversion": SPECVERSION,
        "id": f"{row['id']}" if index is None else f"{row['id']}.{index}",
        "source": source,
        "type": etype,
        "time": _time(row["at"]),
        "subject": subj,
        "datacontenttype": DATACONTENTTYPE,
        "tenantid": row.get("tenant"),
        "correlationid": correlation,
        "idempotencykey": idem,
        "actor": actor,
        "sequence": str(row["seq"]),
        "data": _masked(payload),
    }


def _masked(payload: dict[str, Any]) -> Any:
    """Secret-looking keys masked at any depth, and `key=value` secrets in the free-text
    reason (a failure's message) too."""
    data = redact(payload)
    if isinstance(data.get("reason"), str):
        data["reason"] = redact_text(data["reason"])
    return data


def redacted_payload(payload: Mapping[str, Any] | None) -> Any:
    """An outbox row's payload as it may leave the ledger (an audit bundle's events.jsonl):
    secret-looking keys masked, and the free-text reasons, the row's own and each of a job
    batch's changes', with `key=value` secrets masked."""
    data = _masked(dict(payload or {}))
    jobs = data.get("jobs")
    if isinstance(jobs, list):
        at = JOB_FIELDS.index("reason")
        data["jobs"] = [
            [redact_text(v) if i == at and isinstance(v, str) else v for i, v in enumerate(change)]
            if isinstance(change, list)
            else change
            for change in jobs
        ]
    return data


def _time(at: datetime | str) -> str:
    if isinstance(at, str):
        return at
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def lost_event(requested: int, oldest: int | None) -> dict[str, Any]:
    """What a reader whose cursor is older than the retention window gets first: an explicit
    note that events were lost, never a silent gap."""
    return {
        "type": "orch.stream.events_lost",
        "after": requested,
        "oldest": oldest,
        "detail": (
            f"events after {requested} were pruned (the oldest retained is {oldest}); "
            "the stream resumes at the oldest retained event"
        ),
    }
