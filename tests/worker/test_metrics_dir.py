"""A configured ORCH_METRICS_DIR is shared: a pool never deletes what it did not write. It
keeps other processes' metric files at start and at stop, and at stop removes its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from tests.conftest import Services, orch_env, session_namespace, start_orch, stop_process, wait_until
from worker.runtime import broker as broker_mod

pytestmark = pytest.mark.slow


def test_a_pool_removes_only_its_own_metric_files(
    services: Services, ledger: sa.Engine, principal: Principal, tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    foreign = [shared / "counter_999999.db", shared / "histogram_999999.db", shared / "notes.txt"]
    for f in foreign:
        f.write_bytes(b"another pool's file")
    namespace = session_namespace()
    env = orch_env(services, namespace, ORCH_METRICS_DIR=str(shared))
    log = tmp_path / "worker.log"
    proc = start_orch(["worker", "--processes", "1", "--threads", "2"], env, log)
    try:
        wait_until(lambda: " ready: queues=" in log.read_text(errors="replace"), timeout=60, what="the worker")
        pid = int(re.search(r"worker \S+?:(\d+):w0 ready", log.read_text()).group(1))  # type: ignore[union-attr]
        bell = broker_mod.RedisDoorbell(broker_mod.build_broker(services.redis_url, namespace=namespace))
        control.submit(ledger, principal, control.JobSpec("m", "noop"), doorbell=bell)
        wait_until(lambda: list(shared.glob(f"*_{pid}.db")), timeout=30, what="the worker's own metric files")
        assert all(f.exists() for f in foreign), "the pool deleted files it did not write"
    finally:
        assert stop_process(proc) == 0, log.read_text()
    assert all(f.read_bytes() == b"another pool's file" for f in foreign)
    assert list(shared.glob(f"*_{pid}.db")) == [], "the pool left its own files behind"
