"""`orch console` serves the app on 127.0.0.1 against the configured ledger, as a product: with
Streamlit's toolbar in its minimal mode (no Deploy button, no developer menu)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from streamlit import config as streamlit_config

from tests.conftest import ROOT, start_orch, stop_process, wait_until
from worker.cli import processes

TOOLBAR = "--client.toolbarMode=minimal"


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
        # The Streamlit server `orch console` started runs with the minimal toolbar.
        (server,) = [c for c in psutil.Process(proc.pid).children(recursive=True) if "streamlit" in c.cmdline()]
        assert TOOLBAR in server.cmdline()
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


def test_the_console_command_hides_the_deploy_button(services: Any) -> None:
    """`orch console` and `orch up` both launch processes.console_command: its toolbar mode is
    minimal (Deploy, Rerun and the developer menu hidden), and every option it passes is one
    Streamlit knows with a value it allows (a misspelt option would be ignored silently)."""
    command, env = processes.console_command(services.database_url, 8599, token="orch_token")
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("Home.py")
    assert TOOLBAR in command
    options = dict(arg[2:].split("=", 1) for arg in command[5:])
    assert options["client.toolbarMode"] == "minimal"
    assert options["server.port"] == "8599" and options["server.address"] == "127.0.0.1"
    known = streamlit_config.get_config_options()
    for name, value in options.items():
        assert name in known, f"Streamlit has no option {name}"
        if name == "client.toolbarMode":
            assert value in ("auto", "developer", "viewer", "minimal")
    # The sign-in token reaches the console's environment, never its command line.
    assert env["ORCH_CONSOLE_TOKEN"] == "orch_token" and "orch_token" not in " ".join(command)
