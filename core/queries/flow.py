"""Reads on flow control: sources (bucket, circuit, slots, pause, blackout, waiting jobs and a
health word), pauses, blackouts, quotas, backlog limits, rate changes and admission series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.domain.auth import Principal
from core.domain.states import WAIT_REASONS
from core.ledger.reads import flow as reads
from core.queries.common import plain, since, visible


def _health(src: Mapping[Any, Any]) -> str:
    """One word for a source's state, worst first."""
    if src["paused_reason"] is not None:
        return "paused"
    if src["blackout_until"] is not None:
        return "blackout"
    if src["circuit_state"] != "closed":
        return "circuit_" + str(src["circuit_state"])
    if src["blocked_until"] is not None or (src["rate"] is not None and src["rate"] < src["base_rate"]):
        return "throttled"
    return "ok"


def _source_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = plain(row)
    window = str(row["circuit_window"] or "")
    out["circuit_failures"] = window.count("1")
    out["circuit_outcomes"] = len(window)
    out.pop("circuit_window")
    out["health"] = _health(row)
    for key in ("tokens", "rate", "base_rate", "capacity", "min_rate", "ceiling"):
        if out.get(key) is not None:
            out[key] = round(float(out[key]), 3)
    return out


def sources(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every visible source with its bucket (tokens now, adaptive and configured rate),
    circuit, slots in use, pause, blackout and waiting jobs by reason, and a health word."""
    return [_source_row(r) for r in reads.sources(conn, visible(principal, tenant))]


def source(conn: sa.Connection, principal: Principal, *, tenant: str, name: str) -> dict[str, Any]:
    """One source as in `sources`, plus its pauses, blackouts, the tenant's quotas and the
    last rate changes of its bucket. Raises NotFound."""
    found = [s for s in sources(conn, principal, tenant=tenant) if s["name"] == name]
    if not found:
        raise errors.NotFound(f"tenant {tenant!r} has no source {name!r}; list them with `orch sources list`")
    out = found[0]
    out["pauses"] = [p for p in pauses(conn, principal, tenant=tenant) if p["source"] in (None, name)]
    out["blackouts"] = [b for b in blackouts(conn, principal, tenant=tenant) if b["source"] in (None, name)]
    out["quotas"] = quotas(conn, principal, tenant=tenant)
    out["throttles"] = throttles(conn, principal, tenant=tenant, source=name, limit=20)
    return out


def pauses(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    return [plain(r) for r in reads.pauses(conn, visible(principal, tenant))]


def blackouts(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, include_past: bool = False
) -> list[dict[str, Any]]:
    """Blackouts with their current or next window and whether it is active now."""
    return [plain(r) for r in reads.blackouts(conn, visible(principal, tenant), include_past=include_past)]


def quotas(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Quotas per tenant and job type with the slots in use and the starts of the last hour."""
    return [plain(r) for r in reads.quotas(conn, visible(principal, tenant))]


def backlog_limits(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Tenants with a backlog limit, their policy, backlog now and deferred jobs."""
    return [plain(r) for r in reads.backlog_limits(conn, visible(principal, tenant))]


def throttles(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    source: str | None = None,
    since_s: float | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Rate changes of buckets (adaptive and manual), newest first, with the host."""
    rows = reads.throttles(
        conn,
        visible(principal, tenant),
        source=source,
        since_s=None if since_s is None else since(since_s),
        limit=limit,
    )
    return [plain(r) for r in rows]


def waiting_by_reason(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> dict[str, int]:
    """Throttled jobs by wait reason (every reason present, zero when none wait)."""
    out = dict.fromkeys(WAIT_REASONS, 0)
    out.update(reads.waiting_by_reason(conn, visible(principal, tenant)))
    return out


def rate_limit_series(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    since_s: float = 3600,
    step_s: int = 60,
) -> list[dict[str, Any]]:
    """Per time step: upstream 429s (jobs sent back by the upstream) and admission denials
    by reason (jobs Orch held back itself), from the job history."""
    rows = reads.rate_limit_series(conn, visible(principal, tenant), since_s=since(since_s), step_s=step_s)
    return [plain(r) for r in rows]
