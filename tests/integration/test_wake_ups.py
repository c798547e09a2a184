"""Doorbells are wake-ups (ADR 0016): a batch rings at most WAKE_UPS per queue, and the
scheduler keeps min(ready, WAKE_UPS) outstanding while ready jobs wait."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from core import control
from core.control.common import WAKE_UPS, wake_ups
from core.domain.auth import Principal


class Recorder:
    def __init__(self) -> None:
        self.rung: list[tuple[int, str]] = []

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        self.rung.extend(jobs)


def test_wake_ups_cap_each_queue_in_order() -> None:
    jobs = [(i, "a" if i % 2 else "b") for i in range(1000)]
    out = wake_ups(jobs, limit=3)
    assert out == [(0, "b"), (1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]
    assert wake_ups(jobs[:4]) == jobs[:4]


def test_a_big_batch_rings_a_few_dozen_wake_ups(ledger: sa.Engine, principal: Principal) -> None:
    bell = Recorder()
    specs = [control.JobSpec("acme", "test.report") for _ in range(500)]
    ids = control.submit_many(ledger, principal, specs, doorbell=bell).job_ids
    assert len(bell.rung) == WAKE_UPS and [i for i, _ in bell.rung] == ids[:WAKE_UPS]
    one = Recorder()
    control.submit(ledger, principal, control.JobSpec("acme", "test.report"), doorbell=one)
    assert len(one.rung) == 1
