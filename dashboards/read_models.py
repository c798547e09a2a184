"""Read models of the console's panels: thin functions over core.queries returning plain rows.

Every read model takes (conn, principal, filters) so the console can draw any panel the same way;
panels that name the same read model share its rows, so a page runs each query once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import queries
from core.domain import errors
from core.domain.auth import Principal

#: A SQLAlchemy Connection. Dashboards hands it to core.queries untouched and never imports
#: SQLAlchemy itself (DESIGN.md section 2: dashboards reads only through core.queries).
Connection = Any
Rows = list[dict[str, Any]]
ReadModel = Callable[[Connection, Principal, "Filters"], Rows]

#: Bucket of the error and lease-expiration series: the panels say "per 5 minutes", as the
#: Grafana twins of these panels do with increase(...[5m]).
ERROR_BUCKET_S = 300
#: Most error clusters a panel lists.
CLUSTER_LIMIT = 20
#: Points a throughput chart aims for, whatever the time range.
THROUGHPUT_POINTS = 120


@dataclass(frozen=True)
class Filters:
    """What the console's filter bar selects. None means every tenant / job type visible."""

    tenant: str | None = None
    job_type: str | None = None
    since_s: int = 3600

    def __post_init__(self) -> None:
        if self.since_s <= 0:
            raise errors.InvalidInput(f"since_s must be positive, got {self.since_s}")


def throughput_bucket_s(since_s: int) -> int:
    """Bucket width for a throughput chart over `since_s`: at least a minute."""
    return max(60, since_s // THROUGHPUT_POINTS)


def job_counts(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """[{"state", "count"}] for every state, now. The ledger counts by tenant only, so the job
    type filter does not apply."""
    stats = queries.job_stats(conn, principal, tenant=filters.tenant)
    return [{"state": state, "count": int(count)} for state, count in stats["by_state"].items()]


def throughput(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.throughput_series rows, each with the bucket width (`bucket_s`) the figures
    divide by to get jobs per second."""
    bucket_s = throughput_bucket_s(filters.since_s)
    rows = queries.throughput_series(
        conn,
        principal,
        since_s=filters.since_s,
        bucket_s=bucket_s,
        tenant=filters.tenant,
        job_type=filters.job_type,
    )
    return [{**row, "bucket_s": bucket_s} for row in rows]


def queue_depth(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.queue_depth_series rows: [{"at", "queue", "state", "count"}], the selected tenant's
    jobs only. The scheduler samples per queue, not per job type, so that filter does not apply."""
    return list(queries.queue_depth_series(conn, principal, since_s=filters.since_s, tenant=filters.tenant))


def error_clusters(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """The largest error clusters; with a job type selected, the clusters that touched it."""
    rows = queries.error_clusters(conn, principal, tenant=filters.tenant, since_s=filters.since_s, limit=CLUSTER_LIMIT)
    if filters.job_type is None:
        return list(rows)
    return [row for row in rows if filters.job_type in row["job_types"]]


def error_trend(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.error_trend rows per 5-minute bucket: [{"bucket", "fingerprint", "error_class",
    "count"}]. The failure-by-class and lease-expiration panels are drawn from the same rows."""
    return list(
        queries.error_trend(conn, principal, since_s=filters.since_s, bucket_s=ERROR_BUCKET_S, tenant=filters.tenant)
    )


def burn_rates(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.burn_rates rows: one per SLO, tenant, job type and window."""
    return list(queries.burn_rates(conn, principal, tenant=filters.tenant, job_type=filters.job_type))


READ_MODELS: dict[str, ReadModel] = {
    f.__name__: f for f in (job_counts, throughput, queue_depth, error_clusters, error_trend, burn_rates)
}


def run(name: str, conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """The rows of the read model `name`. Raises InvalidInput for an unknown name; whatever the
    query raises (Forbidden for a tenant outside the principal's set) passes through."""
    try:
        read_model = READ_MODELS[name]
    except KeyError:
        raise errors.InvalidInput(f"no read model {name!r}; one of: {', '.join(sorted(READ_MODELS))}") from None
    return read_model(conn, principal, filters)
