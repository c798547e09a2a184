"""The Incidents page's Webhook section (core.queries.webhook_status): the notifier's backlog,
failures, last error and last success, for principals who read every tenant."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from core.domain.auth import Scope
from core.ledger import notifier as ledger_notifier
from tests.app.conftest import TENANT_A, metrics, open_app, texts


def test_the_webhook_section_shows_the_notifiers_cursor(console: sa.Engine, make_token: Callable[..., str]) -> None:
    with console.begin() as conn:
        conn.execute(sa.text("DELETE FROM notifier_cursors"))
    viewer = make_token("viewer", {Scope.READ})
    assert "No webhook notifier has run" in texts(open_app(viewer, "incidents"))
    with console.begin() as conn:
        newest = int(conn.execute(sa.text("SELECT last_seq FROM event_relay")).scalar_one())
        ledger_notifier.ensure_cursor(conn, ledger_notifier.WEBHOOK, start=max(0, newest - 4))
        ledger_notifier.record(
            conn,
            ledger_notifier.WEBHOOK,
            last_seq=max(0, newest - 4),
            delivered=7,
            dropped=1,
            failures={"http_5xx": 3, "timeout": 2},
            consecutive_failures=2,
            error="event 12 (orch.job.succeeded): HTTP 503",
            succeeded=True,
        )
    at = open_app(viewer, "incidents")
    shown = metrics(at)
    assert (shown["Delivered"], shown["Failed attempts"], shown["Dropped"]) == ("7", "5", "1")
    assert shown["Backlog"] == str(newest - max(0, newest - 4))
    page = texts(at)
    assert "HTTP 503" in page and "2 failure(s) in a row" in page
    # A token limited to some tenants sees no deployment-wide section.
    limited = make_token("tenant-viewer", {Scope.READ}, {TENANT_A})
    assert "Webhook" not in [s.value for s in open_app(limited, "incidents").subheader]
