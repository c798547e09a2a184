"""Rate limits: upstream 429s and admission denials over time by kind, the rate changes of the
token buckets (who, why, and each host's rate over time) and the jobs waiting now by reason.
The charts are the flow-control panels of dashboards/ (the same declarations as Grafana's)."""

from __future__ import annotations

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import queries
from dashboards.read_models import Filters

#: Rate changes listed, newest first.
CHANGES_SHOWN = 500
#: Panels drawn two a row.
CHARTS: tuple[tuple[str, str], ...] = (("rate_limit_events", "jobs_waiting"), ("bucket_rate", "bucket_tokens"))

session = common.page("Rate limits")
principal = session.principal

cols = st.columns(2)
with cols[0]:
    tenant = common.tenant_filter(session, key="ratelimits_tenant")
with cols[1]:
    range_s = common.time_range(key="ratelimits_range")


def _render(conn: sa.Connection) -> None:
    drawn = common.Panels(conn, principal)
    filters = Filters(tenant=tenant, since_s=range_s)
    events = drawn.panel_rows("rate_limit_events", filters)
    waiting = {str(r["reason"]): int(r["count"]) for r in drawn.panel_rows("jobs_waiting", filters)}
    changes = queries.throttles(conn, principal, tenant=tenant, since_s=range_s, limit=CHANGES_SHOWN)

    top = st.columns(4)
    top[0].metric("Upstream 429s in range", sum(int(r["count"]) for r in events if r["kind"] == "upstream_429"))
    top[1].metric(
        "Admission denials in range",
        sum(int(r["count"]) for r in events if r["kind"] != "upstream_429"),
        help="Claims admission turned away (no token, no quota slot, paused, blackout, circuit open).",
    )
    top[2].metric("Rate changes in range", len(changes) if len(changes) < CHANGES_SHOWN else f"{CHANGES_SHOWN}+")
    top[3].metric("Waiting for a token", waiting.get("rate_limited", 0))

    st.subheader("Jobs waiting now")
    reasons = st.columns(len(waiting) or 1)
    for col, (reason, count) in zip(reasons, waiting.items(), strict=False):
        col.metric(labels.WAIT_SHORT.get(reason, reason), count, help=labels.WAIT_REASONS.get(reason))

    for row in CHARTS:
        for col, key in zip(st.columns(len(row)), row, strict=True):
            with col:
                drawn.chart(key, filters, chart_key=f"ratelimits_{key}_chart")

    st.subheader("Rate changes")
    if not changes:
        st.info("No rate changed in this range.")
        return
    st.caption(
        f"{len(changes)} changes, newest first"
        + (f" (the newest {CHANGES_SHOWN})." if len(changes) >= CHANGES_SHOWN else ".")
    )
    st.dataframe(
        labels.table(
            (
                {
                    "at": c["at"],
                    "tenant": c["tenant"],
                    "host": c["host"],
                    "old rate": labels.rate(c["old_rate"]),
                    "new rate": labels.rate(c["new_rate"]),
                    "reason": c["reason"],
                    "actor": c["actor"],
                }
                for c in changes
            ),
            now=common.now(),
            times=("at",),
        ),
        hide_index=True,
        key="ratelimits_changes",
    )


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
