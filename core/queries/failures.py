"""Reads on failures and SLOs: error clusters, their trend, dead letters by cluster and burn
rates per SLO window."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.domain import fingerprints, redaction, slo
from core.domain.auth import Principal
from core.ledger.reads import failures as reads
from core.queries.common import plain, since, visible


def _with_message(row: sa.RowMapping) -> dict[str, Any]:
    out = plain(row)
    out["message"] = fingerprints.normalise(redaction.redact_text(out.pop("sample_message") or ""))
    return out


def error_clusters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, since_s: float = 3600, limit: int = 20
) -> list[dict[str, Any]]:
    """Failures in the window grouped by (class, fingerprint), biggest first: count, first and
    last seen, the normalised message, affected job types and sources, sample job ids."""
    rows = reads.error_clusters(conn, visible(principal, tenant), since_s=since(since_s), limit=limit)
    return [_with_message(r) for r in rows]


def error_trend(
    conn: sa.Connection, principal: Principal, *, since_s: float = 3600, bucket_s: int = 300, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Failures per cluster per time bucket."""
    rows = reads.error_trend(conn, visible(principal, tenant), since_s=since(since_s), bucket_s=bucket_s)
    return [plain(r) for r in rows]


def dead_letter_clusters(
    conn: sa.Connection, principal: Principal, *, tenant: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Dead-lettered jobs grouped by error cluster, biggest first, with their job ids."""
    return [_with_message(r) for r in reads.dead_letter_clusters(conn, visible(principal, tenant), limit=limit)]


def burn_rates(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    job_type: str | None = None,
    objective: slo.Slo | None = None,
) -> list[dict[str, Any]]:
    """Burn rate per tenant, job type and window: (dead-lettered / finished) / (1 - target);
    canceled jobs are excluded. Windows: core.domain.slo.WINDOWS."""
    objective = objective or slo.Slo()
    rows = reads.finished_by_window(conn, visible(principal, tenant), job_type=job_type, windows=slo.WINDOWS)
    out = []
    for r in rows:
        for name in slo.WINDOWS:
            total, failed = int(r[f"total_{name}"]), int(r[f"failed_{name}"])
            out.append(
                {
                    "slo": objective.name,
                    "tenant": r["tenant"],
                    "job_type": r["job_type"],
                    "window": name,
                    "failed": failed,
                    "total": total,
                    "error_ratio": failed / total if total else 0.0,
                    "burn_rate": slo.burn_rate(failed, total, objective.target),
                }
            )
    return out
