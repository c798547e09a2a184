"""What job authors and callers import keeps working after the layout moved: the SDK's names,
and every function (and public constant) core.control and core.queries exported as modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CONTROL = [
    "TENANT_RE",
    "MAX_PRIORITY",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_REASON",
    "MAX_TICKET",
    "HOST_RE",
    "MAX_RATE",
    "BACKLOG_POLICIES",
    "forget_cached_catalog",
    "Doorbell",
    "NoDoorbell",
    "JobSpec",
    "SubmitResult",
    "submit_many",
    "submit",
    "cancel",
    "retry",
    "register_job_types",
    "create_token",
    "authenticate",
    "replay_many",
    "add_source",
    "pause",
    "resume",
    "throttle_source",
    "reset_circuit",
    "add_blackout",
    "remove_blackout",
    "set_quota",
    "set_backlog_limit",
]
QUERIES = [
    "get_job",
    "job_history",
    "job_logs",
    "job_artifacts",
    "list_jobs",
    "job_stats",
    "dead_letters",
    "error_clusters",
    "error_trend",
    "dead_letter_clusters",
    "burn_rates",
    "throughput_series",
    "queue_depth_series",
    "audit_log",
    "verify_audit",
    "tenants",
    "job_types",
    "run_time_summary",
    "WAIT_REASONS",
    "sources",
    "source",
    "pauses",
    "blackouts",
    "quotas",
    "backlog_limits",
    "throttles",
    "waiting_by_reason",
    "rate_limit_series",
]
SDK = ["job_handler", "JobContext", "RetryableError", "FatalError", "UpstreamThrottled", "Canceled"]


@pytest.mark.parametrize(
    ("module", "names"), [("core.control", CONTROL), ("core.queries", QUERIES), ("worker.sdk", SDK)]
)
def test_public_names_are_still_there(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} no longer exports {missing}"


def test_a_job_authors_module_does_not_pull_in_the_database() -> None:
    code = (
        "import sys\n"
        "from worker.sdk import job_handler, JobContext, RetryableError, FatalError, UpstreamThrottled, Canceled\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'psycopg', 'dramatiq', 'redis', 'core.ledger') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_built_in_job_types_are_known_by_their_names() -> None:
    from worker.runtime import pool

    names = set(pool.load_handlers([]))
    assert {"noop", "sleep", "fail", "flaky", "http_fetch"} <= names
