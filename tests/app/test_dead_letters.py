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
    _dead_letter,
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
    picker = next(s for s in at.selectbox if str(s.key).startswith("dlq_pick_") and int(str(s.value)) in http_ids)
    picker.set_value(target).run()
    before = audit_count(console)
    replay = next(b for b in at.button if b.label == labels.REPLAY_JOB and str(b.key).startswith("dlq_replay_one_"))
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


def _audit_since(engine: sa.Engine, after: int) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT * FROM audit_log ORDER BY id OFFSET :n"),
                {"n": after},
            )
            .mappings()
            .all()
        )


def _confirm_cluster_replay(at: AppTest, count: int, reason: str, ticket: str | None = None) -> None:
    button(at, f"{labels.REPLAY_CLUSTER} ({count})").click().run()
    text_input(at, labels.REASON_LABEL).input(reason)
    if ticket is not None:
        text_input(at, labels.TICKET_LABEL).input(ticket)
    button(at, labels.CONFIRM).click().run()
    assert not at.exception


def test_replay_a_whole_cluster_is_one_audited_action(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "dead_letters")
    http_ids = seeded.a.dead[seeded.clusters_a["http_5xx"][0]]
    before = audit_count(console)
    # No reason: control refuses, the dialog stays open, nothing is replayed.
    button(at, f"{labels.REPLAY_CLUSTER} ({len(http_ids)})").click().run()
    button(at, labels.CONFIRM).click().run()
    assert "replay needs a reason" in texts(at)
    assert audit_count(console) == before
    assert _replayed(console, http_ids) == {}
    button(at, labels.BACK).click().run()

    _confirm_cluster_replay(at, len(http_ids), "upstream outage over", "INC-7")
    (message,) = [s.value for s in at.success]
    assert f": {len(http_ids)} jobs replayed (" in message
    for job_id in http_ids:
        assert f"replays job {job_id}" in message
    # One new queued job per dead letter of the cluster, and nothing else replayed.
    assert _replayed(console, seeded.a.dead_ids + seeded.b.dead_ids) == {i: "queued" for i in http_ids}
    # One audit row for the whole cluster (control.replay_many), naming every replay.
    (row,) = _audit_since(console, before)
    assert (row["subject"], row["action"], row["tenant"], row["reason"], row["ticket"]) == (
        "operator",
        "replay",
        TENANT_A,
        "upstream outage over",
        "INC-7",
    )
    assert row["target"].startswith(f"{len(http_ids)} dead-lettered jobs of error cluster http_5xx/")
    assert sorted(int(old) for old in row["details"]["replayed"]) == sorted(http_ids)
    with console.connect() as conn:
        news = conn.execute(sa.text("SELECT id, replay_of FROM jobs WHERE replay_of = ANY(:ids)"), {"ids": http_ids})
        assert {str(r.replay_of): r.id for r in news} == row["details"]["replayed"]


def test_replay_of_a_cluster_of_two_tenants_writes_one_audit_row_per_tenant(
    console: sa.Engine, make_token: Callable[..., str]
) -> None:
    pages = [f"HTTP 503 for https://feeds.example/feed?page={n}" for n in (1, 2, 3)]
    a_ids = _dead_letter(console, TENANT_A, "http_5xx", pages[:2])
    b_ids = _dead_letter(console, TENANT_B, "http_5xx", pages[2:])
    at = open_app(make_token("admin", {Scope.READ, Scope.OPERATE}), "dead_letters")
    assert _cluster_titles(at) == ["http_5xx · HTTP <n> for <url>"]  # one cluster of both tenants
    before = audit_count(console)
    _confirm_cluster_replay(at, len(a_ids + b_ids), "feeds are back")
    assert _replayed(console, a_ids + b_ids) == {i: "queued" for i in a_ids + b_ids}
    rows = _audit_since(console, before)
    assert sorted((r["action"], r["tenant"], sorted(map(int, r["details"]["replayed"]))) for r in rows) == [
        ("replay", TENANT_A, sorted(a_ids)),
        ("replay", TENANT_B, b_ids),
    ]


def test_a_forged_cluster_replay_across_tenants_replays_nothing(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    """replay_many is all or nothing: one job of another tenant refuses the whole cluster."""
    at = open_app(make_token("acme-ops", {Scope.READ, Scope.OPERATE}, {TENANT_A}), "dead_letters")
    (other,) = seeded.b.dead_ids
    ids = (*seeded.a.dead_ids, other)
    before = audit_count(console)
    at.session_state[common.PENDING_KEY] = common.Action("replay_cluster", ids, "Replay a cluster", label="forged")
    at.run()
    text_input(at, labels.REASON_LABEL).input("not all mine")
    button(at, labels.CONFIRM).click().run()
    assert [e.value for e in at.error] == [f"Replay a cluster failed: acme-ops may not act on tenant {TENANT_B!r}"]
    assert audit_count(console) == before
    assert _replayed(console, list(ids)) == {}


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
