"""The webhook notifier in a real `orch scheduler` (worker/runtime/scheduler.py starts it next to
the relay while it leads, only with ORCH_WEBHOOK_URL set): a job run by a real worker reaches
the receiver as signed orch.job.* events, and the exporter's numbers agree."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import sqlalchemy as sa

from core import control
from core.domain.auth import local_principal
from tests.conftest import Services, running_stack, wait_until
from tests.integration import test_webhook_notifier as hooks
from tests.integration.test_webhook_notifier import SECRET, Receiver

receiver = hooks.receiver  # the local HTTP endpoint fixture


def _cursor_exists(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(sa.text("SELECT count(*) FROM notifier_cursors WHERE name = 'webhook'")).scalar_one() == 1
        )


def test_the_leading_scheduler_posts_a_jobs_events(
    services: Services, ledger: sa.Engine, receiver: Receiver, tmp_path: Path
) -> None:
    with ledger.begin() as conn:
        conn.execute(sa.text("DELETE FROM notifier_cursors"))
    env = {
        "ORCH_WEBHOOK_URL": receiver.url,
        "ORCH_WEBHOOK_SECRET": SECRET,
        "ORCH_WEBHOOK_TYPES": "orch.job.succeeded,orch.job.submitted",
    }
    with running_stack(services, tmp_path, processes=1, threads=2, **env) as stack:
        wait_until(lambda: _cursor_exists(ledger), timeout=20, what="the notifier's cursor")
        spec = control.JobSpec(tenant="acme", job_type="noop")
        [job_id] = control.submit_many(ledger, local_principal("tests"), [spec], doorbell=stack.doorbell).job_ids
        wait_until(lambda: len(receiver.delivered()) >= 2, timeout=30, what="two webhook deliveries")
        stack.check_alive()
    types = [e["type"] for e in receiver.delivered()]
    assert types == ["orch.job.submitted", "orch.job.succeeded"]
    assert {e["subject"] for e in receiver.delivered()} == {f"job/{job_id}"}
    for r in receiver.got:
        expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["X-Orch-Signature"] == expected
