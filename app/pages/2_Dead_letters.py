"""Dead letters grouped by error cluster: replay one job, or every job of a cluster as one
audited action (control.replay_many: all of them or none, one audit row per tenant)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import queries

CLUSTER_LIMIT = 50
#: Job ids listed per cluster (the replay of a whole cluster takes all of them).
SHOWN_IDS = 200

session = common.page("Dead letters")
principal = session.principal
tenant = common.tenant_filter(session, key="dlq_tenant")


def _cluster(c: dict[str, Any]) -> None:
    job_ids = [int(i) for i in c["job_ids"]]
    key = str(c["fingerprint"] or f"none-{c['error_class']}")
    with st.container(border=True):
        st.markdown(f"**{labels.cluster_title(c['error_class'], c['message'])}**")
        st.caption(
            f"{c['count']} dead-lettered · last {labels.moment(c['last_seen'], common.now())}"
            f" · job types {common.joined(c['job_types'])} · fingerprint {str(labels.cell(c['fingerprint']))[:16]}"
        )
        st.text("jobs: " + ", ".join(str(i) for i in job_ids[:SHOWN_IDS]) + (" …" if len(job_ids) > SHOWN_IDS else ""))
        left, mid, right = st.columns([2, 1, 1])
        with left:
            one = st.selectbox("Job to replay", job_ids, key=f"dlq_pick_{key}")
        with mid:
            common.action_button(
                session,
                labels.REPLAY_JOB,
                common.Action("retry", (int(one),), f"Replay job {one}"),
                key=f"dlq_replay_one_{key}",
            )
        with right:
            common.action_button(
                session,
                f"{labels.REPLAY_CLUSTER} ({len(job_ids)})",
                common.Action(
                    "replay_cluster",
                    tuple(job_ids),
                    f"Replay {len(job_ids)} dead-lettered jobs of cluster "
                    f"{labels.cluster_title(c['error_class'], c['message'])}",
                    label=labels.cluster_target(c["error_class"], c["fingerprint"], len(job_ids)),
                ),
                key=f"dlq_replay_cluster_{key}",
            )


def _render(conn: sa.Connection) -> None:
    clusters = queries.dead_letter_clusters(conn, principal, tenant=tenant, limit=CLUSTER_LIMIT)
    total = sum(int(c["count"]) for c in clusters)
    st.metric("Dead-lettered jobs", total)
    if not clusters:
        st.success("No dead letters.")
        return
    st.caption(f"{len(clusters)} clusters, biggest first.")
    for c in clusters:
        _cluster(c)


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
