"""The audit log: append-only, hash-chained rows, and API tokens. Functions take a
Connection and never commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

#: Serialises appends so each row's prev_hash is the hash of the row before it.
AUDIT_LOCK_KEY = 7424853
GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    subject: str
    scopes: Sequence[str]
    action: str
    target: str
    tenant: str | None
    reason: str | None
    ticket: str | None
    details: Mapping[str, Any]


def row_hash(prev_hash: str, at: dt.datetime, e: AuditEntry) -> str:
    """sha256 over the previous hash and the row's canonical JSON."""
    body = json.dumps(
        {
            "at": at.astimezone(dt.UTC).isoformat(),
            "subject": e.subject,
            "scopes": sorted(e.scopes),
            "action": e.action,
            "target": e.target,
            "tenant": e.tenant,
            "reason": e.reason,
            "ticket": e.ticket,
            "details": e.details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(conn: sa.Connection, entry: AuditEntry) -> int:
    """Append one row in the caller's transaction (which must commit for it to count)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    # A new statement after the lock: under READ COMMITTED its snapshot sees every row
    # appended before we got the lock. Microseconds survive the timestamptz round trip.
    prev, at = conn.execute(
        sa.text(
            "SELECT (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1),"
            " date_trunc('microseconds', clock_timestamp())"
        )
    ).one()
    prev_hash = prev or GENESIS
    digest = row_hash(prev_hash, at, entry)
    row_id = conn.execute(
        sa.text(
            "INSERT INTO audit_log (at, subject, scopes, action, target, tenant, reason, ticket, details,"
            " prev_hash, hash) VALUES (:at, :subject, :scopes, :action, :target, :tenant, :reason, :ticket,"
            " CAST(:details AS jsonb), :prev_hash, :hash) RETURNING id"
        ),
        {
            "at": at,
            "subject": entry.subject,
            "scopes": sorted(entry.scopes),
            "action": entry.action,
            "target": entry.target,
            "tenant": entry.tenant,
            "reason": entry.reason,
            "ticket": entry.ticket,
            "details": json.dumps(entry.details, sort_keys=True, default=str),
            "prev_hash": prev_hash,
            "hash": digest,
        },
    ).scalar_one()
    return int(row_id)


def rows(
    conn: sa.Connection,
    *,
    tenants: Sequence[str] | None = None,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
) -> list[sa.RowMapping]:
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if tenants is not None:
        where.append("tenant = ANY(:tenants)")
        params["tenants"] = list(tenants)
    if action is not None:
        where.append("action = :action")
        params["action"] = action
    if subject is not None:
        where.append("subject = :subject")
        params["subject"] = subject
    return list(
        conn.execute(
            sa.text(f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"), params
        ).mappings()
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify(conn: sa.Connection) -> Verdict:
    """Recompute the chain from the first row; the first row whose stored hash, prev_hash or
    id sequence does not fit is named (an altered row, or the row after a removed one)."""
    prev_hash = GENESIS
    expected_id: int | None = None
    count = 0
    result = conn.execution_options(stream_results=True, yield_per=1000).execute(
        sa.text("SELECT * FROM audit_log ORDER BY id")
    )
    for r in result.mappings():
        count += 1
        if expected_id is not None and r["id"] != expected_id:
            return Verdict(False, count, r["id"], f"rows {expected_id}..{r['id'] - 1} are missing")
        if r["prev_hash"] != prev_hash:
            return Verdict(False, count, r["id"], "prev_hash does not match the previous row (a row was removed)")
        entry = AuditEntry(
            r["subject"], r["scopes"], r["action"], r["target"], r["tenant"], r["reason"], r["ticket"], r["details"]
        )
        if row_hash(prev_hash, r["at"], entry) != r["hash"]:
            return Verdict(False, count, r["id"], "the row's content does not match its hash (it was altered)")
        prev_hash = r["hash"]
        expected_id = r["id"] + 1
    return Verdict(True, count)


def insert_token(
    conn: sa.Connection,
    *,
    token_sha256: str,
    subject: str,
    tenants: Sequence[str] | None,
    scopes: Sequence[str],
    created_by: str,
) -> int:
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO api_tokens (token_sha256, subject, tenants, scopes, created_by)"
                " VALUES (:h, :subject, :tenants, :scopes, :by) RETURNING id"
            ),
            {
                "h": token_sha256,
                "subject": subject,
                "tenants": None if tenants is None else sorted(tenants),
                "scopes": sorted(scopes),
                "by": created_by,
            },
        ).scalar_one()
    )


def find_token(conn: sa.Connection, token_sha256: str) -> sa.RowMapping | None:
    return (
        conn.execute(
            sa.text("SELECT * FROM api_tokens WHERE token_sha256 = :h AND revoked_at IS NULL"), {"h": token_sha256}
        )
        .mappings()
        .first()
    )
