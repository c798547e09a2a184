"""`orch runs` as automation uses it: JSON shapes, the console link, bad run files as one line
and a non-zero exit with nothing written, cancel and replay with reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Services, session_namespace
from tests.integration.test_cli import ok_json, orch
from tests.integration.test_dag_runs import claim, finish, work

T = "cli-runs"


def run_file(tmp_path: Path, doc: Any, name: str = "run.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


PIPELINE = {
    "name": "ingest",
    "jobs": [
        {"key": "fetch", "type": "noop"},
        {"key": "parse", "type": "noop", "after": ["fetch"]},
        {"key": "cleanup", "type": "noop", "after": ["parse"], "trigger_rule": "all_done"},
    ],
}


def test_submit_show_graph_list(services: Services, ledger: sa.Engine, tmp_path: Path) -> None:
    path = run_file(tmp_path, PIPELINE)
    out = ok_json(orch(services, "runs", "submit", "--tenant", T, "--file", path, "--json"))
    assert set(out) >= {"run_id", "jobs"} and sorted(out["jobs"]) == ["cleanup", "fetch", "parse"]
    run_id = out["run_id"]
    text = orch(services, "runs", "submit", "--tenant", T, "--file", path)
    assert text.returncode == 0 and f"/Runs?run={run_id + 1}" in text.stdout

    work(ledger)
    shown = ok_json(orch(services, "runs", "show", str(run_id), "--json"))
    assert shown["state"] == "succeeded" and shown["url"].endswith(f"/Runs?run={run_id}")
    assert [j["key"] for j in shown["jobs"]] == ["fetch", "parse", "cleanup"]
    assert shown["critical_path"]["keys"] == ["fetch", "parse", "cleanup"]
    assert isinstance(shown["critical_path"]["seconds"], float)
    human = orch(services, "runs", "show", str(run_id))
    assert "critical path" in human.stdout and "fetch -> parse -> cleanup" in human.stdout

    graph = ok_json(orch(services, "runs", "graph", str(run_id), "--format", "json"))
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {("fetch", "parse"), ("parse", "cleanup")}
    dot = orch(services, "runs", "graph", str(run_id), "--format", "dot")
    assert dot.stdout.startswith("digraph") and '"fetch" -> "parse"' in dot.stdout

    listed = ok_json(orch(services, "runs", "list", "--tenant", T, "--state", "succeeded", "--json"))
    assert [r["id"] for r in listed["runs"]] == [run_id + 1, run_id]
    assert listed["runs"][0]["jobs_done"] == 3


def test_idempotency_key(services: Services, ledger: sa.Engine, tmp_path: Path) -> None:
    path = run_file(tmp_path, PIPELINE)
    args = ["runs", "submit", "--tenant", T, "--file", path, "--idempotency-key", "k1", "--json"]
    first, again = ok_json(orch(services, *args)), ok_json(orch(services, *args))
    assert first["run_id"] == again["run_id"] and again["created"] is False
    other = run_file(tmp_path, {**PIPELINE, "name": "other"}, "other.json")
    proc = orch(services, "runs", "submit", "--tenant", T, "--file", other, "--idempotency-key", "k1")
    assert proc.returncode != 0 and "already belongs to run" in proc.stderr


def test_cancel_and_replay(services: Services, ledger: sa.Engine, tmp_path: Path) -> None:
    run_id = ok_json(orch(services, "runs", "submit", "--tenant", T, "--file", run_file(tmp_path, PIPELINE), "--json"))[
        "run_id"
    ]
    [fetch] = claim(ledger)
    finish(ledger, [fetch], fail=True)
    work(ledger)
    assert ok_json(orch(services, "runs", "show", str(run_id), "--json"))["state"] == "failed"
    no_reason = orch(services, "runs", "replay", str(run_id))
    assert no_reason.returncode != 0 and "reason" in no_reason.stderr
    dry = ok_json(orch(services, "runs", "replay", str(run_id), "--dry-run", "--json"))
    assert dry == {"to_run": ["fetch", "parse", "cleanup"], "kept": []}
    done = ok_json(
        orch(services, "runs", "replay", str(run_id), "--reason", "upstream back", "--ticket", "T-1", "--json")
    )
    assert done["attempt"] == 2 and sorted(done["new_jobs"]) == ["cleanup", "fetch", "parse"]
    canceled = ok_json(orch(services, "runs", "cancel", str(run_id), "--reason", "wrong day", "--json"))
    assert canceled["canceled"] == 3
    assert ok_json(orch(services, "runs", "show", str(run_id), "--json"))["state"] == "canceled"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "is not valid JSON"),
        (
            {"jobs": [{"key": "a", "type": "noop", "after": ["b"]}, {"key": "b", "type": "noop", "after": ["a"]}]},
            "cycle",
        ),
        ({"jobs": [{"key": "a", "type": "noop", "after": ["zz"]}]}, "'zz', which is not a job of the run"),
        ({"jobs": [{"key": "a", "type": "noop"}, {"key": "a", "type": "noop"}]}, "duplicate job key 'a'"),
        ({"jobs": [{"key": "a", "type": "noop", "trigger_rule": "sometimes"}]}, "unknown trigger rule"),
        ({"jobs": [{"key": "a", "type": "nope.nope"}]}, "unknown job type"),
        ({"jobs": [{"key": "a", "type": "noop", "colour": "red"}]}, "unknown field 'colour'"),
        ({"jobs": [{"key": f"j{i}", "type": "noop"} for i in range(11)]}, "at most 10"),
    ],
)
def test_bad_run_files_are_one_line_and_write_nothing(
    services: Services, ledger: sa.Engine, tmp_path: Path, doc: Any, message: str
) -> None:
    proc = orch_limited(services, "runs", "submit", "--tenant", T, "--file", run_file(tmp_path, doc))
    assert proc.returncode != 0
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 0


def orch_limited(services: Services, *args: str) -> Any:
    """The CLI with ORCH_RUN_MAX_JOBS=10."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {
        "PATH": "/usr/bin:/bin",
        "ORCH_DATABASE_URL": services.database_url,
        "ORCH_REDIS_URL": services.redis_url,
        "ORCH_BROKER_NAMESPACE": session_namespace("cli"),
        "ORCH_RUN_MAX_JOBS": "10",
        "PYTHONPATH": str(ROOT),
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
