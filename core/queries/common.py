"""What every read of core.queries shares: the principal's visible tenants, plain values
(ISO 8601 times, strings for UUIDs) and checks of windows and states."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain.auth import Principal, Scope
from core.domain.states import State
from core.ledger.reads import Visible


def visible(principal: Principal, tenant: str | None) -> Visible:
    """The tenants the principal may read (just `tenant` when given). Raises Forbidden."""
    principal.require(Scope.READ, tenant)
    return Visible(tenant=tenant, tenants=None if principal.tenants is None else sorted(principal.tenants))


def plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as a dict of JSON-friendly values."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[str(key)] = value
    return out


def db_now(conn: sa.Connection) -> dt.datetime:
    """The database's now(): the clock every window of a read is measured on (constant within
    a transaction, so the reads of one render agree)."""
    now: dt.datetime = conn.execute(sa.select(sa.func.now())).scalar_one()
    return now


def since(since_s: float) -> float:
    """A look-back window in seconds. Raises InvalidInput outside 1 s to 30 days."""
    if not 0 < since_s <= 30 * 86400:
        raise errors.InvalidInput(f"the window must be between 1 second and 30 days, got {since_s}s")
    return since_s


def parse_state(state: str) -> State:
    try:
        return State(state)
    except ValueError:
        raise errors.InvalidInput(f"unknown state {state!r}; one of: {', '.join(s.value for s in State)}") from None
