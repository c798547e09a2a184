"""Sources page: the table and a source's detail from a real ledger; Pause, Resume, Throttle,
Reset circuit and Blackout through the dialog (one audit row each); scopes and tenants."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import common, labels
from core import queries
from core.domain.auth import Scope
from tests.app.conftest import (
    TENANT_A,
    TENANT_B,
    Flow,
    audit_count,
    button,
    last_audit,
    metrics,
    open_app,
    text_input,
    texts,
)

ALL_FLOW = {Scope.READ, Scope.OPERATE, Scope.QUOTA}


def _table(at: AppTest) -> dict[str, dict[str, Any]]:
    frame = next(d.value for d in at.dataframe if "health" in d.value.columns)
    return {f"{r['tenant']}/{r['source']}": dict(r) for r in frame.to_dict("records")}


def _select(at: AppTest, source: str) -> None:
    at.selectbox(key="sources_selected").set_value(source).run()
    assert not at.exception, [e.value for e in at.exception]


def _bucket(engine: sa.Engine, host: str) -> sa.RowMapping:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM buckets WHERE host = :h"), {"h": host}).mappings().one()


def _source(engine: sa.Engine, name: str) -> sa.RowMapping:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM sources WHERE name = :n"), {"n": name}).mappings().one()


def _confirm(at: AppTest, reason: str, ticket: str | None = None) -> None:
    text_input(at, labels.REASON_LABEL).input(reason)
    if ticket is not None:
        text_input(at, labels.TICKET_LABEL).input(ticket)
    button(at, labels.CONFIRM).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_the_table_shows_each_sources_health_bucket_circuit_and_waiting_jobs(
    flow: Flow, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "sources")
    table = _table(at)
    assert sorted(table) == ["acme/nvd", "acme/nvd-cve", "acme/osv", "globex/ghsa"]
    nvd = table["acme/nvd"]
    assert nvd["health"] == "🟠 Throttled"
    assert nvd["tokens"].startswith("0 / 2, blocked until ")  # the 429's Retry-After
    assert re.search(r", blocked until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ s\)$", nvd["tokens"]), nvd["tokens"]
    assert nvd["rate (adaptive of configured)"] == "0.5/s of 1/s"
    assert (nvd["circuit"], nvd["slots in use"], nvd["waiting"]) == ("Closed", "1 / 4", "Rate limited 3")
    # nvd-cve shares nvd.example's bucket, so it is throttled too; its own jobs: none.
    cve = table["acme/nvd-cve"]
    assert (cve["health"], cve["rate (adaptive of configured)"], cve["waiting"]) == (
        "🟠 Throttled",
        "0.5/s of 1/s",
        labels.DASH,
    )
    osv = table["acme/osv"]
    assert (osv["health"], osv["circuit"], osv["tokens"]) == ("🔴 Circuit open", "Open", "10.0 / 10")
    ghsa = table["globex/ghsa"]
    assert (ghsa["health"], ghsa["paused"]) == ("⚪ Paused", "globex maintenance")
    assert "4 sources, 4 not healthy." in texts(at)


def test_a_sources_detail_shows_its_rate_over_time_and_tokens_now(flow: Flow, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "sources")
    _select(at, "acme/nvd")
    shown = metrics(at)
    assert shown["Tokens now"] == "0.0 / 2"
    assert shown["Adaptive rate"] == "0.5/s"
    assert (shown["Circuit"], shown["Slots in use"], shown["Waiting"]) == ("Closed", "1 / 4", "3")
    page = texts(at)
    assert ":orange-badge[Throttled]" in page
    assert "Waiting: Rate limited 3" in page
    assert "Circuit closed: 0 of the last 0 outcomes failed; it opens when 50% of at least 10 fail" in page
    (progress,) = at.get("progress")
    assert progress.proto.value == 0 and "blocked until" in progress.proto.text
    (chart,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert chart["layout"]["title"]["text"] == "Refill rate: adaptive vs configured"
    adaptive, configured = chart["data"]
    # Configured at 1/s (the bucket is new), halved by the 429, and the rate now.
    assert (adaptive["name"], adaptive["y"], adaptive["line"]["shape"]) == ("acme nvd.example", [1.0, 0.5, 0.5], "hv")
    assert (configured["name"], configured["y"]) == ("acme nvd.example configured", [1.0, 1.0])
    changes = next(d.value for d in at.dataframe if "new rate" in d.value.columns)
    assert list(changes["new rate"]) == ["0.5/s", "1/s"]
    assert list(changes["old rate"]) == ["1/s", labels.DASH]  # configured: no rate before
    assert list(changes["actor"]) == ["seed-worker", "local:console-tests"]
    # The open circuit says how it got there.
    _select(at, "acme/osv")
    assert "Circuit open since " in texts(at)
    assert "; probe jobs may go from " in texts(at) and "; opened 1 time in all." in texts(at)
    assert metrics(at)["Circuit"] == "Open"


def test_pause_and_resume_write_one_audit_row_each(
    flow: Flow, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "sources")
    _select(at, "acme/nvd")
    assert button(at, labels.RESUME).disabled
    before = audit_count(console)
    button(at, labels.PAUSE).click().run()
    assert "**Pause source acme/nvd**" in texts(at)
    # No reason: control refuses, the dialog stays open, nothing is written.
    button(at, labels.CONFIRM).click().run()
    assert "pause needs a reason" in texts(at)
    assert audit_count(console) == before
    _confirm(at, "upstream asked us to stop", "OPS-9")
    assert [s.value for s in at.success] == ["Pause source acme/nvd: paused"]
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["subject"], row["action"], row["target"], row["tenant"], row["reason"], row["ticket"]) == (
        "operator",
        "pause",
        "source nvd",
        TENANT_A,
        "upstream asked us to stop",
        "OPS-9",
    )
    assert _table(at)["acme/nvd"]["health"] == "⚪ Paused"
    assert "Paused (source) by operator" in texts(at)
    assert button(at, labels.PAUSE).disabled and not button(at, labels.RESUME).disabled

    button(at, labels.RESUME).click().run()
    _confirm(at, "upstream is fine again")
    assert [s.value for s in at.success] == ["Resume source acme/nvd: resumed, 0 waiting jobs released"]
    assert audit_count(console) == before + 2
    assert (last_audit(console)["action"], last_audit(console)["reason"]) == ("resume", "upstream is fine again")
    assert _table(at)["acme/nvd"]["paused"] == labels.DASH


def test_throttle_sets_the_configured_rate_and_burst(
    flow: Flow, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("rates", ALL_FLOW), "sources")
    _select(at, "acme/nvd")
    before = audit_count(console)
    button(at, labels.THROTTLE).click().run()
    assert "**Set the rate of source acme/nvd (nvd.example)**" in texts(at)
    rate = next(n for n in at.number_input if n.label == labels.RATE_LABEL)
    burst = next(n for n in at.number_input if n.label == labels.BURST_LABEL)
    assert (rate.value, burst.value) == (1.0, 2.0)  # the bucket's configured values
    rate.set_value(4.0)
    burst.set_value(3.0)
    _confirm(at, "upstream raised our limit", "VEND-12")
    assert [s.value for s in at.success] == [
        "Set the rate of source acme/nvd (nvd.example): rate 0.5/s -> 4/s, burst 3"
    ]
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["target"], row["tenant"], row["reason"], row["ticket"]) == (
        "throttle",
        "source nvd",
        TENANT_A,
        "upstream raised our limit",
        "VEND-12",
    )
    # The adaptive rate it replaces (halved by the 429), and both rates restart from the new one.
    assert (row["details"]["rate"], row["details"]["burst"], row["details"]["old_rate"]) == (4.0, 3.0, 0.5)
    bucket = _bucket(console, "nvd.example")
    assert (bucket["base_rate"], bucket["rate"], bucket["capacity"]) == (4.0, 4.0, 3.0)
    # The page shows the new configured rate, and the change is the newest on the chart.
    assert _table(at)["acme/nvd"]["rate (adaptive of configured)"].endswith("of 4/s")
    changes = next(d.value for d in at.dataframe if "new rate" in d.value.columns)
    assert (changes["new rate"][0], changes["actor"][0]) == ("4/s", "rates")


def test_reset_circuit_closes_an_open_circuit(flow: Flow, console: sa.Engine, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "sources")
    _select(at, "acme/nvd")
    assert button(at, labels.RESET_CIRCUIT).disabled
    assert "The circuit of acme/nvd is closed." in texts(at)
    _select(at, "acme/osv")
    before = audit_count(console)
    button(at, labels.RESET_CIRCUIT).click().run()
    _confirm(at, "upstream recovered")
    assert [s.value for s in at.success] == [
        "Reset the circuit of source acme/osv: circuit closed (was Open), 0 waiting jobs released"
    ]
    assert _source(console, "osv")["circuit_state"] == "closed"
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["target"], row["details"]) == (
        "circuit.reset",
        "source osv",
        {"old_state": "open", "released": 0},
    )
    assert metrics(at)["Circuit"] == "Closed"
    assert button(at, labels.RESET_CIRCUIT).disabled


def test_blackouts_one_off_and_recurring(flow: Flow, console: sa.Engine, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("rates", ALL_FLOW), "sources")
    _select(at, "acme/nvd")
    before = audit_count(console)
    button(at, labels.BLACKOUT).click().run()
    text_input(at, labels.STARTS_LABEL).input("next tuesday")
    _confirm(at, "vendor maintenance")
    assert "is not a time like 2026-12-01 02:00" in texts(at)  # the dialog stays open
    assert audit_count(console) == before
    text_input(at, labels.STARTS_LABEL).input("2030-01-01 02:00")
    text_input(at, labels.ENDS_LABEL).input("2030-01-01 03:30")
    button(at, labels.CONFIRM).click().run()
    (message,) = [s.value for s in at.success]
    assert message.startswith("Blackout of source acme/nvd: blackout 1, next window 2030-01-01 02:00:00 to ")
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["target"], row["reason"]) == (
        "blackout.add",
        "blackout 1 (source nvd)",
        "vendor maintenance",
    )
    assert _table(at)["acme/nvd"]["blackout"].startswith("next at 2030-01-01 02:00:00 UTC (in ")

    button(at, labels.BLACKOUT).click().run()
    at.radio(key=next(r.key for r in at.radio)).set_value(labels.RECURRING).run()
    text_input(at, labels.CRON_LABEL).input("30 3 * * *")
    next(n for n in at.number_input if n.label == labels.DURATION_LABEL).set_value(45)
    _confirm(at, "nightly export window")
    (message,) = [s.value for s in at.success]
    assert message.startswith("Blackout of source acme/nvd: blackout 2, next window ")
    assert audit_count(console) == before + 2
    assert last_audit(console)["details"]["duration_s"] == 45 * 60
    with console.connect() as conn:
        blackouts = conn.execute(sa.text("SELECT id, cron, duration_s FROM blackouts ORDER BY id")).all()
    assert [(b.id, b.duration_s) for b in blackouts] == [(1, None), (2, 2700.0)]
    assert blackouts[1].cron is not None
    shown = next(d.value for d in at.dataframe if "repeats" in d.value.columns)
    assert sorted(shown["id"]) == [1, 2]


def test_buttons_are_disabled_without_the_scope_they_need(
    flow: Flow, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("viewer", {Scope.READ}), "sources")
    _select(at, "acme/osv")  # open circuit: only the scope blocks Reset
    actions = (labels.PAUSE, labels.RESUME, labels.THROTTLE, labels.RESET_CIRCUIT, labels.BLACKOUT)
    assert all(button(at, label).disabled for label in actions)
    page = texts(at)
    assert page.count(labels.missing_scope("viewer", Scope.OPERATE.value)) == 3  # Pause, Resume, Reset
    assert page.count(labels.missing_scope("viewer", Scope.QUOTA.value)) == 2  # Throttle, Blackout

    # orch:operate without orch:quota: pause and reset, not rates or blackouts.
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "sources")
    _select(at, "acme/osv")
    assert not button(at, labels.PAUSE).disabled and not button(at, labels.RESET_CIRCUIT).disabled
    assert button(at, labels.THROTTLE).disabled and button(at, labels.BLACKOUT).disabled
    assert texts(at).count(labels.missing_scope("operator", Scope.QUOTA.value)) == 2
    # A forged throttle (the dialog opened without the button) is refused by control.
    before = audit_count(console)
    at.session_state[common.PENDING_KEY] = common.Action(
        "throttle", (), "Set the rate of source acme/osv", tenant=TENANT_A, source="osv", rate=10.0, burst=10.0
    )
    at.run()
    _confirm(at, "let me")
    assert [e.value for e in at.error] == [
        "Set the rate of source acme/osv failed: operator lacks the scope orch:quota"
    ]
    assert audit_count(console) == before
    assert _bucket(console, "osv.example")["base_rate"] == 10.0


def test_a_tenant_limited_principal_sees_and_acts_on_its_tenant_only(
    flow: Flow, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("acme-ops", ALL_FLOW, {TENANT_A}), "sources")
    assert sorted(_table(at)) == ["acme/nvd", "acme/nvd-cve", "acme/osv"]
    assert at.selectbox(key="sources_selected").options == ["acme/nvd", "acme/nvd-cve", "acme/osv"]
    everything = texts(at) + "".join(d.value.to_string() for d in at.dataframe)
    assert TENANT_B not in everything and "ghsa" not in everything and "globex maintenance" not in everything
    # A forged resume of globex's source is refused by control and writes nothing.
    before = audit_count(console)
    at.session_state[common.PENDING_KEY] = common.Action(
        "resume", (), "Resume source globex/ghsa", tenant=TENANT_B, source="ghsa"
    )
    at.run()
    _confirm(at, "not mine")
    assert [e.value for e in at.error] == [
        f"Resume source globex/ghsa failed: acme-ops may not act on tenant {TENANT_B!r}"
    ]
    assert audit_count(console) == before
    with console.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pauses")).scalar_one() == 1


def test_wait_words_and_durations() -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert labels.wait_text("quota", "2026-12-01T12:00:05+00:00", now) == (
        labels.WAIT_REASONS["quota"] + "; may start at 2026-12-01 12:00:05 UTC (in 5 s)."
    )
    assert labels.wait_text("blackout", "2026-12-01T11:59:00+00:00", now).endswith("(due now).")
    assert labels.wait_text("retrying", "2026-12-01T15:30:00+00:00", now).startswith(labels.RETRY_WAIT)
    assert labels.wait_text(None, None, now) == ""
    assert [labels.duration(s) for s in (3, 600, 9000, 300000)] == ["3 s", "10 min", "2 h 30 min", "3 d"]
    assert labels.waiting_summary({"paused": 0, "quota": 2, "rate_limited": 1}) == "Quota 2, Rate limited 1"
    assert labels.waiting_summary({}) == labels.DASH
    assert set(labels.WAIT_REASONS) == set(labels.WAIT_SHORT) == set(queries.WAIT_REASONS)
