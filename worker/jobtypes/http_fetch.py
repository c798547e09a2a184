"""The built-in job type `http_fetch`: GET one URL, within the egress policy (the source's host,
public addresses), and name the outcome in Orch's error classes (throttled, 5xx, 4xx, timeout,
network, schema drift, egress refused), so flow control reacts to real upstreams.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import socket
import ssl
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from core.domain.failures import ErrorClass
from worker import sdk
from worker.jobtypes import egress

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
MAX_BODY_BYTES = 32 * 1024 * 1024
ITEMS_FIELD = "items"
USER_AGENT = "orch-http-fetch/1"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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


#: Opens a TCP connection to one checked address within a timeout (tests stand in for the network).
Connector = Callable[[egress.Address, float], socket.socket]


def open_socket(address: egress.Address, timeout_s: float) -> socket.socket:
    """A TCP connection to one checked address."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_any(target: egress.Target, timeout_s: float, connector: Connector) -> socket.socket:
    """The first of the target's checked addresses that accepts (as socket.create_connection
    tries each address, but never resolving the name again)."""
    error: OSError | None = None
    for address in target.addresses:
        try:
            return connector(address, timeout_s)
        except OSError as exc:
            error = exc
    raise error or OSError(f"no address to connect to for {target.host}")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address checked beforehand; Host is still the URL's host."""

    def __init__(self, target: egress.Target, timeout_s: float, connector: Connector) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._target, self._timeout_s, self._connector = target, timeout_s, connector
        self.reached = False

    def connect(self) -> None:
        self.sock = _connect_any(self._target, self._timeout_s, self._connector)
        self.reached = True


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and the certificate check use the URL's host."""

    def __init__(self, target: egress.Target, timeout_s: float, connector: Connector) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout_s, context=self._tls)
        self._target, self._timeout_s, self._connector = target, timeout_s, connector
        self.reached = False

    def connect(self) -> None:
        sock = _connect_any(self._target, self._timeout_s, self._connector)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self._target.host)
        except BaseException:
            sock.close()
            raise
        self.reached = True


def fetch(
    request: FetchRequest,
    source: egress.Source | None = None,
    *,
    resolver: egress.Resolver = socket.getaddrinfo,
    connector: Connector = open_socket,
) -> Response:
    """GET the URL as the egress policy allows (see worker.jobtypes.egress) and return any HTTP
    answer, error statuses included. Redirects are followed, up to MAX_REDIRECTS, only where
    the policy allows the first URL (the source's host, or the URL's own host without one).
    Proxy settings in the environment are ignored: a proxy would connect to names unchecked.

    Raises FatalError(EGRESS_REFUSED) before any connection for what the policy refuses,
    RetryableError(TIMEOUT) when the upstream is too slow, RetryableError(NETWORK) when it
    cannot be reached (refused, reset, DNS, TLS), FatalError(PARSE_ERROR) for a body over
    MAX_BODY_BYTES.
    """
    url, previous, origin = request.url, None, None
    for hop in range(MAX_REDIRECTS + 1):
        target = _plan(url, previous, source, resolver, origin)
        origin = origin or target.host
        response = _get(target, url, request.timeout_s, connector)
        location = header(response.headers, "Location") if response.status in REDIRECT_STATUSES else None
        if location is None:
            return response
        next_url = _redirect_url(url, location)
        if hop == MAX_REDIRECTS:
            raise _refused(
                f"refused to follow the redirect from {display_url(url)} to {display_url(next_url)}: "
                f"more than {MAX_REDIRECTS} redirects from {display_url(request.url)}"
            )
        previous, url = url, next_url
    raise AssertionError("unreachable: the loop returns or raises")


def _plan(
    url: str, previous: str | None, source: egress.Source | None, resolver: egress.Resolver, origin: str | None
) -> egress.Target:
    """The checked target of `url` (where a redirect from `previous` leads, if given)."""
    where = display_url(url)
    what = f"fetch {where}" if previous is None else f"follow the redirect from {display_url(previous)} to {where}"
    try:
        return egress.plan(url, source, resolver, origin=origin)
    except egress.Refused as exc:
        raise _refused(f"refused to {what}: {exc.reason}") from None
    except ValueError as exc:  # a redirect's Location that is no URL
        raise _refused(f"refused to {what}: not a valid URL ({exc})") from None
    except OSError as exc:  # the name does not resolve
        raise sdk.RetryableError(f"cannot reach {where}: {exc}", error_class=ErrorClass.NETWORK) from exc


def _get(target: egress.Target, url: str, timeout_s: float, connector: Connector) -> Response:
    """One GET of `url` on its checked target, redirects not followed."""
    where = display_url(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pinned = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = pinned(target, timeout_s, connector)
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Connection": "close"}
    try:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        return Response(answer.status, dict(answer.headers.items()), _read(answer, where))
    except TimeoutError as exc:  # socket.timeout is TimeoutError
        raise _timeout(where, timeout_s) from exc
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, TLS, truncated answers
        detail = str(exc) or type(exc).__name__
        if not conn.reached:
            raise sdk.RetryableError(f"cannot reach {where}: {detail}", error_class=ErrorClass.NETWORK) from exc
        raise sdk.RetryableError(f"network error talking to {where}: {detail}", error_class=ErrorClass.NETWORK) from exc
    finally:
        conn.close()


def _redirect_url(current: str, location: str) -> str:
    """Where a Location leads from `current`; what it should not hold raw (spaces, non-ASCII)
    percent-encoded, as urllib does (escapes already there are kept)."""
    return urljoin(current, quote(location.strip(), safe=string.punctuation))


def _refused(message: str) -> sdk.FatalError:
    return sdk.FatalError(message, error_class=ErrorClass.EGRESS_REFUSED)


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
    object with a list `items`. A job with a source may fetch only that source's host, and
    only public addresses unless the source allows private ones. Raises UpstreamThrottled,
    RetryableError, FatalError (see classify and fetch)."""
    request = parse_request(ctx.payload)
    response = fetch(request, ctx.source)
    outcome = classify(response.status, response.headers, response.body, request.parse, url=request.url)
    if isinstance(outcome, Exception):
        raise outcome
    summary = f"{outcome.items} items" if outcome.items is not None else f"{outcome.size} bytes"
    ctx.progress(1.0, summary)
    ctx.log(f"GET {display_url(request.url)} -> HTTP {outcome.status}, {summary}")
