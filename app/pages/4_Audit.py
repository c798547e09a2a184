"""The audit log with filters, the verification of its hash chain, and audit bundles: export
a tenant's history as a signed bundle, and verify a bundle step by step (app.bundle_views)."""

from __future__ import annotations

import json

import sqlalchemy as sa
import streamlit as st

from app import bundle_views, common, labels
from core import queries

LIMITS = [100, 500, 2000]

session = common.page("Audit")
principal = session.principal

cols = st.columns([2, 2, 2, 1])
with cols[0]:
    tenant = common.tenant_filter(session, key="audit_tenant")
with cols[1]:
    action = st.text_input("Action", key="audit_action", placeholder="e.g. cancel, replay, submit").strip() or None
with cols[2]:
    subject = st.text_input("Subject", key="audit_subject", placeholder=labels.ALL).strip() or None
with cols[3]:
    limit = st.selectbox("Newest", LIMITS, key="audit_limit")


@st.fragment(run_every=labels.AUDIT_REFRESH_S)
def verification() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        verdict = queries.verify_audit(conn, principal)
        if verdict["ok"]:
            st.success(
                f"Audit chain intact: {verdict['rows']} rows in {verdict['chains']} chain(s),"
                " every hash chain verified."
            )
        else:
            st.error(
                f"Audit chain broken at row {verdict['first_bad_id']} (chain {verdict['chain']}): {verdict['problem']}"
            )


def _render(conn: sa.Connection) -> None:
    rows = queries.audit_log(conn, principal, tenant=tenant, action=action, subject=subject, limit=int(limit))
    st.caption(f"{len(rows)} entries, newest first.")
    st.dataframe(
        labels.table(
            (
                {
                    "id": r["id"],
                    "at": r["at"],
                    "subject": r["subject"],
                    "action": r["action"],
                    "target": r["target"],
                    "tenant": r["tenant"],
                    "reason": r["reason"],
                    "ticket": r["ticket"],
                    "scopes": common.joined(r["scopes"]),
                    "details": json.dumps(r["details"], sort_keys=True) if r["details"] else None,
                }
                for r in rows
            ),
            now=common.now(),
            times=("at",),
        ),
        hide_index=True,
        key="audit_table",
    )


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


verification()
live()

st.subheader(labels.BUNDLES_HEADER)
with st.expander(labels.EXPORT_SECTION):
    bundle_views.export_section(session)
with st.expander(labels.VERIFY_SECTION):
    bundle_views.verify_section()
