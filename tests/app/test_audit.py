"""Audit page: the log with filters, per tenant, and the verification of the hash chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import labels
from core.domain.auth import Scope
from tests.app.conftest import (
    TENANT_A,
    TENANT_B,
    Seeded,
    audit_count,
    button,
    open_app,
    text_input,
    texts,
)


def _entries(at: AppTest) -> Any:
    return at.dataframe[0].value


def test_audit_lists_entries_and_verifies_the_chain(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("auditor", {Scope.READ}), "audit")
    total = audit_count(console)
    with console.connect() as conn:
        chains = conn.execute(sa.text("SELECT count(*) FROM audit_chains")).scalar_one()
    assert chains >= 2  # the seeded ledger has two tenants' chains, at least
    assert [s.value for s in at.success] == [
        f"Audit chain intact: {total} rows in {chains} chain(s), every hash chain verified."
    ]
    entries = _entries(at)
    with console.connect() as conn:
        newest = conn.execute(sa.text("SELECT id FROM audit_log ORDER BY id DESC LIMIT 100")).scalars().all()
    assert list(entries["id"]) == newest
    at.text_input(key="audit_action").input("submit").run()
    submits = _entries(at)
    assert set(submits["action"]) == {"submit"}
    assert {TENANT_A, TENANT_B} <= set(submits["tenant"])
    at.text_input(key="audit_subject").input("nobody-at-all").run()
    assert _entries(at).empty


def test_an_action_in_the_console_appears_in_the_log(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "jobs")
    job_id = seeded.b.queued[0]
    at.selectbox(key="jobs_selected").set_value(job_id).run()
    button(at, labels.CANCEL).click().run()
    text_input(at, labels.REASON_LABEL).input("tenant asked us to stop")
    button(at, labels.CONFIRM).click().run()
    at.switch_page("pages/4_Audit.py").run()
    at.text_input(key="audit_action").input("cancel").run()
    newest = _entries(at).iloc[0]
    assert (newest["subject"], newest["target"], newest["tenant"], newest["reason"]) == (
        "operator",
        f"job {job_id}",
        TENANT_B,
        "tenant asked us to stop",
    )
    (intact,) = [s.value for s in at.success]
    assert intact.startswith(f"Audit chain intact: {audit_count(console)} rows in ")


def test_a_tenant_limited_principal_sees_only_its_entries(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("globex-auditor", {Scope.READ}, {TENANT_B}), "audit")
    entries = _entries(at)
    assert not entries.empty
    assert set(entries["tenant"]) == {TENANT_B}
    assert TENANT_A not in texts(at) + entries.to_string()


def test_a_tampered_row_shows_the_chain_broken(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    token = make_token("auditor", {Scope.READ})
    with console.connect() as conn:
        row_id, reason = conn.execute(
            sa.text("SELECT id, reason FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET 1")
        ).one()
    # The log is append-only: switch its guard off for a moment to alter one row, then put it back.
    with console.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(sa.text("UPDATE audit_log SET reason = 'rewritten' WHERE id = :id"), {"id": row_id})
        conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    try:
        at = open_app(token, "audit")
        (error,) = [e.value for e in at.error]
        assert error.startswith(f"Audit chain broken at row {row_id} (chain ")
        assert not at.success
    finally:
        with console.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            conn.execute(sa.text("UPDATE audit_log SET reason = :r WHERE id = :id"), {"r": reason, "id": row_id})
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    (intact,) = [s.value for s in open_app(token, "audit").success]
    assert intact.startswith("Audit chain intact")
