"""The webhook notifier's pure parts (worker/runtime/notifier.py): the type filter, the
signature, the body and headers, how an answer is classified, and its settings."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError

from core.domain import metrics
from core.settings import Settings
from worker.runtime import notifier

ENVELOPE = {
    "specversion": "1.0",
    "id": "7.2",
    "type": "orch.job.dead_lettered",
    "sequence": "42",
    "idempotencykey": "orch-orch.job.dead_lettered-9-3",
    "data": {"reason": "é"},
}


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        ((), "orch.job.succeeded", True),
        (("orch.job.dead_lettered",), "orch.job.dead_lettered", True),
        (("orch.job.dead_lettered",), "orch.job.dead_lettered_x", False),
        (("orch.incident.",), "orch.incident.opened", True),
        (("orch.incident.*",), "orch.incident.resolved", True),
        (("orch.incident.",), "orch.incidents.opened", False),
        (("orch.job.dead_lettered", "orch.incident."), "orch.job.succeeded", False),
        ((" ", ""), "orch.run.failed", True),
    ],
)
def test_type_filter(patterns: tuple[str, ...], event_type: str, expected: bool) -> None:
    assert notifier.matches(patterns, event_type) is expected


def test_the_signature_is_an_hmac_of_the_exact_body_and_headers_name_the_event() -> None:
    body = notifier.body_of(ENVELOPE)
    assert json.loads(body) == ENVELOPE
    headers = notifier.headers_of(ENVELOPE, body, "k" * 16)
    assert headers["X-Orch-Signature"] == "sha256=" + hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers["X-Orch-Idempotency-Key"] == "orch-orch.job.dead_lettered-9-3"
    assert (headers["X-Orch-Event-Id"], headers["X-Orch-Sequence"]) == ("7.2", "42")
    assert "X-Orch-Signature" not in notifier.headers_of(ENVELOPE, body, None)


@pytest.mark.parametrize(
    ("status", "delivered", "retry", "reason"),
    [
        (200, True, False, None),
        (204, True, False, None),
        (500, False, True, "http_5xx"),
        (503, False, True, "http_5xx"),
        (429, False, True, "http_429"),
        (408, False, True, "http_4xx"),
        (401, False, True, "http_4xx"),
        (404, False, True, "http_4xx"),
        (400, False, False, "http_4xx"),
        (413, False, False, "http_4xx"),
        (422, False, False, "http_4xx"),
        (302, False, True, "http_3xx"),
    ],
)
def test_answers_are_delivered_retried_or_given_up(
    status: int, delivered: bool, retry: bool, reason: str | None
) -> None:
    a = notifier.classify(status)
    assert (a.delivered, a.retry, a.reason) == (delivered, retry, reason)
    assert a.reason is None or a.reason in metrics.WEBHOOK_FAILURE_REASONS


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert notifier.classify(429, "3").retry_after_s == 3.0
    assert notifier.classify(503, "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s == 0.0
    assert notifier.classify(503, "soon").retry_after_s is None


def test_settings_need_a_secret_with_a_url_and_from_settings_builds_nothing_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("ORCH_WEBHOOK_URL", "ORCH_WEBHOOK_SECRET", "ORCH_WEBHOOK_TYPES"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.webhook_url is None and notifier.from_settings(None, s) is None  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="required when ORCH_WEBHOOK_URL is set"):
        Settings(webhook_url="https://hooks.example/orch")
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(webhook_url="https://hooks.example/orch", webhook_secret="short")
    with pytest.raises(ValidationError, match="http"):
        Settings(webhook_url="ftp://hooks.example/orch", webhook_secret="x" * 16)
    s = Settings(
        webhook_url="https://hooks.example/orch",
        webhook_secret="x" * 16,
        webhook_types="orch.job.dead_lettered, orch.incident.,",
    )
    assert s.webhook_type_list() == ["orch.job.dead_lettered", "orch.incident."]
    assert "x" * 16 not in repr(s)
    hook = notifier.from_settings(None, s)  # type: ignore[arg-type]
    assert hook is not None and hook.types == ("orch.job.dead_lettered", "orch.incident.") and hook.timeout_s == 5.0
