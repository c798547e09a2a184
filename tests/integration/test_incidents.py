"""Incidents open and resolve themselves (core/control/incidents.py): a condition opens one
only after holding for its `for` period, bumps it while it holds, resolves it after the quiet
period, and a new incident opens for the same key after that. Operators acknowledge and
resolve with a reason, audited. Periods are passed by moving the recorded times back, not by
sleeping."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from core import control, queries
from core.domain import errors
from core.domain.auth import Principal, Scope
from core.domain.incidents import Policy
from core.ledger import jobs as ledger_jobs
from tests.integration.test_cli import ok_json, orch

TENANT = "inc"
POLICY = Policy(for_s=60, quiet_s=300, dlq_window_s=1800, dlq_warning=10, dlq_critical=50, circuit_open_s=300)
VIEWER = Principal(subject="viewer", scopes=frozenset({Scope.READ}))


def dead_letters(ledger: sa.Engine, principal: Principal, n: int, tenant: str = TENANT) -> list[int]:
    ids = control.submit_many(
        ledger, principal, [control.JobSpec(tenant, "noop")] * n, doorbell=control.NoDoorbell()
    ).job_ids
    with ledger.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=n, owner="w", job_types=["noop"])
        ledger_jobs.fail_final_jobs(
            conn,
            [r["id"] for r in rows],
            [r["lease_id"] for r in rows],
            ["http_5xx"] * len(rows),
            ["upstream 503"] * len(rows),
            ["fatal error"] * len(rows),
            actor="w",
            fingerprints=["f"] * len(rows),
        )
    return ids


def backdate(ledger: sa.Engine, sql: str, seconds: float) -> None:
    with ledger.begin() as conn:
        conn.execute(sa.text(sql), {"s": seconds})


def held_through_for(ledger: sa.Engine) -> None:
    backdate(ledger, "UPDATE incident_pending SET first_seen_at = first_seen_at - make_interval(secs => :s)", 61)


def quiet_through(ledger: sa.Engine) -> None:
    backdate(ledger, "UPDATE incidents SET clear_since = clear_since - make_interval(secs => :s)", 301)


def out_of_window(ledger: sa.Engine) -> None:
    backdate(ledger, "UPDATE jobs SET finished_at = finished_at - make_interval(secs => :s)", 1801)


def incidents(ledger: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    with ledger.connect() as conn:
        return queries.list_incidents(conn, principal)


def events(ledger: sa.Engine) -> list[str]:
    with ledger.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT kind FROM events WHERE kind LIKE 'incident.%' ORDER BY id"))]


def test_dead_letter_growth_opens_after_its_for_period_and_resolves_after_the_quiet_one(
    ledger: sa.Engine, principal: Principal
) -> None:
    assert control.evaluate_incidents(ledger, POLICY).conditions == 0
    dead_letters(ledger, principal, 11)
    first = control.evaluate_incidents(ledger, POLICY)
    assert (first.conditions, first.opened) == (1, [])
    assert incidents(ledger, principal) == [], "opened before the condition held for its period"
    held_through_for(ledger)
    opened = control.evaluate_incidents(ledger, POLICY).opened
    [inc] = incidents(ledger, principal)
    assert [inc["id"]] == opened
    assert (inc["kind"], inc["state"], inc["severity"], inc["tenant"]) == ("dlq_growth", "open", "warning", TENANT)
    assert inc["dedup_key"] == f"{TENANT}:dlq_growth:dead_letters" and inc["occurrences"] == 1
    assert inc["evidence"]["dead_letters"] == 11 and len(inc["evidence"]["job_ids"]) == 10
    # It holds and grows: the same incident, now critical.
    dead_letters(ledger, principal, 40)
    assert control.evaluate_incidents(ledger, POLICY).opened == []
    [inc] = incidents(ledger, principal)
    assert (inc["severity"], inc["evidence"]["dead_letters"], inc["occurrences"]) == ("critical", 51, 1)
    # Clear: the quiet period starts; it resolves only once that has passed.
    out_of_window(ledger)
    assert control.evaluate_incidents(ledger, POLICY).resolved == []
    [inc] = incidents(ledger, principal)
    assert inc["state"] == "open" and inc["clear_since"] is not None
    quiet_through(ledger)
    assert control.evaluate_incidents(ledger, POLICY).resolved == [inc["id"]]
    [inc] = incidents(ledger, principal)
    assert (inc["state"], inc["resolved_by"]) == ("resolved", "orch:incidents")
    assert events(ledger) == ["incident.opened", "incident.resolved"]
    # The same condition again opens a new incident (after its own for period).
    dead_letters(ledger, principal, 12)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    [new] = control.evaluate_incidents(ledger, POLICY).opened
    assert new != inc["id"]
    assert [(i["id"], i["state"]) for i in incidents(ledger, principal)] == [(new, "open"), (inc["id"], "resolved")]


def test_a_condition_back_within_the_quiet_period_bumps_the_incident(ledger: sa.Engine, principal: Principal) -> None:
    dead_letters(ledger, principal, 11)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    control.evaluate_incidents(ledger, POLICY)
    out_of_window(ledger)
    control.evaluate_incidents(ledger, POLICY)  # clear: the quiet period runs
    dead_letters(ledger, principal, 11)
    assert control.evaluate_incidents(ledger, POLICY).opened == []
    [inc] = incidents(ledger, principal)
    assert (inc["state"], inc["occurrences"], inc["clear_since"]) == ("open", 2, None)


def test_at_the_threshold_nothing_opens_and_nothing_clears(ledger: sa.Engine, principal: Principal) -> None:
    dead_letters(ledger, principal, 10)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    assert control.evaluate_incidents(ledger, POLICY).opened == []
    assert incidents(ledger, principal) == []
    # Above it, the incident opens once held; back at exactly 10 it stays (fewer clears it).
    dead_letters(ledger, principal, 1)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    assert len(control.evaluate_incidents(ledger, POLICY).opened) == 1
    with ledger.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE jobs SET finished_at = finished_at - interval '1 hour'"
                " WHERE id = (SELECT min(id) FROM jobs WHERE state = 'dead_lettered')"
            )
        )
    control.evaluate_incidents(ledger, POLICY)
    [inc] = incidents(ledger, principal)
    assert inc["state"] == "open" and inc["clear_since"] is None


def test_two_schedulers_at_once_open_one_incident(ledger: sa.Engine, principal: Principal) -> None:
    dead_letters(ledger, principal, 11)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(control.evaluate_incidents(ledger, POLICY).opened))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(incidents(ledger, principal)) == 1


def test_an_open_circuit_opens_a_critical_incident_for_its_source(ledger: sa.Engine, principal: Principal) -> None:
    control.add_source(ledger, principal, tenant=TENANT, name="feed", host="feed.example", reason="tests")
    with ledger.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sources SET circuit_state = 'open', circuit_since = now() - interval '10 minutes',"
                " circuit_until = now() + interval '1 minute' WHERE name = 'feed'"
            )
        )
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    control.evaluate_incidents(ledger, POLICY)
    [inc] = incidents(ledger, principal)
    assert (inc["kind"], inc["severity"], inc["dedup_key"]) == (
        "circuit_open",
        "critical",
        f"{TENANT}:circuit_open:source:feed",
    )
    assert inc["evidence"]["host"] == "feed.example" and inc["evidence"]["circuit_state"] == "open"
    with ledger.connect() as conn:
        assert queries.critical_incidents_open(conn, principal) == 1


def test_operators_acknowledge_and_resolve_with_a_reason(ledger: sa.Engine, principal: Principal) -> None:
    dead_letters(ledger, principal, 11)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    [iid] = control.evaluate_incidents(ledger, POLICY).opened
    with pytest.raises(errors.ReasonRequired):
        control.acknowledge_incident(ledger, principal, iid, reason=None)
    with pytest.raises(errors.Forbidden):
        control.acknowledge_incident(ledger, VIEWER, iid, reason="mine")
    with pytest.raises(errors.NotFound):
        control.acknowledge_incident(ledger, principal, iid + 100, reason="mine")
    assert control.acknowledge_incident(ledger, principal, iid, reason="looking at the feed") == "acknowledged"
    with pytest.raises(errors.InvalidTransition):
        control.acknowledge_incident(ledger, principal, iid, reason="again")
    # Acknowledging mutes nothing: the condition still bumps it.
    dead_letters(ledger, principal, 1)
    control.evaluate_incidents(ledger, POLICY)
    [inc] = incidents(ledger, principal)
    assert (inc["state"], inc["acknowledged_by"]) == ("acknowledged", principal.subject)
    assert inc["evidence"]["dead_letters"] == 12
    assert control.resolve_incident(ledger, principal, iid, reason="feed fixed") == "resolved"
    with pytest.raises(errors.InvalidTransition):
        control.resolve_incident(ledger, principal, iid, reason="again")
    with ledger.connect() as conn:
        actions = [r["action"] for r in queries.audit_log(conn, principal, tenant=TENANT)]
    assert "incident_acknowledge" in actions and "incident_resolve" in actions
    assert events(ledger) == ["incident.opened", "incident.acknowledged", "incident.resolved"]


def test_cli_lists_shows_acks_and_resolves(services: Any, ledger: sa.Engine, principal: Principal) -> None:
    dead_letters(ledger, principal, 11)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    [iid] = control.evaluate_incidents(ledger, POLICY).opened
    listed = ok_json(orch(services, "incidents", "list", "--json"))["incidents"]
    assert [(i["id"], i["kind"], i["state"], i["tenant"]) for i in listed] == [(iid, "dlq_growth", "open", TENANT)]
    assert {"severity", "dedup_key", "opened_at", "resolved_at", "occurrences"} <= set(listed[0])
    assert ok_json(orch(services, "incidents", "show", str(iid), "--json"))["evidence"]["dead_letters"] == 11
    missing = orch(services, "incidents", "ack", str(iid))
    assert missing.returncode != 0 and "--reason" in missing.stderr and "Traceback" not in missing.stderr
    assert (
        ok_json(orch(services, "incidents", "ack", str(iid), "--reason", "mine", "--json"))["state"] == "acknowledged"
    )
    done = orch(services, "incidents", "resolve", str(iid), "--reason", "fixed")
    assert done.returncode == 0 and "resolved" in done.stdout
    assert ok_json(orch(services, "incidents", "list", "--state", "open", "--json"))["incidents"] == []
    bad = orch(services, "incidents", "show", "999999")
    assert bad.returncode != 0 and bad.stderr.startswith("orch: error: no incident 999999")


def test_the_exporter_counts_unresolved_incidents_by_kind_and_severity(ledger: sa.Engine, principal: Principal) -> None:
    from tests.dashboards.test_ledger_metrics import _scrape, _value

    scraped = _scrape(ledger)
    assert _value(scraped, "orch_incidents_open", kind="dlq_growth", severity="critical") == 0
    dead_letters(ledger, principal, 51)
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    [iid] = control.evaluate_incidents(ledger, POLICY).opened
    scraped = _scrape(ledger)
    assert _value(scraped, "orch_incidents_open", kind="dlq_growth", severity="critical") == 1
    assert _value(scraped, "orch_incidents_open", kind="circuit_open", severity="critical") == 0
    control.resolve_incident(ledger, principal, iid, reason="fixed")
    assert _value(_scrape(ledger), "orch_incidents_open", kind="dlq_growth", severity="critical") == 0


def test_a_source_throttled_without_a_break_opens_sustained_throttling(ledger: sa.Engine, principal: Principal) -> None:
    control.add_source(ledger, principal, tenant=TENANT, name="slow", host="slow.example", rate=0.001, burst=1.0)
    control.submit_many(
        ledger, principal, [control.JobSpec(TENANT, "noop", source="slow")] * 3, doorbell=control.NoDoorbell()
    )
    with ledger.begin() as conn:
        started = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=3, owner="w", job_types=["noop"])
    assert len(started) == 1  # the bucket holds one token: two wait as rate_limited
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)  # the general for period is not enough: throttling must last throttled_s
    assert control.evaluate_incidents(ledger, POLICY).opened == []
    backdate(ledger, "UPDATE incident_pending SET first_seen_at = first_seen_at - make_interval(secs => :s)", 600)
    control.evaluate_incidents(ledger, POLICY)
    [inc] = incidents(ledger, principal)
    assert (inc["kind"], inc["severity"], inc["scope"]) == ("sustained_throttling", "warning", "source:slow")
    assert len(inc["evidence"]["job_ids"]) == 2 and inc["evidence"]["host"] == "slow.example"


def test_a_job_running_past_its_limit_opens_stuck_job(ledger: sa.Engine, principal: Principal) -> None:
    control.submit_many(ledger, principal, [control.JobSpec(TENANT, "noop")] * 2, doorbell=control.NoDoorbell())
    with ledger.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=2, owner="w", job_types=["noop"])
    stuck = rows[0]["id"]
    assert control.evaluate_incidents(ledger, POLICY).conditions == 0  # running, but not for long
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET started_at = now() - interval '2 hours' WHERE id = :id"), {"id": stuck})
    control.evaluate_incidents(ledger, POLICY)
    held_through_for(ledger)
    control.evaluate_incidents(ledger, POLICY)
    [inc] = incidents(ledger, principal)
    assert (inc["kind"], inc["scope"], inc["evidence"]["job_ids"]) == ("stuck_job", "job_type:noop", [stuck])
    assert inc["evidence"]["longest_s"] >= 7200


def test_a_job_ready_past_its_limit_while_its_queue_works_opens_stuck_job(
    ledger: sa.Engine, principal: Principal
) -> None:
    (waiting,) = control.submit_many(
        ledger, principal, [control.JobSpec(TENANT, "sleep")], doorbell=control.NoDoorbell()
    ).job_ids
    control.submit_many(ledger, principal, [control.JobSpec(TENANT, "noop")], doorbell=control.NoDoorbell())
    with ledger.begin() as conn:  # a worker of the queue that does not run `sleep` is busy
        (busy,) = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=1, owner="w", job_types=["noop"])
    policy = Policy(for_s=60, quiet_s=300, ready_s=900)
    assert control.evaluate_incidents(ledger, policy).conditions == 0  # ready, but not for long
    backdate(
        ledger,
        "UPDATE jobs SET created_at = now() - make_interval(secs => :s), rung_at = NULL WHERE state = 'queued'",
        3600,
    )
    control.evaluate_incidents(ledger, policy)
    held_through_for(ledger)
    control.evaluate_incidents(ledger, policy)
    [inc] = incidents(ledger, principal)
    assert (inc["kind"], inc["scope"], inc["evidence"]["job_ids"]) == ("stuck_job", "ready:job_type:sleep", [waiting])
    assert inc["evidence"]["queue"] == "default" and inc["evidence"]["longest_s"] >= 3600
    # With no worker of the queue alive (nothing running, nothing finished lately) a ready
    # job is not stuck_job: the condition clears.
    with ledger.begin() as conn:
        ledger_jobs.succeed_jobs(conn, [busy["id"]], [busy["lease_id"]], actor="w")
    backdate(ledger, "UPDATE jobs SET finished_at = now() - make_interval(secs => :s) WHERE state = 'succeeded'", 3600)
    assert control.evaluate_incidents(ledger, policy).conditions == 0


def test_a_fast_burn_of_the_error_budget_opens_a_critical_incident(ledger: sa.Engine, principal: Principal) -> None:
    from core.domain import slo

    objective = slo.Slo(target=0.99)
    ids = control.submit_many(
        ledger, principal, [control.JobSpec(TENANT, "noop")] * 200, doorbell=control.NoDoorbell()
    ).job_ids
    with ledger.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue="default", limit=200, owner="w", job_types=["noop"])
        ledger_jobs.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor="w")
    assert len(ids) == 200
    # 2 dead letters in 202 finished: a burn rate of about 1, no fast burn.
    dead_letters(ledger, principal, 2)
    assert control.incidents.burn_conditions(ledger, objective) == []
    # 30 in 230: about 13x the budget, still under 14.4; 40 in 240: 16.7x.
    dead_letters(ledger, principal, 28)
    assert control.incidents.burn_conditions(ledger, objective) == []
    dead_letters(ledger, principal, 10)
    [burn] = control.incidents.burn_conditions(ledger, objective)
    assert (burn.kind, burn.severity, burn.scope, burn.tenant) == ("fast_burn", "critical", "job_type:noop", TENANT)
    assert burn.evidence["burn_rate_1h"] == burn.evidence["burn_rate_5m"] == round(40 / 240 / 0.01, 2)
    control.evaluate_incidents(ledger, POLICY, [burn])
    held_through_for(ledger)
    opened = control.evaluate_incidents(ledger, POLICY, [burn]).opened
    # 40 dead letters in 30 minutes are also dead-letter growth: two incidents, two keys.
    assert sorted(i["kind"] for i in incidents(ledger, principal) if i["id"] in opened) == ["dlq_growth", "fast_burn"]
