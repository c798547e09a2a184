"""Incidents the scheduler opened: unresolved first, each with its evidence (the jobs and
sources involved) and buttons to acknowledge or resolve it with a reason."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import queries

#: Unresolved incidents shown with their evidence and buttons (the table lists the rest).
DETAILED = 20

session = common.page("Incidents")
principal = session.principal

cols = st.columns([2, 2, 1])
with cols[0]:
    tenant = common.tenant_filter(session, key="incidents_tenant")
with cols[1]:
    shown = st.selectbox("State", labels.INCIDENT_STATES, key="incidents_state")
with cols[2]:
    limit = st.selectbox("Newest", [100, 500, 2000], key="incidents_limit")


def _rows(conn: sa.Connection) -> list[dict[str, Any]]:
    state = "all" if shown in ("unresolved", "all") else shown
    rows = queries.list_incidents(conn, principal, tenant=tenant, state=state, unresolved_first=True, limit=int(limit))
    if shown == "unresolved":
        rows = [r for r in rows if r["state"] != "resolved"]
    return rows


def _evidence(r: dict[str, Any]) -> None:
    ev = r["evidence"] or {}
    job_ids = ev.get("job_ids") or []
    if job_ids:
        st.markdown("Jobs: " + ", ".join(str(j) for j in job_ids) + " (newest first)")
        st.page_link("pages/1_Jobs.py", label="Open the Jobs page")
        st.page_link("pages/2_Dead_letters.py", label="Open the dead letters")
    if ev.get("source"):
        st.markdown(f"Source: **{ev['source']}** ({ev.get('host', '')})")
        st.page_link("pages/5_Sources.py", label="Open the Sources page")
    st.code(json.dumps(ev, sort_keys=True, indent=1), language="json")


def _detail(r: dict[str, Any]) -> None:
    title = f"#{r['id']} {r['severity']} {r['kind']} · {r['dedup_key']} · {r['state']}"
    with st.expander(title, expanded=r["severity"] == "critical"):
        st.caption(
            f"Opened {r['opened_at']}, last seen {r['last_seen_at']}, {r['occurrences']} occurrence(s)"
            + (f"; acknowledged by {r['acknowledged_by']}: {r['ack_reason']}" if r["acknowledged_by"] else "")
            + (f"; condition clear since {r['clear_since']}" if r["clear_since"] else "")
        )
        _evidence(r)
        left, right = st.columns(2)
        with left:
            common.action_button(
                session,
                "Acknowledge",
                common.Action(
                    "ack_incident", (), f"Acknowledge incident {r['id']}", tenant=r["tenant"], incident_id=r["id"]
                ),
                key=f"incidents_ack_{r['id']}",
                blocked=None if r["state"] == "open" else f"Acknowledged by {r['acknowledged_by']}.",
            )
        with right:
            common.action_button(
                session,
                "Resolve",
                common.Action(
                    "resolve_incident", (), f"Resolve incident {r['id']}", tenant=r["tenant"], incident_id=r["id"]
                ),
                key=f"incidents_resolve_{r['id']}",
            )


def _render(conn: sa.Connection) -> None:
    rows = _rows(conn)
    if not rows:
        st.info(labels.NO_INCIDENTS)
        return
    open_rows = [r for r in rows if r["state"] != "resolved"]
    st.caption(f"{len(rows)} incident(s), {len(open_rows)} unresolved; unresolved first, newest first.")
    for r in open_rows[:DETAILED]:
        _detail(r)
    st.dataframe(
        labels.table(
            (
                {
                    "id": r["id"],
                    "state": r["state"],
                    "severity": r["severity"],
                    "kind": r["kind"],
                    "tenant": r["tenant"],
                    "scope": r["scope"],
                    "opened_at": r["opened_at"],
                    "resolved_at": r["resolved_at"],
                    "occurrences": r["occurrences"],
                    "resolved_by": r["resolved_by"],
                }
                for r in rows
            ),
            now=common.now(),
            times=("opened_at", "resolved_at"),
        ),
        hide_index=True,
        key="incidents_table",
    )


def _webhook(conn: sa.Connection) -> None:
    """The webhook notifier's backlog, failures, last error and success (README, "Webhooks"):
    deployment-wide, so shown to principals who read every tenant."""
    if principal.tenants is not None:
        return
    status = queries.webhook_status(conn, principal)
    st.subheader("Webhook")
    if status is None:
        st.caption("No webhook notifier has run: set ORCH_WEBHOOK_URL for the scheduler.")
        return
    cols = st.columns(4)
    cols[0].metric("Backlog", status["backlog"])
    cols[1].metric("Delivered", status["delivered"])
    cols[2].metric("Failed attempts", status["failed"])
    cols[3].metric("Dropped", status["dropped"])
    st.caption(
        f"Cursor at event {status['last_seq']} of {status['newest']}; last success: "
        f"{status['last_success_at'] or 'never'}; {status['consecutive_failures']} failure(s) in a row."
    )
    if status["last_error"]:
        st.caption(f"Last error ({status['last_error_at']}): {status['last_error']}")


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)
        _webhook(conn)


live()
