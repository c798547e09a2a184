"""Reads on incidents: the list (`orch incidents list`, the console), one incident, and the
count of critical ones still unresolved (the console's banner)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain import incidents as domain
from core.domain.auth import Principal
from core.ledger.reads import incidents as reads
from core.queries.common import plain, visible


def parse_incident_state(state: str) -> tuple[str, ...] | None:
    """`all` (None: every state) or one of domain.STATES. Raises InvalidInput."""
    if state == "all":
        return None
    if state not in domain.STATES:
        raise errors.InvalidInput(f"unknown incident state {state!r}; one of: all, {', '.join(domain.STATES)}")
    return (state,)


def list_incidents(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    state: str = "all",
    unresolved_first: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Incidents newest first (with `unresolved_first`, the unresolved ones before the rest)."""
    states = parse_incident_state(state)
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    rows = reads.list_incidents(
        conn, visible(principal, tenant), states=states, unresolved_first=unresolved_first, limit=limit
    )
    return [plain(r) for r in rows]


def get_incident(conn: sa.Connection, principal: Principal, incident_id: int) -> dict[str, Any]:
    row = reads.get_incident(conn, visible(principal, None), incident_id)
    if row is None:
        raise errors.NotFound(f"no incident {incident_id}; list them with `orch incidents list`")
    return plain(row)


def critical_incidents_open(conn: sa.Connection, principal: Principal) -> int:
    return reads.critical_open(conn, visible(principal, None))
