"""The state machine is declared once: the database's job_transitions table, the CHECKs on
jobs and job_history, and the diagram in docs/, must equal core.domain.states."""

from __future__ import annotations

import re
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
        definition = _constraint_def(conn, "jobs", "jobs_state_valid")
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
        definition = _constraint_def(conn, table, constraint)
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
