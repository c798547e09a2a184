"""Overview: jobs by state now, the last hour's throughput and p95 run time, queue depth over
time, SLO burn-rate tiles per window and the top error clusters."""

from __future__ import annotations

import sqlalchemy as sa
import streamlit as st

from app import charts, common, labels
from core import queries
from core.domain import slo
from core.domain.states import State

#: Bucket wider than the epoch so far: the whole window falls in one row of
#: throughput_series, so its p95 is the window's exact p95 (not a mix of per-bucket ones).
WHOLE_WINDOW_BUCKET_S = 2**32
#: The figures at the top are "over the last hour".
HOUR_S = 3600
TOP_CLUSTERS = 10

session = common.page("Overview")
principal = session.principal

filters = st.columns(2)
with filters[0]:
    tenant = common.tenant_filter(principal, key="overview_tenant")
with filters[1]:
    depth_range_s = common.time_range(key="overview_range", label="Charts over")


def _rate(finished: int, seconds: float) -> str:
    return f"{finished / seconds:.3g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _render(conn: sa.Connection) -> None:
    stats = queries.job_stats(conn, principal, tenant=tenant)
    by = stats["by_state"]
    now_cols = st.columns(4)
    now_cols[0].metric("Queued", by[State.QUEUED], help="Ready and waiting for a worker.")
    now_cols[1].metric(
        "Running", by[State.RUNNING] + by[State.LEASED], help="Running, plus leased jobs a worker is starting."
    )
    now_cols[2].metric("Retrying", by[State.RETRYING], help="Failed, waiting for their next attempt.")
    now_cols[3].metric("Dead-lettered", by[State.DEAD_LETTERED], help="Failed for good; replay them on Dead letters.")
    st.caption(
        f"{stats['total']} jobs in all; throttled {by[State.THROTTLED]}, pending {by[State.PENDING]}, "
        f"succeeded {by[State.SUCCEEDED]}, canceled {by[State.CANCELED]}."
    )

    hour = queries.throughput_series(conn, principal, since_s=HOUR_S, bucket_s=WHOLE_WINDOW_BUCKET_S, tenant=tenant)
    finished = sum(int(r["finished"]) for r in hour)
    p95 = hour[0]["p95_duration_s"] if hour else None
    hour_cols = st.columns(2)
    hour_cols[0].metric("Jobs/s (last hour)", _rate(finished, HOUR_S), help=f"{finished} jobs finished in the hour.")
    hour_cols[1].metric("p95 run time (last hour)", _duration(p95))
    st.caption(f"{finished} jobs finished in the last hour.")

    st.subheader("SLO burn rate")
    burns = queries.burn_rates(conn, principal, tenant=tenant)
    tiles = st.columns(len(slo.WINDOWS))
    for col, window in zip(tiles, slo.WINDOWS, strict=True):
        rows = [r for r in burns if r["window"] == window]
        worst = max(rows, key=lambda r: r["burn_rate"], default=None)
        rate = worst["burn_rate"] if worst else 0.0
        name, colour, _ = labels.LEVELS[slo.level(rate)]
        with col, st.container(border=True):
            st.metric(f"Burn rate {window}", f"{rate:.1f}x")
            st.badge(name, color=colour)
            if worst is not None and worst["total"]:
                st.caption(
                    f"worst: {worst['tenant']} / {worst['job_type']}: {worst['failed']} of {worst['total']} failed"
                )
            else:
                st.caption("no finished jobs in this window")
    st.caption(
        "Burn rate = error ratio / (1 - target). Alerts: "
        + "; ".join(f"{rate}x over {long} and {short} ({severity})" for long, short, rate, severity in slo.ALERTS)
    )

    left, right = st.columns(2)
    with left:
        depth = queries.queue_depth_series(conn, principal, since_s=depth_range_s, tenant=tenant)
        if depth:
            st.plotly_chart(charts.queue_depth(depth), key="overview_depth_chart")
        else:
            st.info("No queue depth samples in this range yet (the scheduler records them).")
    with right:
        bucket_s = common.bucket_for(depth_range_s)
        series = queries.throughput_series(conn, principal, since_s=depth_range_s, bucket_s=bucket_s, tenant=tenant)
        if series:
            st.plotly_chart(charts.throughput(series, bucket_s), key="overview_throughput_chart")
        else:
            st.info("No jobs finished in this range.")

    st.subheader("Top error clusters (last hour)")
    clusters = queries.error_clusters(conn, principal, tenant=tenant, since_s=HOUR_S, limit=TOP_CLUSTERS)
    if clusters:
        st.dataframe(
            [
                {
                    "class": c["error_class"],
                    "count": c["count"],
                    "message": c["message"],
                    "last seen": c["last_seen"],
                    "job types": common.joined(c["job_types"]),
                    "sample jobs": common.joined(c["sample_job_ids"]),
                }
                for c in clusters
            ],
            hide_index=True,
            key="overview_clusters",
        )
    else:
        st.success("No failures in the last hour.")


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
