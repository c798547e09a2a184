"""Audit chains per tenant: appends of different tenants never wait on each other, appends of
one tenant take turns, and a tenant's chain verifies from its own rows alone."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from core import control
from core.domain.auth import Principal
from core.ledger import audit, db

NO_BELL = control.NoDoorbell()
LOCK_TIMEOUT_MS = 2000


def _impatient(engine: sa.Engine) -> sa.Engine:
    """An engine on the same ledger whose statements give up after waiting LOCK_TIMEOUT_MS for a lock."""
    fast = db.create_engine(engine.url.render_as_string(hide_password=False), application_name="orch-tests-impatient")

    @sa.event.listens_for(fast, "connect")
    def _timeout(dbapi_conn: object, _record: object) -> None:
        with dbapi_conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        dbapi_conn.commit()  # type: ignore[attr-defined]  # a pooled connection starts idle

    return fast


def test_a_tenant_never_waits_for_another_tenants_audit_append(ledger: sa.Engine, principal: Principal) -> None:
    control.submit(ledger, principal, control.JobSpec("a", "noop"), doorbell=NO_BELL)  # both chains exist
    control.submit(ledger, principal, control.JobSpec("b", "noop"), doorbell=NO_BELL)
    fast = _impatient(ledger)
    try:
        with ledger.connect() as held:
            tx = held.begin()
            # Tenant a's audited write stays uncommitted (think: a slow transaction).
            audit.append(held, audit.AuditEntry("t", ["orch:operate"], "submit", "job 0", "a", None, None, {}))
            started = time.monotonic()
            control.submit(fast, principal, control.JobSpec("b", "noop"), doorbell=NO_BELL)
            assert time.monotonic() - started < LOCK_TIMEOUT_MS / 1000
            # The same tenant does take turns: its append waits for the open one.
            with pytest.raises(sa.exc.OperationalError) as info:
                control.submit(fast, principal, control.JobSpec("a", "noop"), doorbell=NO_BELL)
            assert db.constraint_name(info.value) is None and "lock timeout" in str(info.value.orig)
            tx.rollback()
    finally:
        fast.dispose()
    with ledger.connect() as conn:
        assert audit.verify(conn).ok


def test_concurrent_appends_of_one_tenant_form_one_unbroken_chain(ledger: sa.Engine, principal: Principal) -> None:
    errors: list[BaseException] = []

    def submits(tenant: str) -> None:
        try:
            for _ in range(15):
                control.submit(ledger, principal, control.JobSpec(tenant, "noop"), doorbell=NO_BELL)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submits, args=(t,)) for t in ("x", "x", "x", "y", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with ledger.connect() as conn:
        verdict = audit.verify(conn)
        seqs = dict(
            conn.execute(
                sa.text("SELECT chain, array_agg(chain_seq ORDER BY chain_seq) FROM audit_log GROUP BY 1")
            ).all()
        )
    assert verdict.ok and verdict.rows == 75 and verdict.chains == 2, verdict
    assert seqs == {"x": list(range(1, 46)), "y": list(range(1, 31))}


def test_a_tenants_chain_verifies_from_its_own_rows(ledger: sa.Engine, principal: Principal) -> None:
    for tenant in ("p", "q", "p", "q", "p"):
        control.submit(ledger, principal, control.JobSpec(tenant, "noop"), doorbell=NO_BELL)
    with ledger.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(sa.text("SELECT * FROM audit_log WHERE chain = 'p' ORDER BY chain_seq")).mappings()
        ]
        anchor = conn.execute(sa.text("SELECT last_hash FROM audit_legacy")).scalar_one()
    # Nothing but p's rows and the anchor: a bundle of tenant p carries exactly these.
    verdict, last = audit.verify_rows(rows, chain="p", anchor_hash=anchor)
    assert verdict.ok and verdict.rows == 3 and last == rows[-1]["hash"]
    # A bundle that starts mid-chain carries the previous hash as its anchor.
    tail, _ = audit.verify_rows(rows[1:], chain="p", anchor_hash=rows[0]["hash"], first_seq=2)
    assert tail.ok and tail.rows == 2
    altered = [dict(rows[0]), *rows[1:]]
    altered[0]["reason"] = "rewritten"
    bad, _ = audit.verify_rows(altered, chain="p", anchor_hash=anchor)
    assert not bad.ok and bad.first_bad_id == rows[0]["id"] and "altered" in (bad.problem or "")
    moved, _ = audit.verify_rows([rows[0], rows[2]], chain="p", anchor_hash=anchor)
    assert not moved.ok and moved.first_bad_id == rows[2]["id"] and "missing" in (moved.problem or "")


AWKWARD = [
    audit.AuditEntry("s", ["orch:operate"], "submit", "job 1", "awk", None, None, {}),
    audit.AuditEntry(
        "sé\x01",
        ["orch:read", "orch:operate"],
        "retry",
        'job "2"',
        "awk",
        'why\n\\u0001,"seq":9',
        "T-1",
        {"z": [1, 2.5, None, True], "a": {"ü": "\x02x"}, "n": 10**20},
    ),
    audit.AuditEntry("s", ["orch:admin"], "set_quota", "quota", None, "r" * 256, "t" * 128, {"when": "x"}),
    # Numbers jsonb prints otherwise than json.dumps (1e16 and up as integers, -0.0 as 0.0)
    # and keys that are not strings: hashed as they read back.
    audit.AuditEntry(
        "s",
        ["orch:operate"],
        "set_rate",
        "source s",
        "awk",
        None,
        None,
        {"big": 1e21, "e16": [1e16, -2.5e17], "neg0": -0.0, "small": 1.5e-7, "two": 2.0, "k": {1: "a", 10: "b"}},
    ),
]


def test_the_server_hashes_a_row_as_verify_recomputes_it(ledger: sa.Engine) -> None:
    """orch_audit_append builds the hashed body from the three parts audit.body_parts sends;
    awkward content (escapes, non-ASCII, control characters, big numbers, no tenant) must
    hash the same on both sides."""
    with ledger.begin() as conn:
        ids = [audit.append(conn, e) for e in AWKWARD]
    with ledger.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_log WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids})
        for row in rows.mappings():
            entry = audit.AuditEntry(
                row["subject"],
                row["scopes"],
                row["action"],
                row["target"],
                row["tenant"],
                row["reason"],
                row["ticket"],
                row["details"],
            )
            again = audit.row_hash(row["prev_hash"], row["at"], entry, chain=row["chain"], seq=row["chain_seq"])
            assert again == row["hash"]
        assert audit.verify(conn).ok


def test_body_parts_join_into_row_hash_s_body() -> None:
    import datetime as dt
    import hashlib

    at = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC)
    for e in AWKWARD:
        chain = audit.chain_of(e.tenant)
        head, mid, tail = audit.body_parts(e, chain)
        body = head + at.isoformat() + mid + "7" + tail
        assert hashlib.sha256(("p" + body).encode()).hexdigest() == audit.row_hash("p", at, e, chain=chain, seq=7)
