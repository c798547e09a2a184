"""The built-in job type `http_fetch`: GET one URL and name the outcome in Orch's error classes
(throttled, 5xx, 4xx, timeout, network, schema drift), so flow control reacts to real upstreams.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.domain.failures import ErrorClass
from worker import sdk

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
MAX_BODY_BYTES = 32 * 1024 * 1024
ITEMS_FIELD = "items"
USER_AGENT = "orch-http-fetch/1"


@dataclass(frozen=True)
class FetchRequest:
    url: str
    parse: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class FetchResult:
    """A successful fetch: `items` is the length of the `items` list, None when not parsed."""

    status: int
    items: int | None
    size: int


Outcome = FetchResult | sdk.RetryableError | sdk.FatalError


def parse_request(payload: Mapping[str, Any]) -> FetchRequest:
    """Validate the payload {"url", "parse", "timeout_s"}. Raises FatalError(PARSE_ERROR)."""

    def bad(message: str) -> sdk.FatalError:
        return sdk.FatalError(f"http_fetch payload: {message}", error_class=ErrorClass.PARSE_ERROR)

    url = payload.get("url")
    if not isinstance(url, str) or not url:
        raise bad(f"'url' must be a non-empty string, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise bad(f"'url' is not a valid URL ({exc}): {display_url(url)}") from exc
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise bad(f"'url' must not contain spaces or control characters, got {display_url(url)!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad(f"'url' must be an http or https URL with a host, got {display_url(url)}")
    parse = payload.get("parse", True)
    if not isinstance(parse, bool):
        raise bad(f"'parse' must be true or false, got {parse!r}")
    timeout = payload.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout):
        raise bad(f"'timeout_s' must be a number, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise bad(f"'timeout_s' must satisfy 0 < timeout_s <= {MAX_TIMEOUT_S:g}, got {timeout}")
    return FetchRequest(url, parse, float(timeout))


def display_url(url: str) -> str:
    """The URL without user:password@, fit for error messages and logs."""
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    except ValueError:
        return "<unparseable url>"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: a number of seconds, or an HTTP date
    (seconds from `now`, epoch seconds, floored at 0). None when absent or unparseable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    parse: bool,
    *,
    url: str = "",
    now: float | None = None,
) -> Outcome:
    """The outcome of one HTTP answer: a FetchResult, or the sdk error the handler raises.

    429, and 503 with Retry-After -> UpstreamThrottled; other 5xx -> RetryableError(HTTP_5XX);
    other 4xx -> FatalError(HTTP_4XX); 2xx with parse: a JSON object with a list `items`, else
    FatalError(SCHEMA_MISMATCH), or FatalError(PARSE_ERROR) for a body that is not JSON.
    """
    where = display_url(url) or "upstream"
    retry_after_value = header(headers, "Retry-After")
    retry_after = parse_retry_after(retry_after_value, time.time() if now is None else now)
    if status == 429 or (status == 503 and retry_after_value is not None and retry_after_value.strip()):
        return sdk.UpstreamThrottled(f"HTTP {status} (throttled) from {where}", retry_after=retry_after)
    if 500 <= status <= 599:
        return sdk.RetryableError(
            f"HTTP {status} from {where}", retry_after=retry_after, error_class=ErrorClass.HTTP_5XX
        )
    if 400 <= status <= 499:
        return sdk.FatalError(f"HTTP {status} from {where}", error_class=ErrorClass.HTTP_4XX)
    if not 200 <= status <= 299:
        return sdk.FatalError(f"unexpected HTTP {status} from {where}", error_class=ErrorClass.UNKNOWN)
    if not parse:
        return FetchResult(status, None, len(body))
    try:
        document = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return sdk.FatalError(
            f"HTTP {status} from {where}: body is not JSON ({exc})", error_class=ErrorClass.PARSE_ERROR
        )
    if not isinstance(document, dict):
        return sdk.FatalError(
            f"HTTP {status} from {where}: expected a JSON object with a list field {ITEMS_FIELD!r}, "
            f"got a JSON {type(document).__name__}",
            error_class=ErrorClass.SCHEMA_MISMATCH,
        )
    items = document.get(ITEMS_FIELD)
    if not isinstance(items, list):
        found = ", ".join(sorted(map(str, document))) or "none"
        problem = "is missing" if ITEMS_FIELD not in document else f"is a {type(items).__name__}, not a list"
        return sdk.FatalError(
            f"HTTP {status} from {where}: field {ITEMS_FIELD!r} {problem} (top-level keys found: {found})",
            error_class=ErrorClass.SCHEMA_MISMATCH,
        )
    return FetchResult(status, len(items), len(body))


def fetch(request: FetchRequest) -> Response:
    """GET the URL (redirects followed) and return any HTTP answer, error statuses included.

    Raises RetryableError(TIMEOUT) when the upstream is too slow, RetryableError(NETWORK) when
    it cannot be reached (refused, reset, DNS, TLS), FatalError(PARSE_ERROR) for a body over
    MAX_BODY_BYTES.
    """
    where = display_url(request.url)
    http_request = urllib.request.Request(
        request.url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"}, method="GET"
    )
    try:
        try:
            with urllib.request.urlopen(http_request, timeout=request.timeout_s) as answer:
                return Response(answer.status, dict(answer.headers.items()), _read(answer, where))
        except urllib.error.HTTPError as exc:  # a non-2xx answer is still an answer
            with exc:
                return Response(exc.code, dict(exc.headers.items()), _read(exc, where))
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _timeout(where, request.timeout_s) from exc
        raise sdk.RetryableError(f"cannot reach {where}: {reason}", error_class=ErrorClass.NETWORK) from exc
    except TimeoutError as exc:  # socket.timeout is TimeoutError
        raise _timeout(where, request.timeout_s) from exc
    except (OSError, http.client.HTTPException) as exc:  # reset, refused, truncated answers
        detail = str(exc) or type(exc).__name__
        raise sdk.RetryableError(f"network error talking to {where}: {detail}", error_class=ErrorClass.NETWORK) from exc


def _timeout(where: str, timeout_s: float) -> sdk.RetryableError:
    return sdk.RetryableError(f"no answer from {where} within {timeout_s:g}s", error_class=ErrorClass.TIMEOUT)


def _read(answer: Any, where: str) -> bytes:
    data: bytes = answer.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise sdk.FatalError(
            f"body from {where} is larger than {MAX_BODY_BYTES} bytes", error_class=ErrorClass.PARSE_ERROR
        )
    return data


@sdk.job_handler("http_fetch", max_attempts=5, backoff_base_s=0.5, backoff_cap_s=30.0)
def http_fetch(ctx: sdk.JobContext) -> None:
    """{"url": u, "parse": true, "timeout_s": 10}: GET u; with parse, the answer must be a JSON
    object with a list `items`. Raises UpstreamThrottled, RetryableError, FatalError (see classify)."""
    request = parse_request(ctx.payload)
    response = fetch(request)
    outcome = classify(response.status, response.headers, response.body, request.parse, url=request.url)
    if isinstance(outcome, Exception):
        raise outcome
    summary = f"{outcome.items} items" if outcome.items is not None else f"{outcome.size} bytes"
    ctx.progress(1.0, summary)
    ctx.log(f"GET {display_url(request.url)} -> HTTP {outcome.status}, {summary}")
