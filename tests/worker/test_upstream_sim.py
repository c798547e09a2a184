"""The upstream simulator over real HTTP (hidden limit, error bursts, drift, latency, control
endpoints, the CLI entry point) and the http_fetch job type's classification against it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.domain.failures import ErrorClass
from tests.conftest import ROOT
from worker import sdk
from worker.devtools import upstream_sim
from worker.jobtypes import http_fetch


@pytest.fixture(scope="module")
def sim() -> Iterator[upstream_sim.UpstreamSim]:
    with upstream_sim.UpstreamSim() as server:
        yield server


def get(url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) for any status."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, json.loads(exc.read())


def call(url: str, method: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# -- the simulator ----------------------------------------------------------------------


def test_hidden_limit_answers_429_with_retry_after_and_admits_at_most_burst_plus_rate(
    sim: upstream_sim.UpstreamSim,
) -> None:
    rate, burst = 5.0, 5
    started = time.monotonic()  # before the bucket is reset, so the bound below is conservative
    sim.configure("limited", rate_limit=rate, burst=burst, retry_after_s=1.0)
    statuses: list[int] = []
    throttled_headers = None
    deadline = started + 1.0
    while time.monotonic() < deadline:
        status, headers, body = get(f"{sim.url}/feeds/limited/items")
        statuses.append(status)
        if status == 429 and throttled_headers is None:
            throttled_headers = headers
            assert body == {"error": "rate limited"}
    elapsed = time.monotonic() - started
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert statuses[:burst] == [200] * burst  # the bucket starts full
    assert throttled_headers is not None, f"no 429 in {len(statuses)} requests"
    assert throttled_headers["Retry-After"] == "1"
    assert allowed <= burst + rate * elapsed
    assert sim.stats()["limited"] == {"ok": allowed, "throttled": statuses.count(429), "errors": 0, "drift": 0}


def test_fractional_retry_after_is_sent_as_a_number(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("half", rate_limit=0.01, burst=1, retry_after_s=0.5)
    assert get(f"{sim.url}/feeds/half")[0] == 200
    status, headers, _ = get(f"{sim.url}/feeds/half")
    assert (status, headers["Retry-After"]) == (429, "0.5")


def test_error_burst_answers_exactly_n_503s_then_200s(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("bursty", error_burst=3)
    answers = [get(f"{sim.url}/feeds/bursty?page={i}") for i in range(1, 7)]
    assert [status for status, _, _ in answers] == [503, 503, 503, 200, 200, 200]
    assert all(headers["Retry-After"] is None for _, headers, _ in answers)
    assert answers[3][2] == {
        "feed": "bursty",
        "page": 4,
        "items": [
            {"id": "bursty-4-0", "value": 4000},
            {"id": "bursty-4-1", "value": 4001},
            {"id": "bursty-4-2", "value": 4002},
        ],
    }
    assert sim.stats()["bursty"] == {"ok": 3, "throttled": 0, "errors": 3, "drift": 0}
    assert sim.feeds()["bursty"].error_burst == 0


def test_drift_renames_items_to_entries(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("drifter", drift=True, items=2)
    status, _, body = get(f"{sim.url}/feeds/drifter/advisories?page=2")
    assert status == 200
    assert "items" not in body
    assert body == {
        "feed": "drifter",
        "page": 2,
        "entries": [{"id": "drifter-2-0", "value": 2000}, {"id": "drifter-2-1", "value": 2001}],
    }
    assert sim.stats()["drifter"]["drift"] == 1


def test_feed_is_chosen_by_host_header_and_unknown_names_use_default(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("hosted", drift=True)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        conn.request("GET", "/anything", headers={"Host": "hosted.localhost:8599"})
        answer = conn.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read())["feed"] == "hosted"
    finally:
        conn.close()
    status, _, body = get(f"{sim.url}/feeds/never-configured")
    assert (status, body["feed"], len(body["items"])) == (200, "default", 3)


def test_latency_makes_a_short_timeout_client_time_out(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("sluggish", latency_s=5.0)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=0.2)
    try:
        conn.request("GET", "/feeds/sluggish")
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()


def test_control_endpoints(sim: upstream_sim.UpstreamSim) -> None:
    status, feeds = call(f"{sim.url}/_sim/feeds", "GET")
    assert status == 200
    assert feeds["default"] == upstream_sim.FeedConfig().to_json()

    status, body = call(f"{sim.url}/_sim/feeds/ctl", "PUT", b'{"rate_limit": 2, "nonsense": 1}')
    assert status == 400
    assert "unknown field(s) nonsense" in body["error"]
    assert "rate_limit" in body["error"]  # names the known fields
    for bad in (b'{"error_rate": 2}', b'{"drift": "yes"}', b"not json", b"[1, 2]", b'{"error_status": 404}'):
        status, body = call(f"{sim.url}/_sim/feeds/ctl", "PUT", bad)
        assert status == 400, bad
        assert body["error"]
    assert "ctl" not in call(f"{sim.url}/_sim/feeds", "GET")[1]

    status, body = call(f"{sim.url}/_sim/feeds/ctl", "PUT", b'{"rate_limit": 2, "items": 1}')
    assert status == 200
    assert body["ctl"]["rate_limit"] == 2.0
    status, body = call(f"{sim.url}/_sim/feeds/ctl", "PUT", b'{"drift": true}')  # updates, keeps the rest
    assert (body["ctl"]["rate_limit"], body["ctl"]["items"], body["ctl"]["drift"]) == (2.0, 1, True)
    assert call(f"{sim.url}/_sim/feeds", "GET")[1]["ctl"] == body["ctl"]

    get(f"{sim.url}/feeds/ctl")
    assert call(f"{sim.url}/_sim/stats", "GET")[1]["ctl"] == {"ok": 0, "throttled": 0, "errors": 0, "drift": 1}
    call(f"{sim.url}/_sim/feeds/ctl", "PUT", b"{}")  # reconfiguring resets the feed's counts
    assert call(f"{sim.url}/_sim/stats", "GET")[1]["ctl"]["drift"] == 0

    get(f"{sim.url}/feeds/ctl")
    assert call(f"{sim.url}/_sim/reset", "POST", b"") == (200, {"reset": True})
    stats = call(f"{sim.url}/_sim/stats", "GET")[1]
    assert all(counts == dict.fromkeys(upstream_sim.COUNTERS, 0) for counts in stats.values())

    assert call(f"{sim.url}/_sim/nothing", "GET")[0] == 404
    assert call(f"{sim.url}/feeds/ctl", "POST", b"")[0] == 405
    assert get(f"{sim.url}/feeds/ctl?page=zero")[0] == 400
    with pytest.raises(upstream_sim.ConfigError, match="unknown field"):
        sim.configure("ctl", colour="red")


def test_main_serves_the_demo_feeds_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "feeds.json"
    config.write_text(json.dumps({"nvd": {"rate_limit": 3}, "osv": {"drift": True}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra, expected in (
        ([], "default, throttled, flaky, slow, drifting"),
        (["--config", str(config)], "default, nvd, osv"),
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.devtools.upstream_sim", "--port", "0", *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("upstream-sim listening on http://127.0.0.1:")
            assert line.endswith(f"(feeds: {expected})")
            url = line.split()[3]
            assert get(f"{url}/feeds/default")[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nvd": {"rate": 3}}))
    done = subprocess.run(
        [sys.executable, "-m", "worker.devtools.upstream_sim", "--port", "0", "--config", str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown field(s) rate" in done.stderr


# -- classification (pure) --------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("0.5", 0.5),
        (" 120 ", 120.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert http_fetch.parse_retry_after(value, NOW) == expected


def classify(status: int, headers: Mapping[str, str] | None = None, body: bytes = b"", parse: bool = True) -> Any:
    return http_fetch.classify(status, headers or {}, body, parse, url="https://u:pw@feeds.example/x", now=NOW)


def test_429_is_upstream_throttled_with_retry_after() -> None:
    outcome = classify(429, {"retry-after": "7"})
    assert isinstance(outcome, sdk.UpstreamThrottled)
    assert (outcome.retry_after, outcome.error_class) == (7.0, ErrorClass.HTTP_429)
    assert "pw" not in str(outcome)
    missing = classify(429)
    assert isinstance(missing, sdk.UpstreamThrottled)
    assert missing.retry_after is None
    dated = classify(429, {"Retry-After": formatdate(NOW + 90, usegmt=True)})
    assert dated.retry_after == 90.0


def test_503_with_retry_after_is_throttled_and_without_it_is_5xx() -> None:
    throttled = classify(503, {"Retry-After": "2"})
    assert isinstance(throttled, sdk.UpstreamThrottled)
    assert throttled.retry_after == 2.0
    for status in (503, 500, 502):
        outcome = classify(status)
        assert type(outcome) is sdk.RetryableError
        assert outcome.error_class == ErrorClass.HTTP_5XX
        assert f"HTTP {status}" in str(outcome)
        assert "https://feeds.example/x" in str(outcome)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_fatal(status: int) -> None:
    outcome = classify(status)
    assert isinstance(outcome, sdk.FatalError)
    assert outcome.error_class == ErrorClass.HTTP_4XX
    assert f"HTTP {status}" in str(outcome)


def test_2xx_bodies() -> None:
    assert classify(200, body=b'{"items": [1, 2]}') == http_fetch.FetchResult(200, 2, 17)
    assert classify(200, body=b"<html>", parse=False) == http_fetch.FetchResult(200, None, 6)
    drift = classify(200, body=b'{"feed": "f", "entries": []}')
    assert isinstance(drift, sdk.FatalError)
    assert drift.error_class == ErrorClass.SCHEMA_MISMATCH
    assert "'items' is missing" in str(drift)
    assert "entries, feed" in str(drift)
    wrong_type = classify(200, body=b'{"items": "x"}')
    assert wrong_type.error_class == ErrorClass.SCHEMA_MISMATCH
    assert "not a list" in str(wrong_type)
    assert classify(200, body=b"[1]").error_class == ErrorClass.SCHEMA_MISMATCH
    for body in (b"<html>", b"", b"\xff\xfe"):
        outcome = classify(200, body=body)
        assert isinstance(outcome, sdk.FatalError)
        assert outcome.error_class == ErrorClass.PARSE_ERROR


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"url": 3},
        {"url": "ftp://feeds.example/x"},
        {"url": "http://"},
        {"url": "http://feeds.example:port/"},
        {"url": "http://feeds.example/a b"},
        {"url": "http://feeds.example/", "timeout_s": 0},
        {"url": "http://feeds.example/", "timeout_s": 301},
        {"url": "http://feeds.example/", "timeout_s": "10"},
        {"url": "http://feeds.example/", "parse": "yes"},
    ],
)
def test_bad_payload_is_a_fatal_parse_error(payload: dict[str, Any]) -> None:
    with pytest.raises(sdk.FatalError) as raised:
        http_fetch.parse_request(payload)
    assert raised.value.error_class == ErrorClass.PARSE_ERROR
    assert "http_fetch payload" in str(raised.value)


# -- http_fetch end to end against the simulator ----------------------------------------


class StandInContext:
    """The handler's input: a payload, the job's source, and the two report-back calls it uses."""

    def __init__(self, payload: Mapping[str, Any], source: sdk.SourceInfo | None = None) -> None:
        self.payload = payload
        self.source = source
        self.job_id = 1
        self.attempt = 1
        self.progress_calls: list[tuple[float, str | None]] = []
        self.lines: list[str] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.progress_calls.append((fraction, message))

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append(message)


def sim_source(url: str) -> sdk.SourceInfo:
    """A source for the simulator at `url`'s host:port; it listens on loopback, so the source
    allows private addresses (as the demo's do)."""
    return sdk.SourceInfo(1, "sim", urlsplit(url).netloc, allow_private=True)


def run(payload: Mapping[str, Any]) -> StandInContext:
    """Run http_fetch as a job of the source of the simulator it fetches."""
    ctx = StandInContext(payload, sim_source(payload["url"]))
    http_fetch.http_fetch(ctx)  # type: ignore[arg-type]
    return ctx


def test_http_fetch_is_registered() -> None:
    spec = sdk.registry()["http_fetch"]
    assert (spec.policy.max_attempts, spec.policy.base_s, spec.policy.cap_s) == (5, 0.5, 30.0)


def test_http_fetch_success_reports_item_count(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("fine", items=4)
    ctx = run({"url": f"{sim.url}/feeds/fine"})
    assert ctx.progress_calls == [(1.0, "4 items")]
    assert len(ctx.lines) == 1
    assert "HTTP 200" in ctx.lines[0]
    assert "4 items" in ctx.lines[0]


def test_http_fetch_429_is_upstream_throttled(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("strict", rate_limit=0.01, burst=1, retry_after_s=1.0)
    run({"url": f"{sim.url}/feeds/strict"})
    with pytest.raises(sdk.UpstreamThrottled) as raised:
        run({"url": f"{sim.url}/feeds/strict"})
    assert raised.value.retry_after == 1.0
    assert raised.value.error_class == ErrorClass.HTTP_429


def test_http_fetch_503_burst_is_retryable_5xx(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("failing", error_burst=2)
    url = f"{sim.url}/feeds/failing"
    for _ in range(2):
        with pytest.raises(sdk.RetryableError) as raised:
            run({"url": url})
        assert not isinstance(raised.value, sdk.UpstreamThrottled)
        assert raised.value.error_class == ErrorClass.HTTP_5XX
        assert "HTTP 503" in str(raised.value)
        assert url in str(raised.value)
    assert run({"url": url}).progress_calls == [(1.0, "3 items")]


def test_http_fetch_drift_is_schema_mismatch(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("shifted", drift=True)
    with pytest.raises(sdk.FatalError) as raised:
        run({"url": f"{sim.url}/feeds/shifted"})
    assert raised.value.error_class == ErrorClass.SCHEMA_MISMATCH
    assert "entries" in str(raised.value)
    assert run({"url": f"{sim.url}/feeds/shifted", "parse": False}).progress_calls[0][0] == 1.0


def test_http_fetch_slow_upstream_times_out(sim: upstream_sim.UpstreamSim) -> None:
    sim.configure("stalled", latency_s=5.0)
    with pytest.raises(sdk.RetryableError) as raised:
        run({"url": f"{sim.url}/feeds/stalled", "timeout_s": 0.2})
    assert raised.value.error_class == ErrorClass.TIMEOUT


def test_http_fetch_closed_port_is_network() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(sdk.RetryableError) as raised:
        run({"url": f"http://127.0.0.1:{port}/feeds/x", "timeout_s": 2})
    assert raised.value.error_class == ErrorClass.NETWORK
