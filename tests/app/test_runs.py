"""Runs page: the table and its filters, a run's view from ?run=N (graph, Gantt, a job's
detail), the grouped graph of a big run, and Cancel run / Replay failed part through the
dialog (with a reason, disabled without orch:operate)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import gantt_view, labels
from core import control
from core.domain.auth import Scope, local_principal
from core.ledger import jobs as ledger_jobs
from tests.app.conftest import HOME, TENANT_A, TENANT_B, audit_count, button, last_audit, metrics, text_input, texts

PAGE = "pages/7_Runs.py"
WORKER = "runs-seed-worker"
CANCEL, REPLAY = "Cancel run", "Replay failed part"


@dataclass
class Run:
    id: int
    jobs: dict[str, int]


def _submit(engine: sa.Engine, tenant: str, name: str, jobs: Iterable[tuple[str, str, list[str]]]) -> Run:
    specs = [control.JobSpec(tenant, job_type, key=key, after=after) for key, job_type, after in jobs]
    result = control.submit_run(
        engine, local_principal("runs-tests"), control.RunSpec(tenant, name, jobs=specs), control.NoDoorbell()
    )
    return Run(result.run_id, result.jobs)


def _step(engine: sa.Engine, *, fail: Iterable[int] = (), keep_running: Iterable[int] = ()) -> list[int]:
    """Claim every queued job (as a worker would); fail `fail`, leave `keep_running` running,
    succeed the rest. The database releases the children in the same transaction."""
    fail, keep_running = set(fail), set(keep_running)
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(
            conn, queue="default", limit=1000, owner=WORKER, job_types=["noop", "sleep"]
        )
    failing = [r for r in rows if r["id"] in fail]
    done = [r for r in rows if r["id"] not in fail and r["id"] not in keep_running]
    with engine.begin() as conn:
        if done:
            ledger_jobs.succeed_jobs(conn, [r["id"] for r in done], [r["lease_id"] for r in done], actor=WORKER)
        if failing:
            ledger_jobs.fail_final_jobs(
                conn,
                [r["id"] for r in failing],
                [r["lease_id"] for r in failing],
                ["http_5xx"] * len(failing),
                ["HTTP 503 from https://feeds.example/export"] * len(failing),
                ["not retryable"] * len(failing),
                actor=WORKER,
            )
    return sorted(r["id"] for r in rows)


def failed_run(engine: sa.Engine) -> Run:
    """acme "nightly-import": extract -> (transform fails, audit) -> load, which fails upstream."""
    run = _submit(
        engine,
        TENANT_A,
        "nightly-import",
        [
            ("extract", "noop", []),
            ("transform", "noop", ["extract"]),
            ("audit", "noop", ["extract"]),
            ("load", "noop", ["transform", "audit"]),
        ],
    )
    assert _step(engine) == [run.jobs["extract"]]
    assert _step(engine, fail=[run.jobs["transform"]]) == sorted([run.jobs["transform"], run.jobs["audit"]])
    return run


def running_run(engine: sa.Engine) -> Run:
    """globex "hourly-sync": fetch (done) -> parse (running) -> publish (waiting for parse)."""
    run = _submit(
        engine,
        TENANT_B,
        "hourly-sync",
        [("fetch", "noop", []), ("parse", "sleep", ["fetch"]), ("publish", "noop", ["parse"])],
    )
    _step(engine)
    assert _step(engine, keep_running=[run.jobs["parse"]]) == [run.jobs["parse"]]
    return run


def open_runs(token: str, run: int | None = None) -> AppTest:
    """The Runs page as a signed-in browser opens it, at /Runs or /Runs?run=N."""
    at = AppTest.from_file(str(HOME), default_timeout=60)
    at.session_state["orch_token"] = token
    at.run()
    if run is not None:
        at.query_params["run"] = str(run)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at: AppTest) -> Any:
    return next(d.value for d in at.dataframe if "progress" in d.value.columns)


def _figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """The page's plotly figures by title."""
    out = {}
    for chart in at.get("plotly_chart"):
        fig = json.loads(chart.proto.spec)
        out[fig["layout"]["title"]["text"]] = fig
    return out


def _nodes(fig: dict[str, Any]) -> dict[str, str]:
    """customdata (key or group) -> the legend name (state) of the node traces."""
    return {c: t["name"] for t in fig["data"] if t.get("customdata") for c in t["customdata"]}


def _run_state(engine: sa.Engine, run_id: int) -> tuple[str, int]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state, attempt FROM runs WHERE id = :id"), {"id": run_id}).one()
    return str(row.state), int(row.attempt)


@pytest.fixture
def operator(make_token: Callable[..., str]) -> str:
    return make_token("operator", {Scope.READ, Scope.OPERATE})


@pytest.fixture
def viewer(make_token: Callable[..., str]) -> str:
    return make_token("viewer", {Scope.READ})


def test_table_lists_runs_with_state_progress_and_filters(console: sa.Engine, viewer: str) -> None:
    failed, running = failed_run(console), running_run(console)
    at = open_runs(viewer)
    table = _table(at)
    assert list(table["id"]) == [running.id, failed.id]
    assert list(table["state"]) == ["Running", "Failed"]
    assert list(table["name"]) == ["hourly-sync", "nightly-import"]
    assert list(table["tenant"]) == [TENANT_B, TENANT_A]
    assert list(table["progress"]) == ["1 / 3", "4 / 4"]
    assert all(v == "just now" or v.endswith(" ago") for v in table["started"])
    assert all(v.startswith("20") for v in table["started" + labels.UTC_COLUMN])
    shown = metrics(at)
    assert (shown["Running"], shown["Failed (last hour)"]) == ("1", "1")
    at.selectbox(key="runs_state").set_value("failed").run()
    assert list(_table(at)["id"]) == [failed.id]
    at.selectbox(key="runs_state").set_value(labels.ALL).run()
    at.text_input(key="runs_name").input("HOURLY").run()
    assert list(_table(at)["id"]) == [running.id]
    at.text_input(key="runs_name").input("").run()
    at.selectbox(key="runs_tenant").set_value(TENANT_A).run()
    assert list(_table(at)["id"]) == [failed.id]
    at.selectbox(key="runs_state").set_value("succeeded").run()
    assert "No runs match the filters." in [i.value for i in at.info]
    # Nothing chosen: no run view.
    assert not at.get("plotly_chart")


def test_query_param_opens_the_run_view_with_graph_gantt_and_job_detail(console: sa.Engine, viewer: str) -> None:
    failed = failed_run(console)
    at = open_runs(viewer, failed.id)
    assert at.selectbox(key="runs_selected").value == failed.id
    assert f"Run {failed.id}: nightly-import" in texts(at)
    shown = metrics(at)
    assert (shown["State"], shown["Progress"], shown["Attempt"]) == ("Failed", "4 / 4", "1")
    figures = _figures(at)
    assert set(figures) == {"Jobs by generation", "Timeline (UTC)"}
    graph, gantt = figures["Jobs by generation"], figures["Timeline (UTC)"]
    # Every job is a node, coloured (named) by its state, at x = its generation.
    assert _nodes(graph) == {
        "extract": "Succeeded",
        "transform": "Dead-lettered",
        "audit": "Succeeded",
        "load": "Upstream failed",
    }
    xs = {c: x for t in graph["data"] if t.get("customdata") for c, x in zip(t["customdata"], t["x"], strict=True)}
    assert xs == {"extract": 0, "transform": 1, "audit": 1, "load": 2}
    assert "critical path" in [t["name"] for t in graph["data"]]
    # The Gantt: one row per job; the never-started load waited for its parents, then ended.
    assert sorted(gantt["layout"]["yaxis"]["categoryarray"]) == ["audit", "extract", "load", "transform"]
    parents = next(t for t in gantt["data"] if t["name"] == "waiting for parents")
    assert "load" in parents["y"]
    assert any("parents: audit, transform" in h for h in parents["hovertext"])
    running = next(t for t in gantt["data"] if t["name"] == "running")
    assert sorted(running["y"]) == ["audit", "extract", "transform"]
    # A job chosen (as a node click does) shows its detail with its error.
    at.selectbox(key=f"runs_job_{failed.id}").set_value("transform").run()
    assert not at.exception
    assert any(e.value.startswith("Last error (http_5xx): HTTP 503") for e in at.error)
    page = texts(at)
    assert f"job {failed.jobs['transform']}" in page
    assert "- parents: extract" in page
    assert "- attempts: 1 / " in page
    at.selectbox(key=f"runs_job_{failed.id}").set_value("load").run()
    assert "- parents: audit, transform" in texts(at)


def test_a_running_run_shows_what_each_job_waits_for(console: sa.Engine, viewer: str) -> None:
    running = running_run(console)
    at = open_runs(viewer, running.id)
    graph, gantt = _figures(at)["Jobs by generation"], _figures(at)["Timeline (UTC)"]
    assert _nodes(graph) == {"fetch": "Succeeded", "parse": "Running", "publish": "Pending"}
    hover = {
        c: h for t in graph["data"] if t.get("customdata") for c, h in zip(t["customdata"], t["hovertext"], strict=True)
    }
    assert "waits: waiting for parents: parse" in hover["publish"]
    assert "state: Running" in hover["parse"] and "type: sleep" in hover["parse"]
    # The running job's open segment reaches now; a line marks now while the run runs.
    bars = next(t for t in gantt["data"] if t["name"] == "running")
    assert "parse" in bars["y"]
    assert len(gantt["layout"]["shapes"]) == 1
    at.selectbox(key=f"runs_job_{running.id}").set_value("publish").run()
    assert "Waiting for parents: parse." in [i.value for i in at.info]


def test_a_run_of_400_jobs_is_drawn_grouped(console: sa.Engine, viewer: str) -> None:
    jobs: list[tuple[str, str, list[str]]] = [("start", "noop", [])]
    jobs += [(f"fetch-{i}", "noop", ["start"]) for i in range(200)]
    jobs += [(f"parse-{i}", "sleep", ["start"]) for i in range(198)]
    jobs += [("merge", "noop", [k for k, _, _ in jobs[1:]])]
    big = _submit(console, TENANT_A, "backfill", jobs)
    _step(console)  # start succeeds: the 398 jobs of generation 1 are queued
    at = open_runs(viewer, big.id)
    assert any("400 jobs, more than 300" in i.value for i in at.info)
    figures = _figures(at)
    graph = figures["Jobs by generation (grouped by generation and job type)"]
    assert _nodes(graph) == {
        "noop · 1 (gen 0)": "Succeeded",
        "noop · 200 (gen 1)": "Queued",
        "sleep · 198 (gen 1)": "Queued",
        "noop · 1 (gen 2)": "Pending",
    }
    hover = {
        c: h for t in graph["data"] if t.get("customdata") for c, h in zip(t["customdata"], t["hovertext"], strict=True)
    }
    assert "Queued: 200" in hover["noop · 200 (gen 1)"]
    gantt = figures["Timeline (UTC)"]
    assert len(gantt["layout"]["yaxis"]["categoryarray"]) == gantt_view.GANTT_ROWS
    assert any("shows 300 of the run's 400 jobs" in i.value for i in at.info)


def test_cancel_run_asks_for_a_reason_and_cancels_every_waiting_job(console: sa.Engine, operator: str) -> None:
    run = _submit(console, TENANT_A, "to-cancel", [("a", "noop", []), ("b", "noop", ["a"])])
    at = open_runs(operator, run.id)
    assert button(at, REPLAY).disabled  # a running run has nothing to replay
    assert f"Run {run.id} is running: only a failed or canceled run can be replayed." in texts(at)
    before = audit_count(console)
    button(at, CANCEL).click().run()
    assert f"**Cancel run {run.id}**" in texts(at)
    button(at, labels.CONFIRM).click().run()
    assert "cancel run needs a reason" in texts(at)
    assert audit_count(console) == before
    text_input(at, labels.REASON_LABEL).input("wrong input file")
    text_input(at, labels.TICKET_LABEL).input("OPS-7")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [
        f"Cancel run {run.id}: 2 waiting jobs canceled, 0 running jobs asked to stop; the run is canceled."
    ]
    assert _run_state(console, run.id) == ("canceled", 1)
    row = last_audit(console)
    assert (row["subject"], row["action"], row["target"], row["reason"], row["ticket"]) == (
        "operator",
        "cancel_run",
        f"run {run.id}",
        "wrong input file",
        "OPS-7",
    )
    assert audit_count(console) == before + 1
    assert metrics(at)["State"] == "Canceled"
    assert button(at, CANCEL).disabled
    assert f"Run {run.id} was canceled: only a running run can be canceled." in texts(at)
    assert not button(at, REPLAY).disabled


def test_replay_shows_the_dry_run_then_replays_the_failed_part(console: sa.Engine, operator: str) -> None:
    failed = failed_run(console)
    at = open_runs(operator, failed.id)
    assert button(at, CANCEL).disabled
    before = audit_count(console)
    button(at, REPLAY).click().run()
    page = texts(at)
    assert "**Will run again** (2): transform, load" in page
    assert "**Kept** (2, their results are read again): extract, audit" in page
    assert audit_count(console) == before  # the dry run changed nothing
    button(at, labels.CONFIRM).click().run()
    assert "replay run needs a reason" in texts(at)
    text_input(at, labels.REASON_LABEL).input("upstream export fixed")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    (message,) = [s.value for s in at.success]
    assert message.startswith(f"Replay the failed part of run {failed.id}: attempt 2, 2 new jobs (load, transform)")
    assert _run_state(console, failed.id) == ("running", 2)
    row = last_audit(console)
    assert (row["action"], row["target"], row["reason"]) == ("replay_run", f"run {failed.id}", "upstream export fixed")
    with console.connect() as conn:
        replays: dict[int, str] = dict(
            conn.execute(
                sa.text("SELECT replay_of, state FROM jobs WHERE replay_of = ANY(:ids)"),
                {"ids": [failed.jobs["transform"], failed.jobs["load"]]},
            ).all()
        )
    assert replays == {failed.jobs["transform"]: "queued", failed.jobs["load"]: "pending"}
    # The view follows the run's new jobs.
    assert _nodes(_figures(at)["Jobs by generation"])["transform"] == "Queued"
    assert metrics(at)["Attempt"] == "2"


def test_back_closes_the_replay_dialog_without_acting(console: sa.Engine, operator: str) -> None:
    failed = failed_run(console)
    at = open_runs(operator, failed.id)
    before = audit_count(console)
    button(at, REPLAY).click().run()
    button(at, labels.BACK).click().run()
    assert not [b for b in at.button if b.label == labels.CONFIRM]
    assert audit_count(console) == before
    assert _run_state(console, failed.id) == ("failed", 1)


def test_a_read_only_principal_cannot_cancel_or_replay(console: sa.Engine, viewer: str) -> None:
    failed, running = failed_run(console), running_run(console)
    at = open_runs(viewer, running.id)
    assert button(at, CANCEL).disabled and button(at, REPLAY).disabled
    assert labels.missing_scope("viewer", Scope.OPERATE.value) in texts(at)
    at = open_runs(viewer, failed.id)
    assert button(at, REPLAY).disabled
    # A forged request (the dialog opened without the button) is refused by control.
    before = audit_count(console)
    at.session_state["runs_pending_action"] = {"kind": "replay", "run_id": failed.id, "tenant": TENANT_A, "nonce": "x1"}
    at.run()
    assert any("viewer lacks the scope orch:operate" in e.value for e in at.error)
    text_input(at, labels.REASON_LABEL).input("let me try")
    button(at, labels.CONFIRM).click().run()
    assert any(f"Replay the failed part of run {failed.id} failed: viewer lacks" in e.value for e in at.error)
    assert audit_count(console) == before
    assert _run_state(console, failed.id) == ("failed", 1)


def test_an_operator_of_another_tenant_cannot_act_nor_see(console: sa.Engine, make_token: Callable[..., str]) -> None:
    failed, running = failed_run(console), running_run(console)
    at = open_runs(make_token("acme-ops", {Scope.READ, Scope.OPERATE}, {TENANT_A}), running.id)
    assert list(_table(at)["id"]) == [failed.id]
    assert [e.value for e in at.error] == [f"no run {running.id}; list runs with `orch runs list`"]
    assert not at.get("plotly_chart")
