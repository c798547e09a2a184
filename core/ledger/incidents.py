"""Incidents in the ledger: the condition reads and the writes that open, bump, clear and
resolve incidents (core/ledger/sql/statements/incidents.sql). Functions take a Connection and
never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from core.ledger.statements import stmt

Row = sa.RowMapping


def _all(conn: sa.Connection, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    return list(conn.execute(stmt(name), dict(params or {})).mappings())


def dead_letter_counts(conn: sa.Connection, *, window_s: float, at_least: int) -> list[Row]:
    return _all(conn, "dead_letter_counts", {"window_s": window_s, "min": at_least})


def open_circuits(conn: sa.Connection, *, open_s: float) -> list[Row]:
    return _all(conn, "open_circuits", {"open_s": open_s})


def throttled_sources(conn: sa.Connection) -> list[Row]:
    return _all(conn, "throttled_sources")


def long_running(conn: sa.Connection, *, running_s: float) -> list[Row]:
    return _all(conn, "long_running", {"running_s": running_s})


def long_ready(conn: sa.Connection, *, ready_s: float) -> list[Row]:
    return _all(conn, "long_ready", {"ready_s": ready_s})


def lock(conn: sa.Connection) -> None:
    conn.execute(stmt("lock_incidents"))


def unresolved(conn: sa.Connection) -> list[Row]:
    return _all(conn, "unresolved_incidents")


def pending(conn: sa.Connection) -> list[Row]:
    return _all(conn, "pending_incidents")


def _json(values: Sequence[Mapping[str, Any]]) -> list[str]:
    return [json.dumps(v, sort_keys=True, default=str) for v in values]


def upsert_pending(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(stmt("upsert_pending"), _columns(rows))


def forget_pending(conn: sa.Connection, keys: Sequence[str]) -> None:
    if keys:
        conn.execute(stmt("forget_pending"), {"keys": list(keys)})


def open_incidents(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
    if not rows:
        return []
    return list(conn.execute(stmt("open_incidents"), _columns(rows)).mappings())


def bump(
    conn: sa.Connection, ids: Sequence[int], severities: Sequence[str], evidence: Sequence[Mapping[str, Any]]
) -> None:
    if ids:
        conn.execute(
            stmt("bump_incidents"), {"ids": list(ids), "severities": list(severities), "evidence": _json(evidence)}
        )


def clear(conn: sa.Connection, ids: Sequence[int], *, quiet_s: float, actor: str) -> list[Row]:
    if not ids:
        return []
    return list(
        conn.execute(stmt("clear_incidents"), {"ids": list(ids), "quiet_s": quiet_s, "actor": actor}).mappings()
    )


def unresolved_counts(conn: sa.Connection) -> list[Row]:
    """(kind, severity, n) of the incidents not resolved yet."""
    return _all(conn, "unresolved_counts")


def lock_incident(conn: sa.Connection, incident_id: int) -> Row | None:
    return conn.execute(stmt("lock_incident"), {"id": incident_id}).mappings().first()


def acknowledge(conn: sa.Connection, incident_id: int, *, actor: str, reason: str) -> bool:
    return (
        conn.execute(stmt("acknowledge_incident"), {"id": incident_id, "actor": actor, "reason": reason}).rowcount > 0
    )


def resolve(conn: sa.Connection, incident_id: int, *, actor: str, reason: str) -> bool:
    moved = conn.execute(stmt("resolve_incident"), {"id": incident_id, "actor": actor, "reason": reason})
    return moved.rowcount > 0


def announce(conn: sa.Connection, events: Sequence[tuple[int | None, str, Mapping[str, Any]]]) -> None:
    """Outbox events (tenant id, kind, payload) in the caller's transaction."""
    if events:
        conn.execute(
            stmt("incident_event"),
            {
                "tenant_ids": [t for t, _, _ in events],
                "kinds": [k for _, k, _ in events],
                "payloads": _json([p for _, _, p in events]),
            },
        )


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {
        "keys": [r["dedup_key"] for r in rows],
        "tenant_ids": [r["tenant_id"] for r in rows],
        "kinds": [r["kind"] for r in rows],
        "scopes": [r["scope"] for r in rows],
        "severities": [r["severity"] for r in rows],
        "evidence": _json([r["evidence"] for r in rows]),
    }
