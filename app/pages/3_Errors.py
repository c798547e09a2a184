"""Error clusters (class and normalised message) with their trend over time."""

from __future__ import annotations

import sqlalchemy as sa
import streamlit as st

from app import charts, common, labels
from core import queries

CLUSTER_LIMIT = 20

session = common.page("Errors")
principal = session.principal

cols = st.columns(2)
with cols[0]:
    tenant = common.tenant_filter(principal, key="errors_tenant")
with cols[1]:
    range_s = common.time_range(key="errors_range")


def _render(conn: sa.Connection) -> None:
    clusters = queries.error_clusters(conn, principal, tenant=tenant, since_s=range_s, limit=CLUSTER_LIMIT)
    trend = queries.error_trend(conn, principal, since_s=range_s, bucket_s=common.bucket_for(range_s), tenant=tenant)
    failures = sum(int(r["count"]) for r in trend)
    top = st.columns(2)
    top[0].metric("Failures in range", failures)
    top[1].metric("Clusters", len({r["fingerprint"] for r in trend}))
    if not clusters:
        st.success("No failures in this range.")
        return
    names = {c["fingerprint"]: labels.cluster_title(c["error_class"], c["message"])[:60] for c in clusters}
    st.plotly_chart(charts.error_trend(trend, names), key="errors_trend_chart")
    st.dataframe(
        [
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
        ],
        hide_index=True,
        key="errors_clusters",
    )


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
