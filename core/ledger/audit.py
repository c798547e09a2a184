"""The audit log: append-only, hash-chained rows, one chain per tenant (and one for actions
that span tenants), and API tokens. Functions take a Connection and never commit.

Rows written before chains were per tenant form the legacy chain: one chain over the whole
log in id order, from GENESIS. Every per-tenant chain starts from the legacy chain's last
hash (its anchor), so the two meet at one hash (docs/adr/0012-audit-chains-per-tenant.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

GENESIS = "0" * 64
#: The chain of actions that span tenants (no tenant name can start with '*').
CROSS_TENANT = "*"


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


def chain_of(tenant: str | None) -> str:
    """The chain an entry of `tenant` belongs to."""
    return CROSS_TENANT if tenant is None else tenant


def row_hash(
    prev_hash: str, at: dt.datetime, e: AuditEntry, *, chain: str | None = None, seq: int | None = None
) -> str:
    """sha256 over the previous hash and the row's canonical JSON. Rows of a chain also cover
    their chain and place in it; legacy rows (chain None) keep the format they were written in."""
    fields: dict[str, Any] = {
        "at": at.astimezone(dt.UTC).isoformat(),
        "subject": e.subject,
        "scopes": sorted(e.scopes),
        "action": e.action,
        "target": e.target,
        "tenant": e.tenant,
        "reason": e.reason,
        "ticket": e.ticket,
        "details": e.details,
    }
    if chain is not None:
        fields["chain"] = chain
        fields["seq"] = seq
    return hashlib.sha256((prev_hash + _CANONICAL.encode(fields)).encode()).hexdigest()


#: json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), without building
#: an encoder per call (json.dumps does for any non-default argument): the same text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    return _CANONICAL.encode(value)


def body_parts(e: AuditEntry, chain: str) -> tuple[str, str, str]:
    """row_hash's canonical JSON of a chained row in three parts, around the two values only
    the chain's head decides: head + <at, isoformat in UTC> + mid + <seq> + tail is the body
    row_hash hashes (keys in sorted order, as json.dumps(sort_keys=True) writes them)."""
    head = '{"action":' + _json(e.action) + ',"at":"'
    mid = (
        '","chain":'
        + _json(chain)
        + ',"details":'
        + _json(e.details)
        + ',"reason":'
        + _json(e.reason)
        + ',"scopes":'
        + _json(sorted(e.scopes))
        + ',"seq":'
    )
    tail = (
        ',"subject":'
        + _json(e.subject)
        + ',"target":'
        + _json(e.target)
        + ',"tenant":'
        + _json(e.tenant)
        + ',"ticket":'
        + _json(e.ticket)
        + "}"
    )
    return head, mid, tail


def as_stored(value: Any) -> Any:
    """`value` as it reads back from a jsonb column, so the hash written over it is the hash
    verify recomputes from the row: jsonb prints a float of 1e16 or more as an integer (1e21
    reads back as 1000000000000000000000) and -0.0 as 0.0, and object keys are strings."""
    if isinstance(value, float):
        if value == 0.0:
            return 0.0
        return int(value) if value.is_integer() and "e" in repr(value) else value
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else json.dumps(k): as_stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_stored(v) for v in value]
    return value


def append(conn: sa.Connection, entry: AuditEntry) -> int:
    """Append one row to its chain in the caller's transaction (which must commit for it to
    count), in one round trip: the server takes the chain's head row and holds it until
    commit (appends of one tenant take turns, other tenants' never wait), reads the time and
    hashes the row as row_hash does (orch_audit_append). The details are hashed as they will
    read back (as_stored)."""
    entry = dataclasses.replace(entry, details=as_stored(entry.details))
    chain = chain_of(entry.tenant)
    head, mid, tail = body_parts(entry, chain)
    row_id = conn.execute(
        stmt("append_audit"),
        {
            "chain": chain,
            "subject": entry.subject,
            "scopes": sorted(entry.scopes),
            "action": entry.action,
            "target": entry.target,
            "tenant": entry.tenant,
            "reason": entry.reason,
            "ticket": entry.ticket,
            "details": json.dumps(entry.details, sort_keys=True, default=str),
            "head": head,
            "mid": mid,
            "tail": tail,
        },
    ).scalar_one()
    return int(row_id)


#: Stand-ins for the two values a statement fills in (deferred_params); NUL characters, which
#: no field of an entry holds, JSON-escaped so they cannot be confused with real content.
_TARGET = "\x00target\x00"
_COUNT = "\x00count\x00"


def deferred_params(entry: AuditEntry) -> dict[str, Any] | None:
    """The parameters of a statement that appends `entry` with two values only it knows:
    the target and details["count"] (statement submit_audit: the ids and the number of the
    jobs it inserted). The hashed body's parts come split around them (head as append sends
    it; mid, details and tail each as a head and a tail). None when a field of the entry
    holds a stand-in, so the parts cannot be told apart (the caller appends as usual)."""
    e = dataclasses.replace(entry, target=_TARGET, details={**as_stored(entry.details), "count": _COUNT})
    chain = chain_of(e.tenant)
    head, mid, tail = body_parts(e, chain)
    details = _json(e.details)
    count, target = _json(_COUNT), _json(_TARGET)
    if details.count(count) != 1 or mid.count(details) != 1 or tail.count(target) != 1:
        return None
    details_head, _, details_tail = details.partition(count)
    mid_head, _, mid_tail = mid.partition(details)
    tail_head, _, tail_tail = tail.partition(target)
    return {
        "chain": chain,
        "subject": e.subject,
        "scopes": sorted(e.scopes),
        "action": e.action,
        "tenant": e.tenant,
        "reason": e.reason,
        "ticket": e.ticket,
        "head": head,
        "details_head": details_head,
        "details_tail": details_tail,
        "mid_head": mid_head,
        "mid_tail": mid_tail,
        "tail_head": tail_head,
        "tail_tail": tail_tail,
    }


def rows(
    conn: sa.Connection,
    *,
    tenants: Sequence[str] | None = None,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
) -> list[sa.RowMapping]:
    """Entries, newest first, filtered by tenant set, action and subject."""
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
    chains: int = 0
    first_bad_id: int | None = None
    #: The chain the bad row is on ("legacy" for the chain before per-tenant chains).
    chain: str | None = None
    problem: str | None = None


LEGACY = "legacy"


def _entry(r: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        r["subject"], r["scopes"], r["action"], r["target"], r["tenant"], r["reason"], r["ticket"], r["details"]
    )


def _stream(conn: sa.Connection, statement: sa.TextClause, params: Mapping[str, Any]) -> Iterable[sa.RowMapping]:
    # The options go on the statement: Connection.execution_options() sets them on the
    # connection itself (SQLAlchemy 2), and every later read on it would open a server-side
    # cursor too.
    return conn.execute(statement.execution_options(stream_results=True, yield_per=1000), dict(params)).mappings()


def verify_legacy(conn: sa.Connection) -> Verdict:
    """The chain of rows written before chains were per tenant: in id order from GENESIS,
    ending where migration 0004 recorded its end."""
    legacy = conn.execute(stmt("audit_legacy")).mappings().one()
    prev_hash, expected_id, count, last_id = GENESIS, None, 0, None
    for r in _stream(conn, stmt("legacy_audit_rows"), {}):
        count += 1
        bad = None
        if expected_id is not None and r["id"] != expected_id:
            bad = f"rows {expected_id}..{r['id'] - 1} are missing"
        elif r["prev_hash"] != prev_hash:
            bad = "prev_hash does not match the previous row (a row was removed)"
        elif row_hash(prev_hash, r["at"], _entry(r)) != r["hash"]:
            bad = "the row's content does not match its hash (it was altered)"
        if bad is not None:
            return Verdict(False, count, 1, r["id"], LEGACY, bad)
        prev_hash, expected_id, last_id = r["hash"], r["id"] + 1, r["id"]
    if (last_id, prev_hash) != (legacy["last_id"], legacy["last_hash"]):
        return Verdict(
            False,
            count,
            1,
            legacy["last_id"],
            LEGACY,
            f"the legacy chain ends at row {last_id} but was closed at row {legacy['last_id']} (rows were removed)",
        )
    return Verdict(True, count, 1 if count else 0)


def verify_rows(
    rows: Iterable[Mapping[Any, Any]], *, chain: str, anchor_hash: str, first_seq: int = 1
) -> tuple[Verdict, str]:
    """Check rows of one chain from their own content alone: seq first_seq, first_seq + 1,
    ... from `anchor_hash` (the previous row's hash, or the chain's anchor), each hash over
    the one before. Returns the verdict and the last hash."""
    prev_hash, count, seq = anchor_hash, 0, first_seq
    for r in rows:
        count += 1
        bad = None
        if r["chain"] != chain:
            bad = f"the row belongs to chain {r['chain']!r}"
        elif r["chain_seq"] != seq:
            bad = f"rows {seq}..{r['chain_seq'] - 1} of the chain are missing"
        elif r["prev_hash"] != prev_hash:
            bad = "prev_hash does not match the previous row of the chain (a row was removed)"
        elif row_hash(prev_hash, r["at"], _entry(r), chain=chain, seq=seq) != r["hash"]:
            bad = "the row's content does not match its hash (it was altered)"
        if bad is not None:
            return Verdict(False, count, 1, r["id"], chain, bad), prev_hash
        prev_hash, seq = r["hash"], seq + 1
    return Verdict(True, count, 1), prev_hash


def verify_chain(conn: sa.Connection, head: sa.RowMapping) -> Verdict:
    """One per-tenant chain: its rows from its anchor, ending at the head its head row records."""
    chain = str(head["chain"])
    # Fetched in one go, on a client-side cursor: the rows are kept for the verdict anyway.
    # (bench/console.py's audit.verify of 2,611 rows in 8 chains: 51 ms median with a
    # server-side cursor per chain, 43 ms this way and with one JSON encoder, alternating.)
    rows = conn.execute(stmt("chain_audit_rows"), {"chain": chain}).mappings().all()
    verdict, last_hash = verify_rows(rows, chain=chain, anchor_hash=str(head["anchor_hash"]))
    if not verdict.ok:
        return verdict
    if verdict.rows != head["head_seq"] or last_hash != head["head_hash"]:
        where = head["head_id"] if not rows or verdict.rows < head["head_seq"] else rows[-1]["id"]
        return Verdict(
            False,
            verdict.rows,
            1,
            where,
            chain,
            f"the chain holds {verdict.rows} rows but its head says {head['head_seq']} (rows were removed)",
        )
    return verdict


def verify(conn: sa.Connection) -> Verdict:
    """Every chain: the legacy one, then each tenant's and the cross-tenant one. The first
    row that does not fit is named (an altered row, or the row after a removed one). Reads
    on a connection of its own in one REPEATABLE READ snapshot, so appends that commit
    meanwhile cannot look like a broken chain."""
    with conn.engine.connect().execution_options(isolation_level="REPEATABLE READ") as snap, snap.begin():
        return _verify(snap)


def _verify(conn: sa.Connection) -> Verdict:
    total = verify_legacy(conn)
    if not total.ok:
        return total
    rows_seen, chains = total.rows, total.chains
    heads = list(conn.execute(stmt("audit_chains")).mappings())
    known = {str(h["chain"]) for h in heads}
    for name in sorted(str(r[0]) for r in conn.execute(stmt("audit_chain_names"))):
        if name not in known:
            return Verdict(False, rows_seen, chains, None, name, "rows name a chain that has no head row")
    for head in heads:
        v = verify_chain(conn, head)
        rows_seen += v.rows
        chains += 1
        if not v.ok:
            return Verdict(False, rows_seen, chains, v.first_bad_id, v.chain, v.problem)
    return Verdict(True, rows_seen, chains)


def insert_token(
    conn: sa.Connection,
    *,
    token_sha256: str,
    subject: str,
    tenants: Sequence[str] | None,
    scopes: Sequence[str],
    created_by: str,
) -> int:
    params = {
        "h": token_sha256,
        "subject": subject,
        "tenants": None if tenants is None else sorted(tenants),
        "scopes": sorted(scopes),
        "by": created_by,
    }
    return int(conn.execute(stmt("insert_token"), params).scalar_one())


def find_token(conn: sa.Connection, token_sha256: str) -> sa.RowMapping | None:
    return conn.execute(stmt("find_token"), {"h": token_sha256}).mappings().first()


def set_token_scopes(conn: sa.Connection, *, token_sha256: str, scopes: Sequence[str]) -> None:
    conn.execute(stmt("set_token_scopes"), {"h": token_sha256, "scopes": sorted(scopes)})
