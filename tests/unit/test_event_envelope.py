"""The orch.event.v1 envelope (core/domain/events.py): a job batch row expands to one event
per change, numbered seq - n + 1 .. seq, and a reader's cursor inside a row skips exactly
what it already saw."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from core.domain import events

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "orch.event.v1.json").read_text())
BATCH = {
    "seq": 12,
    "n": 3,
    "id": 40,
    "at": "2026-12-02T10:00:00.000000Z",
    "tenant": "acme",
    "kind": "job.succeeded",
    "payload": {
        "actor": "worker-1",
        "jobs": [
            [7, "noop", None, "succeed", "running", "succeeded", 1, None],
            [8, "noop", 3, "succeed", "running", "succeeded", 2, None],
            [9, "fetch", None, "succeed", "running", "succeeded", 1, "done"],
        ],
    },
}


def test_a_batch_row_is_one_event_per_job_numbered_up_to_its_seq() -> None:
    out = events.expand(BATCH)
    assert [e["sequence"] for e in out] == ["10", "11", "12"]
    assert [e["subject"] for e in out] == ["job/7", "job/8", "job/9"]
    assert [e["id"] for e in out] == ["40.0", "40.1", "40.2"]
    assert out[1]["correlationid"] == "run/3" and out[0]["correlationid"] == "job/7"
    assert out[1]["idempotencykey"] == "orch-orch.job.succeeded-8-2"
    assert all(e["type"] == "orch.job.succeeded" and e["actor"] == "worker-1" for e in out)
    assert out[2]["data"] == {
        "job_id": 9,
        "job_type": "fetch",
        "run_id": None,
        "event": "succeed",
        "from_state": "running",
        "attempt": 1,
        "reason": "done",
        "state": "succeeded",
    }
    for e in out:
        jsonschema.validate(e, SCHEMA)


def test_a_cursor_inside_a_row_resumes_after_it() -> None:
    assert [e["sequence"] for e in events.expand(BATCH, after=10)] == ["11", "12"]
    assert events.expand(BATCH, after=12) == []
    single = {**BATCH, "seq": 5, "n": 1, "kind": "incident.opened", "payload": {"incident_id": 2, "actor": "orch"}}
    assert [e["type"] for e in events.expand(single, after=4)] == ["orch.incident.opened"]
    assert events.expand(single, after=5) == []


def test_a_submitted_job_names_the_state_it_starts_in() -> None:
    row = {
        **BATCH,
        "kind": "job.submitted",
        "payload": {"actor": "cli", "jobs": [[1, "noop", None, "submit", None, "queued", 0, None]]},
        "seq": 1,
    }
    (e,) = events.expand(row)
    assert e["type"] == "orch.job.submitted" and e["data"]["from_state"] is None and e["data"]["state"] == "queued"
    jsonschema.validate(e, SCHEMA)


def test_a_secret_in_a_failure_reason_is_masked() -> None:
    row = {**BATCH, "kind": "job.retrying", "n": 1, "seq": 1}
    row["payload"] = {
        "actor": "w",
        "jobs": [[1, "fetch", None, "fail", "running", "retrying", 1, "http_4xx: token=abc123"]],
    }
    (e,) = events.expand(row)
    assert e["data"]["reason"] == "http_4xx: token=***"
