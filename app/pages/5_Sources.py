"""Sources: every source's health, token bucket (tokens, adaptive and configured rate), circuit,
slots in use, pause and blackout state and waiting jobs; for a selected source its rate over
time and tokens now, with Pause, Resume, Throttle, Reset circuit and Blackout (core.control)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import queries
from dashboards import read_models

session = common.page("Sources")
principal = session.principal

cols = st.columns(2)
with cols[0]:
    tenant = common.tenant_filter(session, key="sources_tenant")
with cols[1]:
    range_s = common.time_range(key="sources_range", label="Rate over")


def _key(s: dict[str, Any]) -> str:
    return f"{s['tenant']}/{s['name']}"


def _tokens(s: dict[str, Any]) -> str:
    if s["bucket_id"] is None:
        return "no bucket"
    if s["blocked_until"] is not None:
        return f"0 / {s['capacity']:g}, blocked until {_clock(s['blocked_until'])}"
    return f"{s['tokens']:.1f} / {s['capacity']:g}"


def _rate(s: dict[str, Any]) -> str:
    if s["bucket_id"] is None:
        return "unlimited"
    return f"{s['rate']:g}/s of {s['base_rate']:g}/s"


def _slots(s: dict[str, Any]) -> str:
    return f"{s['active']} / {s['max_active']}" if s["max_active"] is not None else f"{s['active']} (no cap)"


def _clock(value: str | None) -> str:
    """A time in a sentence or a cell: "2026-12-01 18:15:02 UTC (in 58 s)"."""
    return labels.moment(value, common.now())


def _blackout(s: dict[str, Any]) -> str:
    if s["blackout_until"] is not None:
        return f"now, until {_clock(s['blackout_until'])}"
    if s["next_blackout"] is not None:
        return f"next at {_clock(s['next_blackout'])}"
    return labels.DASH


def _circuit_text(s: dict[str, Any]) -> str:
    opened = f"opened {s['opened_total']} time{'' if s['opened_total'] == 1 else 's'} in all"
    if s["circuit_state"] == "closed":
        return (
            f"Circuit closed: {s['circuit_failures']} of the last {s['circuit_outcomes']} outcomes failed; it opens "
            f"when {s['cb_failure_ratio']:.0%} of at least {s['cb_min_outcomes']} fail; {opened}."
        )
    state = labels.CIRCUIT_LABELS.get(s["circuit_state"], s["circuit_state"])
    until = f"; probe jobs may go from {_clock(s['circuit_until'])}" if s["circuit_until"] else ""
    return f"Circuit {state.lower()} since {_clock(s['circuit_since'])}{until}; {opened}."


def _table(rows: list[dict[str, Any]]) -> None:
    st.dataframe(
        labels.table(
            (
                {
                    "tenant": s["tenant"],
                    "source": s["name"],
                    "host": s["host"],
                    "health": labels.health_cell(s["health"]),
                    "tokens": _tokens(s),
                    "rate (adaptive of configured)": _rate(s),
                    "circuit": labels.CIRCUIT_LABELS.get(s["circuit_state"], s["circuit_state"]),
                    "slots in use": _slots(s),
                    "paused": s["paused_reason"],
                    "blackout": _blackout(s),
                    "waiting": labels.waiting_summary(s["waiting"]),
                }
                for s in rows
            ),
            now=common.now(),
        ),
        hide_index=True,
        key="sources_table",
    )


def _buttons(s: dict[str, Any], own_pause: dict[str, Any] | None, tenant_paused: bool) -> None:
    where = {"tenant": s["tenant"], "source": s["name"]}
    name = _key(s)
    cols = st.columns(5)
    with cols[0]:
        common.action_button(
            session,
            labels.PAUSE,
            common.Action("pause", (), f"Pause source {name}", **where),
            key=f"sources_pause_{s['id']}",
            blocked=None if own_pause is None else f"Source {name} is already paused.",
        )
    with cols[1]:
        resume_blocked = None
        if own_pause is None:
            resume_blocked = f"Source {name} is not paused."
            if tenant_paused:
                resume_blocked += f" Its tenant is paused as a whole: orch resume --tenant {s['tenant']}."
        common.action_button(
            session,
            labels.RESUME,
            common.Action("resume", (), f"Resume source {name}", **where),
            key=f"sources_resume_{s['id']}",
            blocked=resume_blocked,
        )
    with cols[2]:
        common.action_button(
            session,
            labels.THROTTLE,
            common.Action(
                "throttle",
                (),
                f"Set the rate of source {name} ({s['host']})",
                rate=s["base_rate"],
                burst=s["capacity"],
                **where,
            ),
            key=f"sources_throttle_{s['id']}",
        )
    with cols[3]:
        common.action_button(
            session,
            labels.RESET_CIRCUIT,
            common.Action("reset_circuit", (), f"Reset the circuit of source {name}", **where),
            key=f"sources_reset_{s['id']}",
            blocked=f"The circuit of {name} is closed." if s["circuit_state"] == "closed" else None,
        )
    with cols[4]:
        common.action_button(
            session,
            labels.BLACKOUT,
            common.Action("blackout", (), f"Blackout of source {name}", **where),
            key=f"sources_blackout_{s['id']}",
        )


def _detail(conn: sa.Connection, s: dict[str, Any]) -> None:
    detail = queries.source(conn, principal, tenant=s["tenant"], name=s["name"])
    own_pause = next((p for p in detail["pauses"] if p["source"] == s["name"]), None)
    tenant_paused = any(p["source"] is None and p["job_type"] is None for p in detail["pauses"])
    word, colour, _ = labels.health(s["health"])
    st.subheader(f"{_key(s)} on {s['host']}")
    st.badge(word, color=colour)
    top = st.columns(5)
    top[0].metric("Tokens now", labels.DASH if s["bucket_id"] is None else f"{s['tokens']:.1f} / {s['capacity']:g}")
    top[1].metric(
        "Adaptive rate",
        labels.DASH if s["bucket_id"] is None else labels.rate(s["rate"]),
        help=None if s["bucket_id"] is None else f"Configured {s['base_rate']:g}/s, floor {s['min_rate']:g}/s.",
    )
    top[2].metric("Circuit", labels.CIRCUIT_LABELS.get(s["circuit_state"], s["circuit_state"]))
    top[3].metric("Slots in use", _slots(s))
    top[4].metric("Waiting", sum(int(n) for n in s["waiting"].values()))
    if s["bucket_id"] is not None:
        filled = 0.0 if s["blocked_until"] is not None else min(1.0, max(0.0, s["tokens"] / s["capacity"]))
        st.progress(filled, text=f"Tokens {_tokens(s)}; bucket shared by every source of {s['host']}")
    st.caption(_circuit_text(s))
    for p in detail["pauses"]:
        scope = "source" if p["source"] else ("job type " + p["job_type"] if p["job_type"] else "whole tenant")
        st.warning(f"Paused ({scope}) by {p['actor']} at {_clock(p['created_at'])}: {p['reason']}")
    if s["waiting"]:
        st.caption("Waiting: " + labels.waiting_summary(s["waiting"]))
    _buttons(s, own_pause, tenant_paused)

    rows = read_models.source_rates(conn, principal, tenant=s["tenant"], source=s["name"], since_s=range_s)
    common.panel_chart("bucket_rate", rows, chart_key=f"sources_rate_chart_{s['id']}")
    now = common.now()
    if detail["throttles"]:
        st.markdown("**Last rate changes**")
        st.dataframe(
            labels.table(
                (
                    {
                        "at": t["at"],
                        "old rate": labels.rate(t["old_rate"]),
                        "new rate": labels.rate(t["new_rate"]),
                        "reason": t["reason"],
                        "actor": t["actor"],
                    }
                    for t in detail["throttles"]
                ),
                now=now,
                times=("at",),
            ),
            hide_index=True,
            key=f"sources_throttles_{s['id']}",
        )
    if detail["blackouts"]:
        st.markdown("**Blackouts**")
        st.dataframe(
            labels.table(
                (
                    {
                        "id": b["id"],
                        "scope": b["source"] or "whole tenant",
                        "starts": b["window_start"],
                        "ends": b["window_end"],
                        "active": "yes" if b["active"] else "no",
                        "repeats": b["cron"],
                        "reason": b["reason"],
                        "by": b["actor"],
                    }
                    for b in detail["blackouts"]
                ),
                now=now,
                times=("starts", "ends"),
            ),
            hide_index=True,
            key=f"sources_blackouts_{s['id']}",
        )


def _render(conn: sa.Connection) -> None:
    rows = queries.sources(conn, principal, tenant=tenant)
    if not rows:
        st.info("No sources. Add one with `orch sources add --tenant T --name N --host H --rate R`.")
        return
    unhealthy = sum(1 for s in rows if s["health"] != "ok")
    st.caption(f"{len(rows)} sources, {unhealthy} not healthy.")
    _table(rows)
    by_key = {_key(s): s for s in rows}
    selected = st.selectbox("Source", list(by_key), key="sources_selected")
    if selected is not None and selected in by_key:
        _detail(conn, by_key[str(selected)])


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
