"""`orch console` serves the app on 127.0.0.1 against the configured ledger."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, start_orch, stop_process, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


def test_orch_console_serves_the_app(services: Any, tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, ORCH_DATABASE_URL=services.database_url, ORCH_CONSOLE_PORT=str(port))
    log = tmp_path / "console.log"
    proc = start_orch(["console"], env, log)
    try:
        wait_until(lambda: _health(port), timeout=60, what="the console to answer on ORCH_CONSOLE_PORT")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        code = stop_process(proc)
    assert f"console: http://127.0.0.1:{port}" in log.read_text()
    assert code == 0, log.read_text()


def test_orch_console_refuses_a_bad_port(services: Any) -> None:
    env = dict(os.environ, ORCH_DATABASE_URL=services.database_url)
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "console", "--port", "70000"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "between 1 and 65535" in out.stderr
