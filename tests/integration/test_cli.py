"""The `orch` CLI contract used by automation: command names, JSON shapes, exit codes and
one-line errors. Runs the real CLI as a subprocess against the test ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT, Services, session_namespace


def orch(services: Services, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "ORCH_DATABASE_URL": db_url or services.database_url,
        "ORCH_REDIS_URL": services.redis_url,
        "ORCH_BROKER_NAMESPACE": session_namespace("cli"),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_submit_show_stats_json_contract(services: Services, ledger: Any) -> None:
    out = ok_json(
        orch(
            services,
            "submit",
            "--tenant",
            "cli-t",
            "--type",
            "sleep",
            "--payload",
            '{"seconds": 1}',
            "--count",
            "3",
            "--priority",
            "5",
            "--max-attempts",
            "2",
            "--json",
        )
    )
    assert list(out) == ["job_ids"] and len(out["job_ids"]) == 3
    job_id = out["job_ids"][0]

    shown = ok_json(orch(services, "jobs", "show", str(job_id), "--json"))
    job = shown["job"]
    for key in (
        "id",
        "tenant",
        "job_type",
        "state",
        "attempt",
        "max_attempts",
        "error_class",
        "last_error",
        "wait_reason",
        "not_before",
    ):
        assert key in job
    assert (job["id"], job["tenant"], job["job_type"], job["state"]) == (job_id, "cli-t", "sleep", "queued")
    assert (job["attempt"], job["max_attempts"], job["priority"]) == (0, 2, 5)
    assert shown["history"] == [
        {
            "from_state": None,
            "to_state": "queued",
            "event": "submit",
            "at": shown["history"][0]["at"],
            "actor": shown["history"][0]["actor"],
            "reason": None,
            "attempt": 0,
        }
    ]
    assert shown["history"][0]["actor"].startswith("local:")

    stats = ok_json(orch(services, "jobs", "stats", "--tenant", "cli-t", "--json"))
    assert stats["total"] == 3 and stats["by_state"]["queued"] == 3 and stats["by_state"]["succeeded"] == 0

    listed = ok_json(orch(services, "jobs", "list", "--tenant", "cli-t", "--state", "queued", "--limit", "2", "--json"))
    assert [j["id"] for j in listed["jobs"]] == sorted(out["job_ids"], reverse=True)[:2]


def test_idempotency_through_the_cli(services: Services, ledger: Any) -> None:
    first = ok_json(
        orch(
            services,
            "submit",
            "--tenant",
            "t",
            "--type",
            "noop",
            "--idempotency-key",
            "k",
            "--payload",
            '{"a": 1}',
            "--json",
        )
    )
    again = ok_json(
        orch(
            services,
            "submit",
            "--tenant",
            "t",
            "--type",
            "noop",
            "--idempotency-key",
            "k",
            "--payload",
            '{"a": 1}',
            "--json",
        )
    )
    assert first == again
    clash = orch(
        services, "submit", "--tenant", "t", "--type", "noop", "--idempotency-key", "k", "--payload", '{"a": 2}'
    )
    assert clash.returncode == 5
    assert f"job {first['job_ids'][0]}" in clash.stderr


def test_cancel_and_retry(services: Services, ledger: Any) -> None:
    job_id = ok_json(orch(services, "submit", "--tenant", "t", "--type", "noop", "--json"))["job_ids"][0]
    done = orch(services, "jobs", "cancel", str(job_id), "--reason", "not needed", "--ticket", "OPS-1")
    assert done.returncode == 0 and "canceled" in done.stdout
    history = ok_json(orch(services, "jobs", "show", str(job_id), "--json"))["history"]
    assert history[-1]["event"] == "cancel" and history[-1]["reason"] == "not needed"
    entries = ok_json(orch(services, "audit", "list", "--action", "cancel", "--json"))["entries"]
    assert [(e["target"], e["reason"], e["ticket"]) for e in entries] == [(f"job {job_id}", "not needed", "OPS-1")]
    no_reason = orch(services, "jobs", "cancel", str(job_id))
    assert no_reason.returncode == 7 and "needs a reason" in no_reason.stderr
    again = orch(services, "jobs", "cancel", str(job_id), "--reason", "twice")
    assert again.returncode == 5 and "canceled" in again.stderr
    replay = ok_json(orch(services, "jobs", "retry", str(job_id), "--reason", "rerun", "--json"))
    assert replay["replay_of"] == job_id and replay["job_id"] != job_id
    new = ok_json(orch(services, "jobs", "show", str(replay["job_id"]), "--json"))["job"]
    assert new["replay_of"] == job_id and new["state"] == "queued"
    assert ok_json(orch(services, "dlq", "list", "--json")) == {"jobs": []}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["submit", "--tenant", "t", "--type", "no-such-type"], 2, "unknown job type 'no-such-type'"),
        (["submit", "--tenant", "t", "--type", "noop", "--payload", "{oops"], 2, "payload is not valid JSON"),
        (["submit", "--tenant", "t", "--type", "noop", "--payload", "[1]"], 2, "must be a JSON object"),
        (["submit", "--tenant", "bad tenant!", "--type", "noop"], 2, "not a valid name"),
        (["jobs", "show", "987654321"], 3, "no job 987654321"),
        (["jobs", "list", "--state", "exploded"], 2, "unknown state 'exploded'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    services: Services, ledger: Any, args: list[str], code: int, needle: str
) -> None:
    proc = orch(services, *args)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_database(services: Services) -> None:
    proc = orch(services, "jobs", "list", db_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert proc.returncode == 6
    assert "cannot reach PostgreSQL" in proc.stderr and "ORCH_DATABASE_URL" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_database_url_names_the_variable(services: Services) -> None:
    proc = orch(services, "jobs", "list", db_url="mysql://x@y/z")
    assert proc.returncode == 2
    assert proc.stderr.startswith("orch: error: ORCH_DATABASE_URL")


def _parsers(parser: Any, path: str = "orch") -> Any:
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_says_what_it_does() -> None:
    import argparse

    from worker.cli import build_parser

    missing = []
    commands = 0
    for path, parser in _parsers(build_parser()):
        commands += 1
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert commands > 30
    assert not missing, f"options without a description: {missing}"


def test_worker_help_describes_processes_and_threads(services: Services) -> None:
    proc = orch(services, "worker", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--processes PROCESSES worker processes to run" in text
    assert "--threads THREADS handler threads in each worker process" in text
