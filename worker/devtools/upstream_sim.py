"""A real HTTP upstream that throttles, fails, stalls and changes shape on demand, steered at
run time through /_sim endpoints, so flow control (adaptive buckets, circuits) meets a real peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_FEED = "default"
DEFAULT_PORT = 8599
MAX_CONTROL_BODY = 64 * 1024
COUNTERS = ("ok", "throttled", "errors", "drift")


class ConfigError(ValueError):
    """A feed configuration with an unknown field or a value out of range."""


@dataclass(frozen=True)
class FeedConfig:
    """How one simulated feed behaves. `burst` None means one second's worth of `rate_limit`."""

    rate_limit: float | None = None
    burst: float | None = None
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    error_burst: int = 0
    error_status: int = 503
    latency_s: float = 0.0
    drift: bool = False
    items: int = 3

    def __post_init__(self) -> None:
        if self.rate_limit is not None and not (_finite(self.rate_limit) and self.rate_limit > 0):
            raise ConfigError(f"rate_limit must be > 0 or null, got {self.rate_limit!r}")
        if self.burst is not None and not (_finite(self.burst) and self.burst >= 1):
            raise ConfigError(f"burst must be >= 1 or null, got {self.burst!r}")
        if not (_finite(self.retry_after_s) and self.retry_after_s >= 0):
            raise ConfigError(f"retry_after_s must be >= 0, got {self.retry_after_s!r}")
        if not (_finite(self.error_rate) and 0 <= self.error_rate <= 1):
            raise ConfigError(f"error_rate must be within [0, 1], got {self.error_rate!r}")
        if self.error_burst < 0:
            raise ConfigError(f"error_burst must be >= 0, got {self.error_burst!r}")
        if not 500 <= self.error_status <= 599:
            raise ConfigError(f"error_status must be a 5xx status, got {self.error_status!r}")
        if not (_finite(self.latency_s) and self.latency_s >= 0):
            raise ConfigError(f"latency_s must be >= 0, got {self.latency_s!r}")
        if self.items < 0:
            raise ConfigError(f"items must be >= 0, got {self.items!r}")

    @property
    def capacity(self) -> float:
        """The bucket's capacity: `burst`, or one second's worth of `rate_limit` (at least 1)."""
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, self.rate_limit or 1.0)

    def updated(self, fields: Mapping[str, Any]) -> FeedConfig:
        """A copy with `fields` applied. Raises ConfigError for unknown fields or bad values."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        checked = {name: _check_type(name, value) for name, value in fields.items()}
        return dataclasses.replace(self, **checked)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_OPTIONAL_FLOAT = {"rate_limit", "burst"}
_FLOAT = {"retry_after_s", "error_rate", "latency_s"}
_INT = {"error_burst", "error_status", "items"}
_BOOL = {"drift"}


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_type(name: str, value: Any) -> Any:
    """Reject JSON values of the wrong type (a bool is not a number here)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in _OPTIONAL_FLOAT and (value is None or is_number):
        return None if value is None else float(value)
    if name in _FLOAT and is_number:
        return float(value)
    if name in _INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    if name in _BOOL and isinstance(value, bool):
        return value
    raise ConfigError(f"{name} has the wrong type: got {type(value).__name__} {value!r}")


def demo_feeds() -> dict[str, FeedConfig]:
    """The feeds served by `main` when no --config is given."""
    return {
        DEFAULT_FEED: FeedConfig(),
        "throttled": FeedConfig(rate_limit=5.0, retry_after_s=1.0),
        "flaky": FeedConfig(error_rate=0.3),
        "slow": FeedConfig(latency_s=5.0),
        "drifting": FeedConfig(drift=True),
    }


def load_config(path: Path) -> dict[str, FeedConfig]:
    """Feeds from a JSON object name -> FeedConfig fields. Raises ConfigError, OSError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of feed name -> fields, got {type(raw).__name__}")
    feeds: dict[str, FeedConfig] = {}
    for name, fields in raw.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: feed {name!r} must be an object of fields, got {type(fields).__name__}")
        try:
            feeds[name] = FeedConfig().updated(fields)
        except ConfigError as exc:
            raise ConfigError(f"{path}: feed {name!r}: {exc}") from exc
    return feeds


def format_seconds(value: float) -> str:
    """Retry-After as a plain number: 1.0 -> "1", 0.5 -> "0.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class _FeedState:
    config: FeedConfig
    tokens: float
    refilled_at: float
    counts: dict[str, int]

    @classmethod
    def fresh(cls, config: FeedConfig) -> _FeedState:
        return cls(config, config.capacity, time.monotonic(), dict.fromkeys(COUNTERS, 0))

    def take_token(self, now: float) -> bool:
        rate = self.config.rate_limit
        if rate is None:
            return True
        capacity = self.config.capacity
        self.tokens = min(capacity, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class UpstreamSim:
    """The simulator: one ThreadingHTTPServer, feed configs and their state under one lock."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, feeds: Mapping[str, FeedConfig] | None = None) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._feeds: dict[str, _FeedState] = {}
        for name, config in {DEFAULT_FEED: FeedConfig(), **(feeds or {})}.items():
            self._feeds[name] = _FeedState.fresh(config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> UpstreamSim:
        """Bind and serve in a daemon thread. Raises OSError when the port is taken."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sim = self
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"upstream-sim:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still sleeping out their latency are woken and dropped."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> UpstreamSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # -- control ---------------------------------------------------------------------------

    def configure(self, name: str, **fields: Any) -> FeedConfig:
        """Update feed `name` (created from defaults if new) and reset its bucket and counts.
        Raises ConfigError for an unknown field or a bad value."""
        if not name or "/" in name:
            raise ConfigError(f"feed name must be non-empty without '/', got {name!r}")
        with self._lock:
            current = self._feeds.get(name)
            config = (current.config if current else FeedConfig()).updated(fields)
            self._feeds[name] = _FeedState.fresh(config)
            return config

    def feeds(self) -> dict[str, FeedConfig]:
        with self._lock:
            return {name: state.config for name, state in self._feeds.items()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Per feed: ok (200 with the normal body), drift (200 with the drifted body),
        throttled (429) and errors (5xx)."""
        with self._lock:
            return {name: dict(state.counts) for name, state in self._feeds.items()}

    def reset(self) -> None:
        """Zero all counts (configs and buckets stay)."""
        with self._lock:
            for state in self._feeds.values():
                state.counts = dict.fromkeys(COUNTERS, 0)

    # -- serving ---------------------------------------------------------------------------

    def resolve(self, path: str, host_header: str | None) -> str:
        """The feed a request is for: /feeds/<name>/..., else the Host (exact, then its first
        label, so throttled.localhost works), else `default`."""
        parts = [p for p in path.split("/") if p]
        candidates: list[str] = []
        if len(parts) >= 2 and parts[0] == "feeds":
            candidates.append(parts[1])
        elif host_header:
            host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
            host = host.strip("[]").lower()
            candidates += [host, host.split(".", 1)[0]]
        with self._lock:
            return next((c for c in candidates if c in self._feeds), DEFAULT_FEED)

    def answer(self, name: str, page: int) -> _Answer:
        """One feed request: latency, then the hidden limit, then injected errors, then the body."""
        with self._lock:
            latency = self._feeds[name].config.latency_s
        if latency > 0 and self._stopping.wait(latency):
            return _Answer(503, {"error": "simulator stopping"})
        with self._lock:
            state = self._feeds[name]
            config = state.config
            if not state.take_token(time.monotonic()):
                state.counts["throttled"] += 1
                retry_after = (("Retry-After", format_seconds(config.retry_after_s)),)
                return _Answer(429, {"error": "rate limited"}, retry_after)
            if config.error_burst > 0:
                state.config = dataclasses.replace(config, error_burst=config.error_burst - 1)
                state.counts["errors"] += 1
                return _Answer(config.error_status, {"error": "injected error burst"})
            if config.error_rate > 0 and random.random() < config.error_rate:
                state.counts["errors"] += 1
                return _Answer(config.error_status, {"error": "injected error"})
            state.counts["drift" if config.drift else "ok"] += 1
        items = [{"id": f"{name}-{page}-{i}", "value": page * 1000 + i} for i in range(config.items)]
        return _Answer(200, {"feed": name, "page": page, "entries" if config.drift else "items": items})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    sim: UpstreamSim

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is the point of the latency knob, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "upstream-sim/1"
    timeout = 60  # idle keep-alive connections give their thread back
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would stall keep-alive
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the default writes a stderr line per request."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        body = self._read_body()
        if body is None:
            return
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        if parts[:1] == ["_sim"]:
            self._control(method, parts[1:], body)
            return
        if method != "GET":
            self._send(_Answer(405, {"error": f"{method} not allowed on feeds; use GET"}))
            return
        page_values = parse_qs(split.query).get("page", ["1"])
        try:
            page = int(page_values[-1])
        except ValueError:
            page = 0
        if page < 1:
            self._send(_Answer(400, {"error": f"page must be a positive integer, got {page_values[-1]!r}"}))
            return
        self._send(sim.answer(sim.resolve(split.path, self.headers.get("Host")), page))

    def _control(self, method: str, parts: list[str], body: bytes) -> None:
        sim = self.server.sim
        if method == "GET" and parts == ["feeds"]:
            self._send(_Answer(200, {n: c.to_json() for n, c in sim.feeds().items()}))
        elif method == "GET" and parts == ["stats"]:
            self._send(_Answer(200, dict(sim.stats())))
        elif method == "POST" and parts == ["reset"]:
            sim.reset()
            self._send(_Answer(200, {"reset": True}))
        elif method == "PUT" and len(parts) == 2 and parts[0] == "feeds":
            try:
                fields = json.loads(body or b"{}")
                if not isinstance(fields, dict):
                    raise ConfigError(f"expected a JSON object of FeedConfig fields, got {type(fields).__name__}")
                config = sim.configure(parts[1], **fields)
            except (ValueError, TypeError) as exc:  # JSONDecodeError and ConfigError are ValueErrors
                self._send(_Answer(400, {"error": str(exc)}))
                return
            self._send(_Answer(200, {parts[1]: config.to_json()}))
        else:
            self._send(_Answer(404, {"error": f"no control endpoint {method} /_sim/{'/'.join(parts)}"}))

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_CONTROL_BODY:
            self.close_connection = True
            self._send(_Answer(400, {"error": f"bad Content-Length (at most {MAX_CONTROL_BODY} bytes)"}))
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, answer: _Answer) -> None:
        data = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in answer.headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until SIGINT/SIGTERM; 0 on a clean stop, 2 on a bad config or port."""
    parser = argparse.ArgumentParser(prog="orch upstream-sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--config", type=Path, help="JSON object: feed name -> FeedConfig fields")
    args = parser.parse_args(argv)
    try:
        feeds = load_config(args.config) if args.config else demo_feeds()
        sim = UpstreamSim(args.host, args.port, feeds).start()
    except (ConfigError, OSError) as exc:
        print(f"upstream-sim: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"upstream-sim listening on {sim.url} (feeds: {', '.join(sim.feeds())})", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
