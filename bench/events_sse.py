"""The SSE side of bench/events.py: an `orch api` process on the scratch database, an API
token, and a Server-Sent Events client in a thread that records every event's sequence
number (and, for `orch.job.succeeded`, its arrival time and envelope time), resuming with
Last-Event-ID after every `reconnect_every` events, as a reader that drops its connection
would."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUCCEEDED = b"orch.job.succeeded"


def make_token(engine: Any) -> str:
    """An API token with every scope and no tenant limit (the stream's whole content)."""
    from core import control
    from core.domain.auth import ALL_SCOPES, local_principal

    return control.create_token(
        engine, local_principal("bench"), subject="bench-events", scopes=ALL_SCOPES, tenants=None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def api_process(timeout_s: float = 60.0) -> Iterator[tuple[str, int]]:
    """`orch api` (worker.api.server.ApiServer under uvicorn, as deployed: a process of its
    own) on 127.0.0.1 and a free port, against the database of this process's environment
    (throughput.use_ledger). Yields (base URL, pid); stopped on exit, also on Ctrl-C."""
    import httpx

    from bench.throughput import _parent_death_signal

    port = _free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="orch-bench-api-"))
    log = log_dir / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal(),
        )
    url = f"http://127.0.0.1:{port}"
    ok = False
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"orch api exited with code {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/.well-known/openapi", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"orch api did not answer within {timeout_s:.0f}s; see {log}")
        yield url, proc.pid
        ok = proc.poll() is None
        if not ok:
            print(f"warning: orch api exited early (code {proc.returncode}); see {log}", file=sys.stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if ok:
            shutil.rmtree(log_dir, ignore_errors=True)


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


class Client(threading.Thread):
    """One SSE reader of GET /v1/events. `after` is the first connection's ?after= (None: no
    cursor, from the oldest retained event); every later connection sends Last-Event-ID with
    the last complete event it processed. With `reconnect_every` K, it drops the connection
    after K events (the rest of what it had received is discarded, as a reader that dies
    mid-chunk loses it) and reconnects, at most `max_reconnects` times."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        after: str | None = None,
        reconnect_every: int = 0,
        max_reconnects: int = 0,
        lags: bool = False,
    ) -> None:
        super().__init__(name="bench-sse", daemon=True)
        self.url = f"{base_url}/v1/events"
        self.token = token
        self.after = after
        self.reconnect_every = reconnect_every
        self.max_reconnects = max_reconnects
        self.want_lags = lags
        self.seqs: list[int] = []
        #: (sequence, arrival wall time, envelope time) of each orch.job.succeeded event, in
        #: seconds.
        self.lags: list[tuple[int, float, float]] = []
        self.reconnects = 0  # planned: after reconnect_every events
        self.dropped = 0  # unplanned: the stream ended or failed
        self.lost: list[dict[str, Any]] = []
        self.last: int | None = None
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.cpu_s = 0.0
        self.error: str | None = None
        self._sock: socket.socket | None = None

    # -- control, from the bench's main thread ------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading: shut the current connection's socket down (that wakes a blocked
        read), and wait for the thread."""
        self.stopping.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Until the last event processed is `seq` (or later); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.last is not None and self.last >= seq:
                return True
            if not self.is_alive():
                return False
            time.sleep(0.05)
        return self.last is not None and self.last >= seq

    # -- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        import httpx

        t0 = time.thread_time()
        client = httpx.Client(timeout=httpx.Timeout(10.0, read=60.0))
        try:
            while not self.stopping.is_set():
                try:
                    planned = self._connection(client)
                except httpx.HTTPError as exc:
                    if self.stopping.is_set():
                        break
                    self.dropped += 1
                    self.error = f"{type(exc).__name__}: {exc}"
                    time.sleep(0.2)
                    continue
                if self.stopping.is_set():
                    break
                if planned:
                    self.reconnects += 1
                else:
                    self.dropped += 1
                    time.sleep(0.2)
        finally:
            client.close()
            self.cpu_s = time.thread_time() - t0

    def _connection(self, client: Any) -> bool:
        """One connection, until the stream ends (False) or K events were processed (True)."""
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"}
        params = {}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        elif self.after is not None:
            params["after"] = self.after
        budget = self.reconnect_every if self.reconnects < self.max_reconnects else 0
        with client.stream("GET", self.url, headers=headers, params=params) as response:
            if response.status_code != 200:
                raise SystemExit(f"GET /v1/events answered {response.status_code}: {response.read()[:300]!r}")
            stream = response.extensions.get("network_stream")
            self._sock = stream.get_extra_info("socket") if stream is not None else None
            self.connected.set()
            if self.stopping.is_set():
                return False
            buf = b""
            taken = 0
            for chunk in response.iter_raw():
                arrived = time.time()
                buf += chunk
                *frames, buf = buf.split(b"\n\n")
                for frame in frames:
                    if not frame.startswith(b"id: "):
                        continue  # the retry field, a keep-alive comment
                    if self._frame(frame, arrived):
                        taken += 1
                        if budget and taken >= budget:
                            return True
                if self.stopping.is_set():
                    return False
        return False

    def _frame(self, frame: bytes, arrived: float) -> bool:
        lines = frame.split(b"\n", 2)
        seq = int(lines[0][4:])
        event = lines[1][7:] if len(lines) > 1 and lines[1].startswith(b"event: ") else b""
        if event == b"orch.stream.events_lost":
            self.lost.append(json.loads(lines[2][6:]))
            self.last = seq
            return False
        self.seqs.append(seq)
        self.last = seq
        if self.want_lags and event == SUCCEEDED:
            data = json.loads(lines[2][6:])
            self.lags.append((seq, arrived, _parse_time(data["time"])))
        return True


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]
