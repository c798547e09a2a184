"""Error clusters (class and normalised message) with their trend over time: the error_trend,
failures_by_class and error_clusters panels of dashboards/, drawn from their read models."""

from __future__ import annotations

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from dashboards.read_models import Filters

#: Panels drawn side by side; both draw from the error_trend read model (one query).
CHARTS: tuple[str, ...] = ("error_trend", "failures_by_class")

session = common.page("Errors")
principal = session.principal

cols = st.columns(2)
with cols[0]:
    tenant = common.tenant_filter(session, key="errors_tenant")
with cols[1]:
    range_s = common.time_range(key="errors_range")


def _render(conn: sa.Connection) -> None:
    drawn = common.Panels(conn, principal)
    filters = Filters(tenant=tenant, since_s=range_s)
    clusters = drawn.panel_rows("error_clusters", filters)
    trend = drawn.panel_rows("error_trend", filters)
    failures = sum(int(r["count"]) for r in trend)
    top = st.columns(2)
    top[0].metric("Failures in range", failures)
    top[1].metric("Clusters", len({r["fingerprint"] for r in trend}))
    if not clusters:
        st.success("No failures in this range.")
        return
    for col, key in zip(st.columns(len(CHARTS)), CHARTS, strict=True):
        with col:
            drawn.chart(key, filters, chart_key=f"errors_{key}_chart")
    st.dataframe(
        labels.table(
            (
                {
                    "class": c["error_class"],
                    "count": c["count"],
                    "message": c["message"],
                    "first seen": c["first_seen"],
                    "last seen": c["last_seen"],
                    "job types": common.joined(c["job_types"]),
                    "sources": common.joined(c["sources"]),
                    "sample jobs": common.joined(c["sample_job_ids"]),
                    "fingerprint": c["fingerprint"],
                }
                for c in clusters
            ),
            now=common.now(),
            times=("first seen", "last seen"),
        ),
        hide_index=True,
        key="errors_clusters",
    )


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
