"""Watermarks: per tenant, source and job type the event time up to which its data is
complete (the gap-free prefix of its done windows, or what its handlers reported) and how
far that lags behind now; the lag over time (sampled once a minute); and the holes of each
stream, the gaps between done windows past its watermark."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from app import schedule_views as views
from core import queries

session = common.page("Watermarks")
principal = session.principal

cols = st.columns(2)
with cols[0]:
    tenant = common.tenant_filter(session, key="watermarks_tenant")
with cols[1]:
    range_s = common.time_range(key="watermarks_range", label="Lag over")


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return labels.DASH
    return "none" if seconds <= 0 else labels.duration(seconds)


def _kind(w: dict[str, Any]) -> str:
    """Where the watermark comes from: its windows, or its handlers' reports."""
    return "windows" if w["windowed"] is not None else "reported by handlers"


def _table(rows: list[dict[str, Any]]) -> None:
    st.dataframe(
        views.table(
            [
                {
                    "tenant": w["tenant"],
                    "source": w["source"],
                    "job type": w["job_type"],
                    "watermark": w["watermark"],
                    "lag": _lag(w["lag_s"]),
                    "holes": len(w["holes"]),
                    "from": _kind(w),
                    "moved by": w["moved_by"],
                    "moved": w["moved_at"],
                }
                for w in rows
            ],
            times=("watermark", "moved"),
        ),
        hide_index=True,
        key="watermarks_table",
    )


def _holes(rows: list[dict[str, Any]]) -> None:
    st.subheader("Holes")
    with_holes = [w for w in rows if w["holes"]]
    if not with_holes:
        st.success("No holes: past each watermark, every stream's done windows follow on without a gap.")
        return
    st.caption(
        "Event time past a watermark that no done window covers, with done windows after it: a backfill over a "
        "hole moves the watermark on."
    )
    for n, w in enumerate(with_holes):
        holes = w["holes"]
        st.markdown(f"**{views.stream_name(w)}**: {len(holes)} hole{'' if len(holes) == 1 else 's'}")
        st.dataframe(
            [
                {
                    "from (UTC)": labels.utc(start),
                    "to (UTC)": labels.utc(end),
                    "length": views.length(start, end),
                }
                for start, end in holes
            ],
            hide_index=True,
            key=f"watermarks_holes_{n}",
        )


def _render(conn: sa.Connection) -> None:
    rows = queries.list_watermarks(conn, principal, tenant=tenant)
    if not rows:
        st.info("No watermarks yet: a schedule's or backfill's windows, or a handler's ctx.watermark(), start one.")
        return
    worst = max((w for w in rows if w["lag_s"] is not None), key=lambda w: w["lag_s"], default=None)
    st.caption(
        f"{len(rows)} watermarks, {sum(1 for w in rows if w['holes'])} with holes"
        + (f"; the furthest behind: {views.stream_name(worst)}, {_lag(worst['lag_s'])}." if worst else ".")
    )
    _table(rows)
    series = queries.watermark_series(conn, principal, tenant=tenant, since_s=range_s)
    common.chart(views.lag_figure(series), title="Watermark lag", empty=views.NO_LAG, key="watermarks_lag_chart")
    _holes(rows)


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
