"""Incidents page: unresolved incidents first with their evidence, acknowledge and resolve
with a reason (audited), and the banner every page shows while a critical one is open."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from app import labels
from core import control
from core.domain.auth import Scope
from core.domain.incidents import Policy
from tests.app.conftest import TENANT_A, _dead_letter, button, last_audit, open_app, text_input, texts

POLICY = Policy(for_s=0, quiet_s=300, dlq_window_s=1800, dlq_warning=10, dlq_critical=50)


def _incident(console: sa.Engine, n: int) -> int:
    _dead_letter(console, TENANT_A, "http_5xx", [f"upstream 503 #{i}" for i in range(n)])
    control.evaluate_incidents(console, POLICY)  # starts the for period
    [iid] = control.evaluate_incidents(console, POLICY).opened
    return iid


def test_no_incident_says_so_and_shows_no_banner(console: sa.Engine, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("viewer", {Scope.READ}), "incidents")
    assert labels.NO_INCIDENTS in texts(at)
    assert not any("critical incident" in e.value for e in at.error)


def test_a_critical_incident_shows_everywhere_and_is_acknowledged_then_resolved(
    console: sa.Engine, make_token: Callable[..., str]
) -> None:
    iid = _incident(console, 51)
    token = make_token("operator", {Scope.READ, Scope.OPERATE})
    overview = open_app(token)
    assert [e.value for e in overview.error] == [labels.critical_incidents(1)]
    at = open_app(token, "incidents")
    assert [e.value for e in at.error] == [labels.critical_incidents(1)]
    page = texts(at)
    assert f"#{iid} critical dlq_growth" in "\n".join(e.label for e in at.expander)
    assert '"dead_letters": 51' in page and "1 incident(s), 1 unresolved" in page
    button(at, "Acknowledge").click().run()
    button(at, labels.CONFIRM).click().run()
    assert "needs a reason" in texts(at)
    text_input(at, labels.REASON_LABEL).input("looking at the feed")
    button(at, labels.CONFIRM).click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [f"Acknowledge incident {iid}: incident {iid} is acknowledged"]
    row = last_audit(console)
    assert (row["action"], row["reason"], row["tenant"]) == ("incident_acknowledge", "looking at the feed", TENANT_A)
    button(at, "Resolve").click().run()
    text_input(at, labels.REASON_LABEL).input("feed fixed")
    button(at, labels.CONFIRM).click().run()
    assert [s.value for s in at.success] == [f"Resolve incident {iid}: incident {iid} is resolved"]
    assert last_audit(console)["action"] == "incident_resolve"
    assert not any("critical incident" in e.value for e in open_app(token, "incidents").error)


def test_a_viewer_sees_the_incident_but_cannot_act(console: sa.Engine, make_token: Callable[..., str]) -> None:
    _incident(console, 11)
    at = open_app(make_token("viewer", {Scope.READ}), "incidents")
    assert not at.error  # a warning: no banner
    assert button(at, "Acknowledge").disabled and button(at, "Resolve").disabled
