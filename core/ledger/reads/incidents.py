"""Incidents as operators read them, newest first (unresolved first where asked)."""

from __future__ import annotations

import sqlalchemy as sa

from core.ledger.reads import Visible

COLUMNS = """i.id, i.kind, i.state, i.severity, t.name AS tenant, i.scope, i.dedup_key, i.opened_at,
    i.last_seen_at, i.clear_since, i.resolved_at, i.occurrences, i.evidence, i.acknowledged_by,
    i.acknowledged_at, i.ack_reason, i.resolved_by, i.resolve_reason"""


def list_incidents(
    conn: sa.Connection, v: Visible, *, states: tuple[str, ...] | None, unresolved_first: bool, limit: int
) -> list[sa.RowMapping]:
    where, params = v.where("t")
    clauses = [where]
    if states is not None:
        clauses.append("i.state = ANY(:states)")
        params["states"] = list(states)
    order = "(i.state = 'resolved'), i.id DESC" if unresolved_first else "i.id DESC"
    sql = (
        f"SELECT {COLUMNS} FROM incidents AS i LEFT JOIN tenants AS t ON t.id = i.tenant_id "
        f"WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT :limit"
    )
    return list(conn.execute(sa.text(sql), {**params, "limit": limit}).mappings())


def get_incident(conn: sa.Connection, v: Visible, incident_id: int) -> sa.RowMapping | None:
    where, params = v.where("t")
    sql = (
        f"SELECT {COLUMNS} FROM incidents AS i LEFT JOIN tenants AS t ON t.id = i.tenant_id "
        f"WHERE i.id = :id AND {where}"
    )
    return conn.execute(sa.text(sql), {**params, "id": incident_id}).mappings().first()


def critical_open(conn: sa.Connection, v: Visible) -> int:
    """Unresolved critical incidents: the console's banner."""
    where, params = v.where("t")
    sql = (
        "SELECT count(*) FROM incidents AS i LEFT JOIN tenants AS t ON t.id = i.tenant_id "
        f"WHERE i.state <> 'resolved' AND i.severity = 'critical' AND {where}"
    )
    return int(conn.execute(sa.text(sql), params).scalar_one())
