"""The state machine is declared once: the database's job_transitions table, the CHECKs on
job_history, the row rules of jobs (its one CHECK calls orch_check_job, migration 0020), and
the diagram in docs/, must equal core.domain.states."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.domain import states
from core.domain.states import State

ROOT = Path(__file__).resolve().parents[2]


def _constraint_def(conn: sa.Connection, table: str, name: str) -> str:
    definition = conn.execute(
        sa.text(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c"
            " WHERE c.conrelid = CAST(:table AS regclass) AND c.conname = :name"
        ),
        {"table": table, "name": name},
    ).scalar_one_or_none()
    assert definition is not None, f"constraint {name} on {table} is missing"
    return str(definition)


def _check_job_source(conn: sa.Connection) -> str:
    source = conn.execute(sa.text("SELECT prosrc FROM pg_proc WHERE proname = 'orch_check_job'")).scalar_one_or_none()
    assert source is not None, "function orch_check_job is missing"
    return str(source)


def _job_rule_def(conn: sa.Connection, rule: str) -> str:
    """The expression of one named rule of jobs: the branch of orch_check_job's CASE that
    names it."""
    branches = [b for b in re.split(r"\bWHEN\b", _check_job_source(conn)) if f"THEN '{rule}'" in b]
    assert len(branches) == 1, f"rule {rule} of jobs is missing (or named twice)"
    return branches[0].split(f"THEN '{rule}'")[0]


def _quoted(definition: str) -> set[str]:
    return set(re.findall(r"'([^']*)'", definition))


def test_job_transitions_table_equals_the_python_table(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT from_state, event, to_state FROM job_transitions")).all()
    in_db = [tuple(r) for r in rows]
    in_code = {(t.from_state.value, t.event.value, t.to_state.value) for t in states.TRANSITIONS}
    assert len(in_db) == len(set(in_db))
    assert set(in_db) == in_code, (
        f"only in the database: {sorted(set(in_db) - in_code)}; only in code: {sorted(in_code - set(in_db))}"
    )


def test_jobs_state_check_lists_exactly_the_states(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        definition = _job_rule_def(conn, "jobs_state_valid")
    assert "state" in definition
    assert _quoted(definition) == {s.value for s in State}, definition


def test_history_transition_check_lists_exactly_the_transitions(engine: sa.Engine) -> None:
    # job_history_transition_valid replaced the foreign key to job_transitions (migration
    # 0016, docs/adr/0021): its list must be the same transitions.
    with engine.connect() as conn:
        definition = _constraint_def(conn, "job_history", "job_history_transition_valid")
    listed = _quoted(definition) - {" "}
    in_code = {f"{t.from_state.value} {t.event.value} {t.to_state.value}" for t in states.TRANSITIONS}
    assert listed == in_code, f"only in the CHECK: {sorted(listed - in_code)}; only in code: {sorted(in_code - listed)}"


def test_history_creation_check_lists_exactly_the_initial_states(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        definition = _constraint_def(conn, "job_history", "job_history_creation")
    assert _quoted(definition) - {"submit"} == {s.value for s in states.INITIAL}, definition


def _insert_history(conn: sa.Connection, from_state: str | None, event: str, to_state: str) -> None:
    conn.execute(
        sa.text("INSERT INTO job_history (job_id, from_state, event, to_state, actor) VALUES (1, :f, :e, :t, 'test')"),
        {"f": from_state, "e": event, "t": to_state},
    )


def test_jobs_has_one_check_and_it_calls_orch_check_job(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        checks = conn.execute(
            sa.text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'jobs'::regclass AND contype = 'c'"
            )
        ).all()
    assert [name for name, _ in checks] == ["jobs_row_valid"], checks
    assert "orch_check_job(" in checks[0][1], checks


def test_each_job_rule_is_written_alike_in_the_conjunction_and_its_branch(engine: sa.Engine) -> None:
    """orch_check_job tests every rule at once, and names the broken one in a CASE: both
    must hold the same values, or a row could pass one and fail the other."""
    with engine.connect() as conn:
        source = _check_job_source(conn)
    conjunction = source[source.index("IF (") : source.index("IS NOT FALSE THEN")]
    case = source[source.index(":= CASE") : source.index("ELSE '")]
    named = set(re.findall(r"THEN '([a-z_]+)'", case))
    in_case = Counter(q for q in re.findall(r"'([^']*)'", case) if q not in named)
    assert named == set(BREAKS_ONE_RULE)
    assert Counter(re.findall(r"'([^']*)'", conjunction)) == in_case


#: A valid job's row, then one UPDATE per rule that breaks that rule alone.
BREAKS_ONE_RULE = {
    "jobs_state_valid": "state = 'nonsense'",
    "jobs_wait_reason_valid": "wait_reason = 'because'",
    "jobs_wait_reason": "state = 'throttled', not_before = now(), wait_reason = NULL",
    "jobs_wait_until": "state = 'retrying', not_before = NULL",
    "jobs_lease_held": "state = 'leased', lease_id = NULL, lease_expires_at = now()",
    "jobs_attempt_check": "attempt = -1",
    "jobs_max_attempts_check": "max_attempts = 0",
    "jobs_progress_check": "progress = 1.5",
    "jobs_idempotency_key_check": "idempotency_key = ''",
    "jobs_payload_digest_check": "payload_digest = 'abc'",
}


def _a_job(conn: sa.Connection) -> int:
    tenant = conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('rules') RETURNING id")).scalar_one()
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO jobs (tenant_id, job_type, queue, payload, payload_digest, state, max_attempts)"
                " VALUES (:t, 'noop', 'default', '{}', repeat('a', 64), 'queued', 3) RETURNING id"
            ),
            {"t": tenant},
        ).scalar_one()
    )


@pytest.mark.parametrize("rule", sorted(BREAKS_ONE_RULE))
def test_a_job_row_that_breaks_one_rule_is_refused_with_its_name(ledger: sa.Engine, rule: str) -> None:
    with ledger.begin() as conn:
        job = _a_job(conn)
    with pytest.raises(sa.exc.IntegrityError) as info, ledger.begin() as conn:
        conn.execute(sa.text(f"UPDATE jobs SET {BREAKS_ONE_RULE[rule]} WHERE id = :id"), {"id": job})
    assert getattr(info.value.orig.diag, "constraint_name", None) == rule
    assert f'violates check constraint "{rule}"' in str(info.value.orig)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job}).scalar_one() == "queued"


def test_a_job_row_that_keeps_the_rules_is_accepted(ledger: sa.Engine) -> None:
    # The control case: rows in every state, each with what its state asks for, pass.
    with ledger.begin() as conn:
        job = _a_job(conn)
        for state in State:
            conn.execute(
                sa.text(
                    "UPDATE jobs SET state = :s, not_before = now(), wait_reason = 'quota',"
                    " lease_id = gen_random_uuid(), lease_expires_at = now(), progress = 1, idempotency_key = 'k'"
                    " WHERE id = :id"
                ),
                {"s": state.value, "id": job},
            )
    with ledger.connect() as conn:
        last = conn.execute(sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job}).scalar_one()
    assert last == list(State)[-1].value


@pytest.mark.parametrize(
    ("from_state", "event", "to_state"),
    [
        ("succeeded", "claim", "leased"),  # out of a terminal state
        ("queued", "ack", "running"),  # skips leased
        ("leased", "cancel", "canceled"),  # leased jobs are canceled cooperatively
        ("queued", "nonsense", "leased"),  # unknown event
    ],
)
def test_history_row_outside_the_table_is_refused(
    ledger: sa.Engine, from_state: str, event: str, to_state: str
) -> None:
    assert (from_state, event, to_state) not in {
        (t.from_state.value, t.event.value, t.to_state.value) for t in states.TRANSITIONS
    }
    with pytest.raises(sa.exc.IntegrityError) as info, ledger.begin() as conn:
        _insert_history(conn, from_state, event, to_state)
    assert getattr(info.value.orig.diag, "constraint_name", None) == "job_history_transition_valid"
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_history")).scalar_one() == 0


def test_history_row_inside_the_table_is_accepted(ledger: sa.Engine) -> None:
    # The control case: the same insert succeeds for an allowed transition, so the refusals
    # above come from the CHECK and not from some other mistake in the statement.
    with ledger.begin() as conn:
        for t in sorted(states.TRANSITIONS):
            _insert_history(conn, t.from_state.value, t.event.value, t.to_state.value)
        _insert_history(conn, None, "submit", "queued")
    with ledger.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM job_history")).scalar_one()
    assert count == len(states.TRANSITIONS) + 1


def test_history_creation_row_must_be_a_submit_into_an_initial_state(ledger: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError) as info, ledger.begin() as conn:
        _insert_history(conn, None, "submit", "running")
    assert getattr(info.value.orig.diag, "constraint_name", None) == "job_history_creation"


def test_docs_diagram_is_generated_from_the_table() -> None:
    doc = ROOT / "docs" / "states.md"
    if not doc.exists():
        pytest.skip("docs/states.md does not exist yet")
    assert states.mermaid() in doc.read_text(encoding="utf-8"), (
        "docs/states.md is out of date: paste core.domain.states.mermaid() into it"
    )


@pytest.mark.parametrize(
    ("table", "constraint"),
    [("jobs", "jobs_wait_reason_valid"), ("job_history", "job_history_wait_reason_valid")],
)
def test_wait_reason_checks_list_exactly_the_enum(engine: sa.Engine, table: str, constraint: str) -> None:
    with engine.connect() as conn:
        definition = _job_rule_def(conn, constraint) if table == "jobs" else _constraint_def(conn, table, constraint)
    assert "wait_reason" in definition
    assert _quoted(definition) == {r.value for r in states.WaitReason}, definition


def test_a_wait_reason_outside_the_enum_is_refused(ledger: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError) as info, ledger.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO job_history (job_id, from_state, event, to_state, actor, wait_reason)"
                " VALUES (1, 'queued', 'deny', 'throttled', 'test', 'because')"
            )
        )
    assert getattr(info.value.orig.diag, "constraint_name", None) == "job_history_wait_reason_valid"


def test_holding_a_slot_means_holding_a_lease(engine: sa.Engine) -> None:
    """orch_holds_slot (the database's one definition) agrees with LEASED_STATES, and the
    partial indexes that count active slots cover exactly those states."""
    with engine.connect() as conn:
        holding = {
            s.value for s in State if conn.execute(sa.text("SELECT orch_holds_slot(:s)"), {"s": s.value}).scalar_one()
        }
        predicates = dict(
            conn.execute(
                sa.text(
                    "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index AS i"
                    " JOIN pg_class AS c ON c.oid = i.indexrelid"
                    " WHERE c.relname IN ('jobs_active_type_idx', 'jobs_active_source_idx')"
                )
            ).all()
        )
    assert holding == {s.value for s in states.LEASED_STATES}
    assert sorted(predicates) == ["jobs_active_source_idx", "jobs_active_type_idx"]
    for name, predicate in predicates.items():
        assert _quoted(predicate) == holding, (name, predicate)
