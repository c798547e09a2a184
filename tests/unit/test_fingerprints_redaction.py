"""Error fingerprints, redaction and burn-rate math: pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import fingerprints, metrics, redaction, slo


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTP 503 for /feed?page=17", "HTTP 503 for /feed?page=18"),
        ("timeout after 30.5s fetching https://a.example/x?y=1", "timeout after 2s fetching https://b.example/z"),
        ("row 5f3a9c0e1b rejected", "row 77aa00bc12 rejected"),
        ("job 0b9e7c1e-8a4c-4c7b-9f7e-3e0b7a1f2d11 lost", "job 6f1c2d3e-0000-4000-8000-123456789abc lost"),
        ("field 'published' missing", 'field "updated" missing'),
    ],
)
def test_variable_parts_do_not_split_a_cluster(a: str, b: str) -> None:
    assert fingerprints.fingerprint("x", a) == fingerprints.fingerprint("x", b)


def test_class_and_wording_do_split_clusters() -> None:
    assert fingerprints.fingerprint("http_5xx", "boom") != fingerprints.fingerprint("timeout", "boom")
    assert fingerprints.fingerprint("x", "HTTP 503 for /feed") != fingerprints.fingerprint("x", "HTTP 503 for /list")


@given(st.text(max_size=500))
def test_fingerprint_is_total_and_short(message: str) -> None:
    fp = fingerprints.fingerprint("unknown", message)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert len(fingerprints.normalise(message)) <= fingerprints.MAX_NORMALISED


def test_redact_nested_keys_case_insensitively() -> None:
    value = {"a": 1, "Api_Key": "k", "nested": [{"refresh_token": "t", "ok": "v"}], "HEADERS": {"Cookie": "c"}}
    assert redaction.redact(value) == {
        "a": 1,
        "Api_Key": "***",
        "nested": [{"refresh_token": "***", "ok": "v"}],
        "HEADERS": {"Cookie": "***"},
    }
    assert value["Api_Key"] == "k"  # a copy, the original is untouched


def test_redact_text_fragments() -> None:
    text = 'GET /x?api_key=abc&page=2 failed; "password": "hunter2"; Authorization: Bearer zzz'
    out = redaction.redact_text(text)
    assert "abc" not in out and "hunter2" not in out and "zzz" not in out
    assert "page=2" in out


def test_burn_rate_and_levels() -> None:
    assert slo.burn_rate(0, 0, 0.99) == 0.0
    assert slo.burn_rate(1, 100, 0.99) == pytest.approx(1.0)
    assert slo.level(20) == "critical" and slo.level(2) == "warn" and slo.level(0.5) == "ok"
    with pytest.raises(ValueError):
        slo.Slo(target=1.0)


def test_metric_declarations_are_well_formed() -> None:
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names))
    for m in metrics.METRICS:
        assert m.name.startswith("orch_")
        assert (m.kind == metrics.Kind.COUNTER) == m.name.endswith("_total")
        assert "job_id" not in m.labels
        assert (m.kind == metrics.Kind.HISTOGRAM) == bool(m.buckets)
