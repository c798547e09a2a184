"""Overview: jobs by state now, the last hour's jobs/s and p95 run time, SLO burn-rate tiles per
window, the queue depth and throughput panels over time and the top error clusters. The charts
are the panels of dashboards/ (the same declarations Grafana is generated from)."""

from __future__ import annotations

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import queries
from core.domain import slo
from core.domain.states import State
from dashboards import panels
from dashboards.read_models import Filters

#: The figures at the top are "over the last hour".
HOUR_S = 3600
TOP_CLUSTERS = 10
#: Panels drawn under the tiles, two a row, over the "Charts over" range.
CHARTS: tuple[tuple[str, str], ...] = (("queue_depth", "throughput"), ("duration_p95", "outcomes"))

session = common.page("Overview")
principal = session.principal

filter_cols = st.columns(2)
with filter_cols[0]:
    tenant = common.tenant_filter(session, key="overview_tenant")
with filter_cols[1]:
    charts_range_s = common.time_range(key="overview_range", label="Charts over")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return labels.DASH
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _rate_help(finished: int, span_s: float) -> str:
    """What the jobs/s tile is over: the hour, or the part of it since the first job finished."""
    if not finished:
        return "No job finished in the last hour."
    if span_s >= HOUR_S:
        return f"{finished} jobs finished in the last hour."
    return (
        f"{finished} jobs finished in the last hour, all of them in the last {labels.duration(span_s)}:"
        " jobs/s is over that time."
    )


def _render(conn: sa.Connection) -> None:
    drawn = common.Panels(conn, principal)
    hour = Filters(tenant=tenant, since_s=HOUR_S)
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

    summary = queries.run_time_summary(conn, principal, since_s=HOUR_S, tenant=tenant, job_type=None)
    finished = int(summary["finished"])
    hour_cols = st.columns(2)
    rate_help = _rate_help(finished, float(summary["rate_span_s"]))
    hour_cols[0].metric("Jobs/s (last hour)", f"{summary['jobs_per_s']:.3g}", help=rate_help)
    hour_cols[1].metric("p95 run time (last hour)", _duration(summary["p95_duration_s"]))
    st.caption(rate_help)

    runs = queries.runs_overview(conn, principal, tenant=tenant)
    run_cols = st.columns(3)
    run_cols[0].metric("Runs running", runs["running"], help="DAG runs with jobs still to end.")
    run_cols[1].metric("Runs failed (last hour)", runs["failed_1h"], help="Runs that ended failed in the last hour.")
    run_cols[2].metric(
        "p95 run duration (last day)",
        _duration(runs["p95_duration_s"]),
        help=f"Over the {runs['finished_24h']} run(s) that ended in the last day.",
    )
    st.page_link("pages/7_Runs.py", label="All runs", icon=":material/account_tree:")

    st.subheader(panels.panel("burn_rate").title)
    burns = drawn.panel_rows("burn_rate", hour)
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

    charts = Filters(tenant=tenant, since_s=charts_range_s)
    for row in CHARTS:
        for col, key in zip(st.columns(len(row)), row, strict=True):
            with col:
                drawn.chart(key, charts, chart_key=f"overview_{key}_chart")

    st.subheader(f"{panels.panel('error_clusters').title} (last hour)")
    clusters = drawn.panel_rows("error_clusters", hour)[:TOP_CLUSTERS]
    if clusters:
        st.dataframe(
            labels.table(
                (
                    {
                        "class": c["error_class"],
                        "count": c["count"],
                        "message": c["message"],
                        "last seen": c["last_seen"],
                        "job types": common.joined(c["job_types"]),
                        "sample jobs": common.joined(c["sample_job_ids"]),
                    }
                    for c in clusters
                ),
                now=common.now(),
                times=("last seen",),
            ),
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
