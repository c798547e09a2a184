"""The ledger side of audit bundles (issue 13, docs/bundles.md): the reads an export makes
in its one snapshot, each yielding a file's records in the bundle's order, and the writes an
import makes into an empty ledger. Functions take a Connection and never commit.

Secrets are redacted exactly as everywhere else (payloads, results, parameters, evidence and
free text), so a record read back from an imported ledger redacts to itself: an import
followed by an export gives the same bytes.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from core.domain.events import redacted_payload
from core.domain.redaction import redact, redact_text
from core.ledger.statements import stmt

#: The audited actions of an operator that change flow control; throttles.jsonl names them.
FLOW_ACTIONS = (
    "pause",
    "resume",
    "throttle",
    "quota.set",
    "backlog.set",
    "blackout.add",
    "blackout.remove",
    "circuit.reset",
)
_BATCH = 5_000
#: At most this many bytes of JSON in one statement of an import.
_BATCH_BYTES = 32 << 20
#: Rows fetched at a time from wide tables (payloads and results of up to hundreds of KB).
_WIDE = 500


def tenant_id(conn: sa.Connection, tenant: str) -> int | None:
    row = conn.execute(stmt("bundle_tenant"), {"tenant": tenant}).first()
    return None if row is None else int(row[0])


def _stream(conn: sa.Connection, name: str, params: Mapping[str, Any], batch: int = _WIDE) -> Iterator[dict[str, Any]]:
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt(name), dict(params))
    keys = list(result.keys())
    for row in result:
        yield dict(zip(keys, row, strict=True))


def _text(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    for k in keys:
        if record[k] is not None:
            record[k] = redact_text(record[k])
    return record


def jobs(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The range's jobs (created in it), by id, each with its result."""
    for r in _stream(conn, "bundle_jobs", params):
        r["payload"] = redact(r["payload"])
        if r["result"] is not None:
            r["result"] = redact(r["result"])
        yield _text(r, "last_error", "progress_message")


def history(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[bytes | dict[str, Any]]:
    """Every history row of the range's jobs, by job and then sequence (the row's id): as its
    canonical line (bytes, without the newline) where the server built it, else as a record
    (a row with a reason or a message, which Python redacts). The server builds five in six
    lines of a typical history at a fraction of Python's cost; the integration tests check
    every line against the RFC 8785 reference."""
    result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(stmt("bundle_history"), dict(params))
    for line, raw in result:
        if line is not None:
            yield line.encode("utf-8")
        else:
            yield _text(json.loads(raw), "reason", "message")


def runs(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for r in _stream(conn, "bundle_runs", params, batch=50):  # a run carries its jobs: wide
        r["params"] = redact(r["params"])
        yield r


def throttles(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Rate changes, operators' flow-control actions and circuit transitions, merged by
    (at, kind, id)."""
    rates = ({"kind": "rate", **r} for r in _stream(conn, "bundle_rate_changes", params))
    actions = (
        {"kind": "action", **r, "details": redact(r["details"])}
        for r in _stream(conn, "bundle_flow_actions", {**params, "actions": list(FLOW_ACTIONS)})
    )
    circuits = ({"kind": "circuit", **r} for r in _stream(conn, "bundle_circuit_transitions", params))
    # Three streams, each ordered by (at, id): merging them keeps the file's order.
    return heapq.merge(rates, actions, circuits, key=lambda r: (r["at"], r["kind"], r["id"]))


def audit(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The tenant's own chain in the range, in chain order (which is time order: the chain's
    head is taken before its time is read). Not redacted: the hashes cover the rows.

    Each row also carries `hashed_details`: its details as the JSON text the hash covers.
    Canonical JSON writes 2.0 as 2, which the hash, written by Python's encoder, does not;
    the text keeps the chain verifiable from the bundle alone (and an import loads it)."""
    for r in _stream(conn, "bundle_audit", params):
        r["hashed_details"] = hashed_json(r["details"])
        yield r


def hashed_json(value: Any) -> str:
    """A value as core.ledger.audit.row_hash writes it into the hashed body."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def audit_anchor(conn: sa.Connection, params: Mapping[str, Any]) -> dict[str, Any]:
    row = conn.execute(stmt("bundle_audit_anchor"), dict(params)).mappings().one()
    return {"chain": params["tenant"], "anchor_hash": row["anchor_hash"], "first_seq": int(row["first_seq"])}


def artifacts(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return _stream(conn, "bundle_artifacts", params)


def artifact_bytes(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
    """(sha256, bytes) of each distinct content of the range's artifacts, by digest."""
    result = conn.execution_options(stream_results=True, yield_per=16).execute(
        stmt("bundle_artifact_bytes"), dict(params)
    )
    for sha, data in result:
        yield str(sha), bytes(data)


def incidents(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for r in _stream(conn, "bundle_incidents", params):
        r["evidence"] = redact(r["evidence"])
        yield _text(r, "ack_reason", "resolve_reason")


def events(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for r in _stream(conn, "bundle_events", params):
        r["payload"] = redacted_payload(r["payload"])
        yield r


def sources(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return _stream(conn, "bundle_sources", params)


# -- import ----------------------------------------------------------------------------------


def ledger_in_use(conn: sa.Connection) -> bool:
    return bool(conn.execute(stmt("bundle_ledger_in_use")).scalar_one())


def load_rows(conn: sa.Connection, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows (JSON-shaped: times as text, nested values as JSON) into `table`, keeping
    their ids, in batches: the server turns each batch into rows of the table's own type
    (jsonb_populate_recordset), so every column converts as PostgreSQL converts it. Every
    row names the same columns; the others take their defaults. Returns how many were loaded."""
    if table not in _IMPORT_TABLES:
        raise ValueError(f"{table} is not a table an import writes")
    n = 0
    batch: list[str] = []
    size = 0

    def flush() -> None:
        # The batch's columns only, so the others take their defaults.
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE "
                f"SELECT {cols} FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb))"
            ),
            {"rows": "[" + ",".join(batch) + "]"},
        )

    cols = ""
    for row in rows:
        if not cols:
            cols = ", ".join(sorted(row))
        text = json.dumps(row)
        batch.append(text)
        size += len(text)
        # Bounded by rows and by bytes: one jsonb value holds at most 256 MB.
        if len(batch) == _BATCH or size >= _BATCH_BYTES:
            flush()
            n += len(batch)
            batch.clear()
            size = 0
    if batch:
        flush()
        n += len(batch)
    return n


#: The tables an import loads, in an order that meets every reference, with their id columns.
_IMPORT_TABLES: dict[str, str | None] = {
    "tenants": "id",
    "sources": "id",
    "runs": "id",
    "jobs": "id",
    "run_jobs": None,
    "dag_edges": None,
    "job_results": None,
    "job_history": "id",
    "throttles": "id",
    "circuit_transitions": "id",
    "audit_log": "id",
    "artifacts": "id",
    "incidents": "id",
    "events": "id",
}


def begin_restore(conn: sa.Connection) -> None:
    """Load rows as a restore does: without triggers or reference checks for this
    transaction (the bundle's rows were consistent where they were written, and their
    triggers' work, e.g. outbox events, is in the bundle already). Needs a role that may set
    session_replication_role (a superuser, or rds_superuser and the like)."""
    conn.execute(sa.text("SET LOCAL session_replication_role = replica"))


def set_sequences(conn: sa.Connection) -> None:
    """Every identity an import wrote past: the next row of each table gets a fresh id."""
    for table, column in _IMPORT_TABLES.items():
        if column is None:
            continue
        conn.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"greatest((SELECT max({column}) FROM {table}), 1), (SELECT count(*) > 0 FROM {table}))"
            )
        )


def set_audit_head(conn: sa.Connection, *, chain: str, anchor_hash: str, last: Mapping[str, Any] | None) -> None:
    """The imported chain's head: its last row (or its anchor when the range had none), so
    the next action appends after it."""
    conn.execute(
        sa.text(
            "INSERT INTO audit_chains (chain, anchor_hash, head_seq, head_hash, head_id) "
            "VALUES (:chain, :anchor, :seq, :hash, :id)"
        ),
        {
            "chain": chain,
            "anchor": anchor_hash,
            "seq": 0 if last is None else last["chain_seq"],
            "hash": anchor_hash if last is None else last["hash"],
            "id": None if last is None else last["id"],
        },
    )


def rebuild_totals(conn: sa.Connection, tenant_id: int) -> None:
    """The console's running totals of the imported tenant, counted from its rows."""
    conn.execute(
        sa.text(
            "INSERT INTO job_state_totals (tenant_id, state, jobs) "
            "SELECT tenant_id, state, count(*) FROM jobs WHERE tenant_id = :t AND state IN ('succeeded', 'canceled') "
            "GROUP BY tenant_id, state"
        ),
        {"t": tenant_id},
    )
    conn.execute(
        sa.text(
            "INSERT INTO submit_counters (tenant_id, job_type, submitted) "
            "SELECT tenant_id, job_type, count(*) FROM jobs WHERE tenant_id = :t GROUP BY tenant_id, job_type"
        ),
        {"t": tenant_id},
    )
