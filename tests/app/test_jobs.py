"""Jobs page: filters, a job's detail (masked payload), Cancel and Retry through the dialog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import common, labels
from core.domain.auth import Scope
from tests.app.conftest import (
    ARTIFACT,
    JOB_TYPE,
    SECRET,
    TENANT_A,
    TENANT_B,
    Flow,
    Seeded,
    _submit,
    audit_count,
    button,
    job_state,
    last_audit,
    metrics,
    open_app,
    text_input,
    texts,
)


def _listed(at: AppTest) -> list[int]:
    if "No jobs match the filters." in [i.value for i in at.info]:
        return []
    return [int(i) for i in at.dataframe[0].value["id"]]


def test_filters_list_the_right_jobs(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "jobs")
    everyone = seeded.a.all_ids + seeded.b.all_ids
    assert _listed(at) == sorted(everyone, reverse=True)
    # Tenants and job types are picked from the ledger (queries.tenants / queries.job_types).
    assert at.selectbox(key="jobs_tenant").options == [labels.ALL, TENANT_A, TENANT_B]
    types = at.selectbox(key="jobs_type").options
    assert types[0] == labels.ALL and JOB_TYPE in types and types[1:] == sorted(types[1:])
    other_type = next(t for t in types[1:] if t != JOB_TYPE)
    at.selectbox(key="jobs_tenant").set_value(TENANT_A).run()
    assert _listed(at) == sorted(seeded.a.all_ids, reverse=True)
    at.selectbox(key="jobs_state").set_value("dead_lettered").run()
    assert _listed(at) == sorted(seeded.a.dead_ids, reverse=True)
    at.selectbox(key="jobs_tenant").set_value(labels.ALL).run()
    assert _listed(at) == sorted(seeded.a.dead_ids + seeded.b.dead_ids, reverse=True)
    at.selectbox(key="jobs_type").set_value(other_type).run()
    assert _listed(at) == []
    at.selectbox(key="jobs_type").set_value(JOB_TYPE).run()
    assert len(_listed(at)) == len(seeded.a.dead_ids + seeded.b.dead_ids)
    # The filters survive a rerun (as on a live refresh).
    at.run()
    assert at.selectbox(key="jobs_state").value == "dead_lettered"
    assert at.selectbox(key="jobs_type").value == JOB_TYPE
    assert len(_listed(at)) == len(seeded.a.dead_ids + seeded.b.dead_ids)


def test_time_range_is_applied_by_the_query_before_the_limit(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    """The newest 50 jobs were created two hours ago: "Last hour, newest 50" lists the seeded
    jobs (the range is part of the query), not nothing (a range applied after the limit)."""
    old = _submit(console, TENANT_B, 50)
    with console.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET created_at = now() - interval '2 hours' WHERE id = ANY(:ids)"), {"ids": old}
        )
    at = open_app(make_token("sre", {Scope.READ}), "jobs")
    fewest, more = at.selectbox(key="jobs_limit").options[:2]
    assert (int(fewest), int(more)) == (len(old), 200)
    at.selectbox(key="jobs_limit").set_value(int(fewest)).run()
    assert at.selectbox(key="jobs_range").value == "Last hour"
    assert _listed(at) == sorted(seeded.a.all_ids + seeded.b.all_ids, reverse=True)
    at.selectbox(key="jobs_range").set_value("Last 6 hours").run()
    assert _listed(at) == sorted(old, reverse=True)  # the newest 50, all of them old
    at.selectbox(key="jobs_limit").set_value(int(more)).run()
    assert _listed(at) == sorted(old + seeded.a.all_ids + seeded.b.all_ids, reverse=True)


def test_job_detail_shows_history_progress_logs_artifacts_provenance(
    seeded: Seeded, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "jobs")
    at.selectbox(key="jobs_selected").set_value(seeded.rich_job).run()
    assert not at.exception
    shown = metrics(at)
    assert shown["State"] == labels.state_label("running")
    assert shown["Attempts"] == "1 / 1"
    assert shown["Tenant"] == TENANT_A
    (progress,) = at.get("progress")
    assert progress.proto.value == 40
    assert "page 2 of 5" in progress.proto.text
    page = texts(at)
    assert "`corr-acme`" in page
    log = "\n".join(c.value for c in at.code)
    assert "fetched page 1" in log
    assert "token=***" in log and "abcd1234" not in log
    artifacts = next(d.value for d in at.dataframe if "sha256" in d.value.columns)
    assert list(artifacts["sha256"]) == [hashlib.sha256(ARTIFACT).hexdigest()]
    assert list(artifacts["bytes"]) == [len(ARTIFACT)]
    history = next(d.value for d in at.dataframe if "event" in d.value.columns)
    assert list(history["event"]) == ["submit", "claim", "ack"]
    timeline = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [t["layout"]["title"]["text"] for t in timeline] == ["State history"]
    assert [trace["name"] for trace in timeline[0]["data"]] == ["Queued", "Leased", "Running"]


def test_payload_secrets_are_masked(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "jobs")
    at.selectbox(key="jobs_selected").set_value(seeded.secret_job).run()
    (payload,) = at.json
    assert json.loads(payload.value) == {"api_key": "***", "url": "https://feeds.example/a"}
    assert SECRET not in texts(at) + payload.value


def test_cancel_asks_for_a_reason_and_writes_one_audit_row(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    job_id = seeded.a.queued[1]
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "jobs")
    at.selectbox(key="jobs_selected").set_value(job_id).run()
    assert button(at, labels.RETRY).disabled  # a queued job has nothing to retry
    before = audit_count(console)
    button(at, labels.CANCEL).click().run()
    assert f"**Cancel job {job_id}**" in texts(at)
    # No reason: control refuses, the dialog stays open, nothing is written.
    button(at, labels.CONFIRM).click().run()
    assert "cancel needs a reason" in texts(at)
    assert audit_count(console) == before
    assert job_state(console, job_id)["state"] == "queued"
    text_input(at, labels.REASON_LABEL).input("duplicate of an earlier import")
    text_input(at, labels.TICKET_LABEL).input("OPS-42")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [f"Cancel job {job_id}: job {job_id} canceled"]
    assert not [b for b in at.button if b.label == labels.CONFIRM]  # the dialog closed
    assert job_state(console, job_id)["state"] == "canceled"
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["subject"], row["action"], row["target"], row["tenant"]) == (
        "operator",
        "cancel",
        f"job {job_id}",
        TENANT_A,
    )
    assert (row["reason"], row["ticket"]) == ("duplicate of an earlier import", "OPS-42")
    # The page shows the new state, and the job can no longer be canceled.
    assert metrics(at)["State"] == labels.state_label("canceled")
    assert button(at, labels.CANCEL).disabled


def test_back_closes_the_dialog_without_acting(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    job_id = seeded.a.queued[1]
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "jobs")
    at.selectbox(key="jobs_selected").set_value(job_id).run()
    before = audit_count(console)
    button(at, labels.CANCEL).click().run()
    text_input(at, labels.REASON_LABEL).input("changed my mind")
    button(at, labels.BACK).click().run()
    assert not [b for b in at.button if b.label == labels.CONFIRM]
    assert audit_count(console) == before
    assert job_state(console, job_id)["state"] == "queued"


def test_retry_replays_a_dead_letter_and_writes_one_audit_row(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    dead = seeded.a.dead_ids[0]
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "jobs")
    at.selectbox(key="jobs_selected").set_value(dead).run()
    assert button(at, labels.CANCEL).disabled
    before = audit_count(console)
    button(at, labels.RETRY).click().run()
    text_input(at, labels.REASON_LABEL).input("upstream fixed")
    button(at, labels.CONFIRM).click().run()
    (message,) = [s.value for s in at.success]
    new_id = int(message.split("job ")[-2].split()[0])
    assert message == f"Replay job {dead}: job {new_id} replays job {dead}"
    assert job_state(console, new_id) == {"state": "queued", "replay_of": dead}
    assert job_state(console, dead)["state"] == "dead_lettered"
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["target"], row["reason"], row["ticket"]) == (
        "replay",
        f"job {dead}",
        "upstream fixed",
        None,
    )
    assert new_id in _listed(at)


def test_a_principal_without_operate_cannot_act(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    job_id = seeded.a.queued[1]
    at = open_app(make_token("viewer", {Scope.READ}), "jobs")
    at.selectbox(key="jobs_selected").set_value(job_id).run()
    assert button(at, labels.CANCEL).disabled
    assert button(at, labels.RETRY).disabled
    assert labels.missing_scope("viewer", Scope.OPERATE.value) in texts(at)
    # Even a forged request (the dialog opened without the button) is refused by control.
    before = audit_count(console)
    at.session_state[common.PENDING_KEY] = common.Action("cancel", (job_id,), f"Cancel job {job_id}", tenant=TENANT_A)
    at.run()
    text_input(at, labels.REASON_LABEL).input("let me try")
    button(at, labels.CONFIRM).click().run()
    assert [e.value for e in at.error] == [
        f"Cancel job {job_id} failed: job {job_id}: viewer lacks the scope orch:operate"
    ]
    assert audit_count(console) == before
    assert job_state(console, job_id)["state"] == "queued"


def test_a_tenant_limited_principal_sees_nothing_of_another_tenant(
    seeded: Seeded, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("acme-ops", {Scope.READ, Scope.OPERATE}, {TENANT_A}), "jobs")
    assert _listed(at) == sorted(seeded.a.all_ids, reverse=True)
    options = at.selectbox(key="jobs_selected").options
    assert len(options) == 1 + len(seeded.a.all_ids)
    assert all(f" · {TENANT_A} · " in o for o in options[1:])
    assert TENANT_B not in texts(at) + at.dataframe[0].value.to_string()
    assert at.selectbox(key="jobs_tenant").options == [labels.ALL, TENANT_A]
    # The state filter on dead letters: tenant B's dead letter is not there either.
    at.selectbox(key="jobs_state").set_value("dead_lettered").run()
    assert _listed(at) == sorted(seeded.a.dead_ids, reverse=True)


def test_a_waiting_job_says_why_and_until_when(flow: Flow, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "jobs")
    table = at.dataframe[0].value
    waits = dict(zip(table["id"], table["waits for"], strict=True))
    assert {i: waits[i] for i in [*flow.rate_limited, flow.throttled_by_429]} == dict.fromkeys(
        [*flow.rate_limited, flow.throttled_by_429], labels.WAIT_SHORT["rate_limited"]
    )
    assert waits[flow.running[0]] == labels.DASH  # a running job waits for nothing
    at.selectbox(key="jobs_selected").set_value(flow.throttled_by_429).run()
    (info,) = [i.value for i in at.info]
    # The 429 blocked the bucket for a minute: the job may start when its token exists.
    assert info.startswith(labels.WAIT_REASONS["rate_limited"] + "; may start at ")
    assert info.endswith(" s).") and "(in " in info
    assert "- source: `nvd`" in texts(at)
    history = next(d.value for d in at.dataframe if "event" in d.value.columns)
    assert list(history["event"]) == ["submit", "claim", "ack", "throttle"]
    at.selectbox(key="jobs_selected").set_value(flow.running[0]).run()
    assert not at.info
