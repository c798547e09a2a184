"""Read models of the console's panels: thin functions over core.queries returning plain rows.

Every read model takes (conn, principal, filters) so the console can draw any panel the same way;
panels that name the same read model share its rows, so a page runs each query once."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import queries
from core.domain import errors
from core.domain.auth import Principal

#: A SQLAlchemy Connection. Dashboards hands it to core.queries untouched and never imports
#: SQLAlchemy itself (docs/design.md, "Layout": dashboards reads only through core.queries).
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
#: Most rate changes a rate chart reads; beyond it the chart starts at the oldest one read.
RATE_CHANGE_LIMIT = 2000


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


# -- flow control ------------------------------------------------------------------------


def sources(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.sources rows: every visible source with its bucket, circuit, slots, pause,
    blackout and waiting jobs now. Sources are not typed, so the job type filter does not apply."""
    return list(queries.sources(conn, principal, tenant=filters.tenant))


def buckets(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """One row per token bucket (tenant and upstream host) now: [{"tenant", "host", "tokens",
    "capacity", "rate", "base_rate", "blocked_until", "denied_total", "upstream_429_total",
    "sources"}]. Sources of one host share its bucket."""
    return bucket_rows(queries.sources(conn, principal, tenant=filters.tenant))


def bucket_rows(source_rows: Sequence[Mapping[str, Any]]) -> Rows:
    """The buckets of queries.sources rows, one row each, with the names of their sources."""
    out: dict[int, dict[str, Any]] = {}
    for s in source_rows:
        if s["bucket_id"] is None:
            continue
        row = out.setdefault(
            int(s["bucket_id"]),
            {
                "tenant": s["tenant"],
                "host": s["host"],
                "tokens": s["tokens"],
                "capacity": s["capacity"],
                "rate": s["rate"],
                "base_rate": s["base_rate"],
                "blocked_until": s["blocked_until"],
                "denied_total": s["denied_total"],
                "upstream_429_total": s["upstream_429_total"],
                "sources": [],
            },
        )
        row["sources"].append(s["name"])
    return sorted(out.values(), key=lambda r: (str(r["tenant"]), str(r["host"])))


def bucket_rates(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """The refill rate of every visible bucket over the range, as the steps of a step line
    (rate_steps): from the rate changes (queries.throttles) and the buckets now."""
    changes = queries.throttles(
        conn, principal, tenant=filters.tenant, since_s=filters.since_s, limit=RATE_CHANGE_LIMIT
    )
    now = dt.datetime.now(dt.UTC)
    return rate_steps(
        changes,
        bucket_rows(queries.sources(conn, principal, tenant=filters.tenant)),
        now=now,
        since_s=filters.since_s,
        complete=len(changes) < RATE_CHANGE_LIMIT,
    )


def source_rates(conn: Connection, principal: Principal, *, tenant: str, source: str, since_s: int) -> Rows:
    """bucket_rates for the bucket of one source (the Sources page's chart)."""
    changes = queries.throttles(conn, principal, tenant=tenant, source=source, since_s=since_s, limit=RATE_CHANGE_LIMIT)
    now = dt.datetime.now(dt.UTC)
    mine = [s for s in queries.sources(conn, principal, tenant=tenant) if s["name"] == source]
    return rate_steps(
        changes,
        bucket_rows(mine),
        now=now,
        since_s=since_s,
        complete=len(changes) < RATE_CHANGE_LIMIT,
    )


def rate_steps(
    changes: Sequence[Mapping[str, Any]],
    buckets_now: Sequence[Mapping[str, Any]],
    *,
    now: dt.datetime,
    since_s: int,
    complete: bool = True,
) -> Rows:
    """Rows [{"at", "tenant", "host", "rate", "base_rate", "reason", "actor"}] per bucket, oldest
    first: the rate in force when the range starts (the first change's old rate; the rate now
    if nothing changed), each change's new rate, and the rate now. base_rate is the configured
    rate now. With `complete` False (the changes were cut at a limit) the line starts at the
    oldest change read instead of at the start of the range."""
    start = (now - dt.timedelta(seconds=since_s)).isoformat()
    per_bucket: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for c in changes:
        per_bucket[(str(c["tenant"]), str(c["host"]))].append(c)
    out: Rows = []
    for b in buckets_now:
        key = (str(b["tenant"]), str(b["host"]))
        steps = sorted(per_bucket.get(key, []), key=lambda c: (dt.datetime.fromisoformat(c["at"]), int(c["id"])))
        base = {"tenant": key[0], "host": key[1], "base_rate": b["base_rate"]}
        first_rate = steps[0]["old_rate"] if steps else b["rate"]
        if complete and first_rate is not None:
            out.append({**base, "at": start, "rate": first_rate, "reason": None, "actor": None})
        for c in steps:
            out.append({**base, "at": c["at"], "rate": c["new_rate"], "reason": c["reason"], "actor": c["actor"]})
        out.append({**base, "at": now.isoformat(), "rate": b["rate"], "reason": None, "actor": None})
    return out


def rate_limit_step_s(since_s: int) -> int:
    """Step of the rate-limit series over `since_s`: at least a minute."""
    return throughput_bucket_s(since_s)


def rate_limit_events(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.rate_limit_series rows [{"at", "kind", "count"}] (kind upstream_429 or the
    reason admission held a job back), each with the step width (`step_s`)."""
    step_s = rate_limit_step_s(filters.since_s)
    rows = queries.rate_limit_series(conn, principal, tenant=filters.tenant, since_s=filters.since_s, step_s=step_s)
    return [{**row, "step_s": step_s} for row in rows]


def quotas(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """queries.quotas rows: slots in use and limits per tenant and job type (the selected one)."""
    rows = queries.quotas(conn, principal, tenant=filters.tenant)
    return [r for r in rows if filters.job_type is None or r["job_type"] == filters.job_type]


def waiting(conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """Throttled jobs now by wait reason, every reason: [{"reason", "count"}]. The ledger
    counts by tenant only, so the job type filter does not apply."""
    counts = queries.waiting_by_reason(conn, principal, tenant=filters.tenant)
    return [{"reason": reason, "count": int(count)} for reason, count in counts.items()]


READ_MODELS: dict[str, ReadModel] = {
    f.__name__: f
    for f in (
        job_counts,
        throughput,
        queue_depth,
        error_clusters,
        error_trend,
        burn_rates,
        sources,
        buckets,
        bucket_rates,
        rate_limit_events,
        quotas,
        waiting,
    )
}


def run(name: str, conn: Connection, principal: Principal, filters: Filters) -> Rows:
    """The rows of the read model `name`. Raises InvalidInput for an unknown name; whatever the
    query raises (Forbidden for a tenant outside the principal's set) passes through."""
    try:
        read_model = READ_MODELS[name]
    except KeyError:
        raise errors.InvalidInput(f"no read model {name!r}; one of: {', '.join(sorted(READ_MODELS))}") from None
    return read_model(conn, principal, filters)
