"""The webhook notifier (issue 12, "Notifiers"): while its scheduler leads, it reads the event
stream after its durable cursor (core/ledger/notifier.py), keeps the events whose type matches
ORCH_WEBHOOK_TYPES and POSTs each one's orch.event.v1 envelope to ORCH_WEBHOOK_URL, one at a
time, in stream order.

- Every POST is signed: `X-Orch-Signature: sha256=<hex HMAC-SHA256 of the exact body>` keyed by
  ORCH_WEBHOOK_SECRET, and carries `X-Orch-Idempotency-Key` (the envelope's idempotencykey),
  `X-Orch-Event-Id` and `X-Orch-Sequence`.
- 2xx: delivered. 5xx, 408, 425, 429, 401, 403, 404, 3xx (redirects are not followed), timeouts
  and connection errors: retried, the same event again, after exponential back-off with full
  jitter (core.domain.backoff; a Retry-After is honoured up to the cap), for as long as it
  takes: the stream waits, its backlog grows and shows (metrics, console). Every other 4xx
  (400, 409, 413, 422, ...) is the receiver refusing that one event: it is given up (counted
  as dropped, one log line) and the next one follows.
- The cursor moves only past events delivered, given up or not matching the filter, and is
  written after every step, so a restart resumes after the last step written: no event is
  lost, at most one step's events are posted again (with the same idempotency key).
- Events pruned by retention before delivery are counted as dropped (one log line).
- Its own thread and connections: a failing endpoint never holds up the relay; one step posts
  at most `batch` events and stops at the first retry; `stop` is honoured between POSTs and
  during every wait.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import sqlalchemy as sa

from core.domain import backoff
from core.domain import events as domain_events
from core.domain import metrics as decl
from core.ledger import events
from core.ledger import notifier as ledger
from core.settings import Settings

log = logging.getLogger(__name__)

#: The cursor's name in notifier_cursors.
NAME = ledger.WEBHOOK
CONTENT_TYPE = "application/cloudevents+json"
USER_AGENT = "orch-webhook/1"
#: Most events one step posts (it stops earlier at the first retry).
BATCH = 100
#: How long the notifier waits after finding nothing to post.
IDLE_S = 0.2
#: Back-off after failed attempts: base * 2^(n-1), full jitter, capped.
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
#: Values of the `reason` label of orch_webhook_failures_total (every one is exported).
FAILURE_REASONS = decl.WEBHOOK_FAILURE_REASONS
#: Statuses retried although they are 4xx: a timeout, too early, throttled, and the endpoint's
#: own trouble (credentials, routing) that an operator fixes: dropping every event while a
#: secret is rotated would lose them all.
RETRIED_4XX = frozenset({401, 403, 404, 408, 425, 429})
#: Longest error text kept.
ERROR_CHARS = 300


#: (prefixes, exact types): a compiled ORCH_WEBHOOK_TYPES.
TypeFilter = tuple[tuple[str, ...], frozenset[str]]


def type_filter(patterns: Sequence[str]) -> TypeFilter:
    """(prefixes, exact types) of ORCH_WEBHOOK_TYPES entries: one ending in "." or ".*" is a
    prefix (orch.incident. and orch.incident.* match every incident event), any other is exact."""
    prefixes: list[str] = []
    exact: set[str] = set()
    for raw in patterns:
        p = raw.strip()
        if not p:
            continue
        if p.endswith(".*"):
            prefixes.append(p[:-1])
        elif p.endswith("."):
            prefixes.append(p)
        else:
            exact.add(p)
    return tuple(prefixes), frozenset(exact)


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether `event_type` passes the filter of ORCH_WEBHOOK_TYPES entries (none: every type)."""
    return passes(type_filter(patterns), event_type)


def passes(compiled: TypeFilter, event_type: str) -> bool:
    """matches() over what type_filter() made of the entries."""
    prefixes, exact = compiled
    if not prefixes and not exact:
        return True
    return event_type in exact or event_type.startswith(prefixes)


def signature(secret: str, body: bytes) -> str:
    """The X-Orch-Signature value of `body`: sha256=<hex HMAC-SHA256 keyed by the secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(envelope: Mapping[str, Any]) -> bytes:
    """The exact bytes posted (and signed): the envelope as compact JSON, keys sorted."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def headers_of(envelope: Mapping[str, Any], body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        "X-Orch-Idempotency-Key": str(envelope["idempotencykey"]),
        "X-Orch-Event-Id": str(envelope["id"]),
        "X-Orch-Sequence": str(envelope["sequence"]),
        "X-Orch-Event-Type": str(envelope["type"]),
    }
    if secret:
        headers["X-Orch-Signature"] = signature(secret, body)
    return headers


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST's outcome: delivered, retry (the same event later) or give up (drop it)."""

    delivered: bool
    retry: bool = False
    #: One of FAILURE_REASONS when it failed.
    reason: str | None = None
    detail: str = ""
    retry_after_s: float | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx surfaces as an HTTPError: retried, never followed with the body dropped


def _opener() -> urllib.request.OpenerDirector:
    # Proxy variables are ignored: the notifier connects to the configured URL itself.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def classify(status: int, retry_after: str | None = None) -> Attempt:
    """The outcome of an HTTP answer with status `status`."""
    if 200 <= status < 300:
        return Attempt(delivered=True)
    detail = f"HTTP {status}"
    if status >= 500:
        return Attempt(False, retry=True, reason="http_5xx", detail=detail, retry_after_s=_retry_after(retry_after))
    if status == 429:
        return Attempt(False, retry=True, reason="http_429", detail=detail, retry_after_s=_retry_after(retry_after))
    if 400 <= status < 500:
        return Attempt(False, retry=status in RETRIED_4XX, reason="http_4xx", detail=detail)
    return Attempt(False, retry=True, reason="http_3xx", detail=detail)


def post(
    opener: urllib.request.OpenerDirector, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
) -> Attempt:
    """POST `body` once and classify the answer (never raises for network trouble)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read(65536)
            return classify(int(response.status))
    except urllib.error.HTTPError as exc:
        with exc:
            answer = classify(int(exc.code), exc.headers.get("Retry-After") if exc.headers else None)
            try:
                text = exc.read(200).decode("utf-8", "replace").strip()
            except OSError:
                text = ""
        if text:
            answer = Attempt(
                answer.delivered, answer.retry, answer.reason, f"{answer.detail}: {text}", answer.retry_after_s
            )
        return answer
    except TimeoutError as exc:
        return Attempt(False, retry=True, reason="timeout", detail=f"timed out after {timeout_s:g}s ({exc})")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return Attempt(False, retry=True, reason="timeout", detail=f"timed out after {timeout_s:g}s")
        return Attempt(False, retry=True, reason="connection", detail=f"connection failed: {reason}")
    except OSError as exc:  # reset by peer, remote closed without an answer, ...
        return Attempt(False, retry=True, reason="connection", detail=f"connection failed: {exc}")


@dataclass
class Step:
    """What one step did."""

    posted: int = 0
    delivered: int = 0
    dropped: int = 0
    #: Events passed over by the filter.
    skipped: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    #: Seconds until the event that failed may be tried again (None: no retry pending).
    retry_in: float | None = None
    #: It stopped at its bound with more waiting.
    full: bool = False


class Notifier:
    """One webhook endpoint's notifier. `start="latest"`: a cursor created now starts after the
    newest event (a webhook added to a running deployment does not replay the retained week);
    "oldest": at the oldest retained one."""

    def __init__(
        self,
        engine: sa.Engine,
        url: str,
        *,
        secret: str | None,
        types: Sequence[str] = (),
        timeout_s: float = 5.0,
        source: str = domain_events.DEFAULT_SOURCE,
        name: str = NAME,
        batch: int = BATCH,
        idle_s: float = IDLE_S,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        start: str = "latest",
        rng: random.Random | None = None,
    ) -> None:
        if start not in ("latest", "oldest"):
            raise ValueError(f"start must be 'latest' or 'oldest', got {start!r}")
        self.engine = engine
        self.url = url
        self.secret = secret
        self.types = tuple(types)
        self._filter = type_filter(self.types)
        self.timeout_s = timeout_s
        self.source = source
        self.name = name
        self.batch = batch
        self.idle_s = idle_s
        self.policy = backoff.RetryPolicy(base_s=backoff_base_s, cap_s=backoff_cap_s, max_attempts=2**31)
        self.start_at = start
        self.rng = rng or random.Random()
        self._opener = _opener()
        self._cursor: int | None = None
        self._streak = 0
        #: Monotonic time before which the pending retry waits.
        self._not_before = 0.0

    @property
    def cursor(self) -> int | None:
        """The last event number handled (None before the first step)."""
        return self._cursor

    def _load(self) -> int:
        if self._cursor is None:
            with self.engine.begin() as conn:
                oldest, newest = events.bounds(conn)
                start = newest if self.start_at == "latest" else (oldest - 1 if oldest is not None else newest)
                row = ledger.ensure_cursor(conn, self.name, start=start)
            self._cursor = int(row["last_seq"])
            self._streak = int(row["consecutive_failures"])
        return self._cursor

    def _envelopes(self, rows: Sequence[sa.RowMapping], after: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(number, envelope) of the events of `rows` after `after`, in order; an envelope of
        None stands for numbers pruned before they were read (a gap ending at that number)."""
        expected = after + 1
        for row in rows:
            first = int(row["seq"]) - int(row.get("n") or 1) + 1
            if first > expected:
                yield first - 1, None
            for env in domain_events.expand(dict(row), after=after, source=self.source):
                yield int(env["sequence"]), env
            expected = int(row["seq"]) + 1

    def run_once(self, stop: threading.Event | None = None) -> Step:
        """Post what waits after the cursor (at most `batch` events, stopping at the first retry),
        then write the cursor and the step's counts."""
        step = Step()
        now = time.monotonic()
        if now < self._not_before:
            step.retry_in = self._not_before - now
            return step
        cursor = start = self._load()
        with self.engine.connect() as conn:
            rows = events.after(conn, cursor, limit=self.batch)
        error: str | None = None
        for seq, env in self._envelopes(rows, cursor):
            if stop is not None and stop.is_set():
                break
            if step.posted >= self.batch:
                step.full = True
                break
            if env is None:
                lost = seq - cursor
                step.dropped += lost
                log.warning("webhook: %d event(s) after %d were pruned before delivery", lost, cursor)
                cursor = seq
                continue
            if not passes(self._filter, str(env["type"])):
                step.skipped += 1
                cursor = seq
                continue
            body = body_of(env)
            attempt = post(self._opener, self.url, body, headers_of(env, body, self.secret), self.timeout_s)
            step.posted += 1
            if attempt.delivered:
                step.delivered += 1
                self._streak = 0
                cursor = seq
                continue
            assert attempt.reason is not None
            step.failures[attempt.reason] += 1
            error = f"event {seq} ({env['type']}): {attempt.detail}"[:ERROR_CHARS]
            if not attempt.retry:
                step.dropped += 1
                self._streak = 0
                log.warning("webhook: gave up on %s: the endpoint refused it", error)
                cursor = seq
                continue
            self._streak += 1
            cap = self.policy.cap_s
            retry_after = None if attempt.retry_after_s is None else min(attempt.retry_after_s, cap)
            delay = backoff.retry_delay(min(self._streak, 64), self.policy, self.rng, retry_after)
            step.retry_in = delay
            self._not_before = time.monotonic() + delay
            log.info("webhook: %s; retry %d in %.2fs", error, self._streak, delay)
            break
        if cursor != start or step.posted or step.dropped:
            with self.engine.begin() as conn:
                ledger.record(
                    conn,
                    self.name,
                    last_seq=cursor,
                    delivered=step.delivered,
                    dropped=step.dropped,
                    failures=step.failures,
                    consecutive_failures=self._streak,
                    error=error,
                    succeeded=step.delivered > 0,
                )
        self._cursor = cursor
        if step.retry_in is None and not (stop is not None and stop.is_set()):
            step.full = step.full or len(rows) >= self.batch  # a whole read: more may wait
        return step

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                step = self.run_once(stop)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("webhook notifier: %s; retrying in 1s", str(exc).splitlines()[0])
                self._cursor = None  # read it again from the ledger
                stop.wait(1.0)
                continue
            except Exception:  # a bug must not end the thread: the backlog shows it waits
                log.exception("webhook notifier step failed; retrying in 5s")
                self._cursor = None
                stop.wait(5.0)
                continue
            if step.retry_in is not None:
                stop.wait(step.retry_in)
            elif not step.full:
                stop.wait(self.idle_s)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a thread of its own until the returned event is set."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="orch-webhook", daemon=True)
        thread.start()
        return thread, stop


def from_settings(engine: sa.Engine, settings: Settings) -> Notifier | None:
    """The notifier ORCH_WEBHOOK_* configure, or None when ORCH_WEBHOOK_URL is unset."""
    if not settings.webhook_url:
        return None
    return Notifier(
        engine,
        settings.webhook_url,
        secret=settings.webhook_secret,
        types=settings.webhook_type_list(),
        timeout_s=settings.webhook_timeout_s,
        source=settings.event_source,
    )
