"""Dead letters page: clusters, replay of one job or a whole cluster, scopes and tenants."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import common, labels
from core.domain.auth import Scope
from tests.app.conftest import (
    TENANT_A,
    TENANT_B,
    Seeded,
    audit_count,
    button,
    job_state,
    last_audit,
    metrics,
    open_app,
    text_input,
    texts,
)


def _cluster_titles(at: AppTest) -> list[str]:
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**") and " · " in m.value]


def _replayed(engine: sa.Engine, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT replay_of, state FROM jobs WHERE replay_of = ANY(:ids)"), {"ids": ids}
        ).all()
    return {r[0]: r[1] for r in rows}


def test_dead_letters_are_grouped_by_cluster(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("sre", {Scope.READ}), "dead_letters")
    assert metrics(at)["Dead-lettered jobs"] == str(len(seeded.a.dead_ids) + len(seeded.b.dead_ids))
    titles = _cluster_titles(at)
    # The two HTTP 503 pages are one cluster, biggest first.
    assert titles[0] == "http_5xx · HTTP <n> for <url>"
    assert sorted(t.split(" · ")[0] for t in titles) == ["http_5xx", "schema_mismatch", "timeout"]
    http_ids = seeded.a.dead[seeded.clusters_a["http_5xx"][0]]
    assert f"jobs: {', '.join(str(i) for i in sorted(http_ids, reverse=True))}" in [t.value for t in at.text]
    assert button_labels(at).count(labels.REPLAY_JOB) == 3
    assert f"{labels.REPLAY_CLUSTER} ({len(http_ids)})" in button_labels(at)


def button_labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def test_replay_one_job_writes_one_audit_row(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "dead_letters")
    http_ids = seeded.a.dead[seeded.clusters_a["http_5xx"][0]]
    target = min(http_ids)
    picker = next(s for s in at.selectbox if int(s.value) in http_ids)
    picker.set_value(target).run()
    before = audit_count(console)
    replay = next(b for b in at.button if b.label == labels.REPLAY_JOB and b.key.startswith("dlq_replay_one_"))
    # The first cluster's button: the http_5xx one is listed first.
    assert replay.key == next(b.key for b in at.button if b.label == labels.REPLAY_JOB)
    replay.click().run()
    assert f"**Replay job {target}**" in texts(at)
    text_input(at, labels.REASON_LABEL).input("feed is back")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    (message,) = [s.value for s in at.success]
    assert message.startswith(f"Replay job {target}: job ") and message.endswith(f"replays job {target}")
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["target"], row["reason"], row["tenant"]) == (
        "replay",
        f"job {target}",
        "feed is back",
        TENANT_A,
    )
    assert _replayed(console, http_ids) == {target: "queued"}


def test_replay_a_whole_cluster(seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "dead_letters")
    http_ids = seeded.a.dead[seeded.clusters_a["http_5xx"][0]]
    before = audit_count(console)
    button(at, f"{labels.REPLAY_CLUSTER} ({len(http_ids)})").click().run()
    text_input(at, labels.REASON_LABEL).input("upstream outage over")
    text_input(at, labels.TICKET_LABEL).input("INC-7")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    (message,) = [s.value for s in at.success]
    for job_id in http_ids:
        assert f"replays job {job_id}" in message
    assert _replayed(console, seeded.a.dead_ids + seeded.b.dead_ids) == {i: "queued" for i in http_ids}
    # control has no batch replay: one audit row per replayed job, each with the reason.
    assert audit_count(console) == before + len(http_ids)
    with console.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT action, target, reason, ticket FROM audit_log ORDER BY id DESC LIMIT :n"),
            {"n": len(http_ids)},
        ).all()
    assert sorted(rows) == sorted(("replay", f"job {i}", "upstream outage over", "INC-7") for i in http_ids)


def test_a_principal_without_operate_sees_disabled_buttons(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("viewer", {Scope.READ}), "dead_letters")
    replays = [b for b in at.button if b.label.startswith((labels.REPLAY_JOB, labels.REPLAY_CLUSTER))]
    assert len(replays) == 6
    assert all(b.disabled for b in replays)
    assert texts(at).count(labels.missing_scope("viewer", Scope.OPERATE.value)) == 6


def test_a_tenant_limited_principal_sees_and_replays_only_its_tenant(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("acme-ops", {Scope.READ, Scope.OPERATE}, {TENANT_A}), "dead_letters")
    assert metrics(at)["Dead-lettered jobs"] == str(len(seeded.a.dead_ids))
    assert sorted(t.split(" · ")[0] for t in _cluster_titles(at)) == ["http_5xx", "timeout"]
    assert TENANT_B not in texts(at)
    (other,) = seeded.b.dead_ids
    assert str(other) not in " ".join(t.value for t in at.text)
    # A forged replay of tenant B's dead letter is refused by control and writes nothing.
    before = audit_count(console)
    at.session_state[common.PENDING_KEY] = common.Action("retry", (other,), f"Replay job {other}")
    at.run()
    text_input(at, labels.REASON_LABEL).input("not mine")
    button(at, labels.CONFIRM).click().run()
    assert [e.value for e in at.error] == [
        f"Replay job {other} failed: job {other}: acme-ops may not act on tenant {TENANT_B!r}"
    ]
    assert audit_count(console) == before
    assert job_state(console, other)["state"] == "dead_lettered"
    assert _replayed(console, [other]) == {}
