"""A submit is one statement in autocommit when nothing else would write (docs/adr/0021): the
jobs, their history and events and the audit row commit together, and the row reads as the
transaction's path writes it. Everything else (a tenant this process has not met, idempotency
keys, a tenant with a backlog limit) takes the transaction, and writes once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from core import control
from core.domain import errors
from core.domain.auth import Principal
from core.ledger import audit

NO_BELL = control.NoDoorbell()


@contextmanager
def sent(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements `engine` sends meanwhile, by their first line, and whether each came
    in autocommit ("autocommit: " before it)."""
    seen: list[str] = []

    def before(conn: sa.Connection, _cursor: object, statement: str, *_args: object) -> None:
        auto = bool(conn.connection.driver_connection.autocommit)  # type: ignore[union-attr]
        seen.append(("autocommit: " if auto else "") + statement.split("\n", 1)[0])

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def _audit_rows(engine: sa.Engine) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT target, details, tenant, reason FROM audit_log ORDER BY id")).mappings()
        )


def _action_events(engine: sa.Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [
            dict(p)
            for p in conn.execute(
                sa.text("SELECT payload FROM events WHERE kind = 'action.submit' ORDER BY id")
            ).scalars()
        ]


def test_a_known_tenants_submit_is_one_autocommit_statement(ledger: sa.Engine, principal: Principal) -> None:
    first = control.submit(ledger, principal, control.JobSpec("t1", "noop"), doorbell=NO_BELL)  # meets t1
    with sent(ledger) as seen:
        one = control.submit(ledger, principal, control.JobSpec("t1", "noop"), doorbell=NO_BELL, reason="why")
    assert seen == ["autocommit: /* insert_jobs_audited */"], seen
    with sent(ledger) as seen:
        many = control.submit_many(
            ledger, principal, [control.JobSpec("t1", "noop", {"i": i}) for i in range(3)], doorbell=NO_BELL
        ).job_ids
    assert [s for s in seen if "insert_jobs" in s] == ["autocommit: /* insert_jobs_audited */"], seen
    assert not any("append_audit" in s for s in seen), seen

    rows = _audit_rows(ledger)
    assert [(r["target"], r["details"], r["tenant"], r["reason"]) for r in rows] == [
        (f"job {first}", {"count": 1, "job_types": ["noop"]}, "t1", None),
        (f"job {one}", {"count": 1, "job_types": ["noop"]}, "t1", "why"),
        (f"jobs {min(many)}..{max(many)}", {"count": 3, "job_types": ["noop"]}, "t1", None),
    ]
    events = _action_events(ledger)
    assert [(e["target"], e["details"], e["reason"]) for e in events] == [
        (r["target"], r["details"], r["reason"]) for r in rows
    ]
    with ledger.connect() as conn:
        assert audit.verify(conn).ok
        states = conn.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY 1")).all()
        history = conn.execute(sa.text("SELECT count(*) FROM job_history WHERE event = 'submit'")).scalar_one()
    assert states == [("queued", 5)] and history == 5


def test_new_tenants_and_idempotency_keys_take_the_transaction(ledger: sa.Engine, principal: Principal) -> None:
    with sent(ledger) as seen:
        control.submit(ledger, principal, control.JobSpec("fresh", "noop"), doorbell=NO_BELL)
    assert "/* ensure_tenants */" in seen and "/* append_audit */" in seen, seen
    assert not any(s.startswith("autocommit") for s in seen), seen

    keyed = control.JobSpec("fresh", "noop", {"a": 1}, idempotency_key="k")
    with sent(ledger) as seen:
        job = control.submit(ledger, principal, keyed, doorbell=NO_BELL)
    assert "/* insert_jobs */" in seen and "/* append_audit */" in seen, seen
    assert control.submit(ledger, principal, keyed, doorbell=NO_BELL) == job  # the same job, no new row
    with pytest.raises(errors.IdempotencyConflict):
        control.submit(
            ledger, principal, control.JobSpec("fresh", "noop", {"a": 2}, idempotency_key="k"), doorbell=NO_BELL
        )
    assert [r["target"] for r in _audit_rows(ledger)] == [f"job {job - 1}", f"job {job}"]
    with ledger.connect() as conn:
        assert audit.verify(conn).ok


def test_a_tenant_with_a_backlog_limit_falls_back_and_is_audited_once(ledger: sa.Engine, principal: Principal) -> None:
    control.submit(ledger, principal, control.JobSpec("lim", "noop"), doorbell=NO_BELL)
    control.set_backlog_limit(ledger, principal, tenant="lim", limit=2, policy="defer", reason="test")
    with sent(ledger) as seen:
        ids = control.submit_many(
            ledger, principal, [control.JobSpec("lim", "noop", {"i": i}) for i in range(3)], doorbell=NO_BELL
        ).job_ids
    # The one statement found the limit and wrote nothing; the transaction counted and deferred.
    assert seen.count("autocommit: /* insert_jobs_audited */") == 1, seen
    assert "/* append_audit */" in seen, seen
    with ledger.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT id, state FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}).all())
        submits = conn.execute(sa.text("SELECT count(*) FROM job_history WHERE event = 'submit'")).scalar_one()
        assert audit.verify(conn).ok
    assert sorted(states.values()) == ["queued", "throttled", "throttled"]
    assert submits == 4
    targets = [r["target"] for r in _audit_rows(ledger) if r["target"].startswith("job")]
    assert targets[-1] == f"jobs {min(ids)}..{max(ids)}" and len(targets) == 2
