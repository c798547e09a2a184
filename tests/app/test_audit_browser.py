"""The Audit page in a real browser: `orch console`'s command line (worker.cli.processes.
console_command) against the test session's scratch ledger, signed in with a token, driven by
headless Chromium through Playwright (the system's `chromium`, no browser download), as
scripts/screenshot_run_view.py drives it. The page renders with no exception box; a bundle is
exported with the key in ORCH_SIGNING_KEY and downloaded, then uploaded with its public key
and verified. Skipped where Playwright or chromium is missing."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.domain import bundle
from core.domain.auth import Scope
from tests.app.conftest import TENANT_A, Seeded
from tests.conftest import ROOT, stop_process, tail, wait_until
from worker.cli import processes

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")

EXCEPTION = '[data-testid="stException"]'
TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def served(services: Any, seeded: Seeded, make_token: Callable[..., str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The console on a free port, signed in as an exporter, ORCH_SIGNING_KEY a key file;
    yields its URL and the public key's path."""
    key_path, pub_path, _ = bundle.write_key_pair(tmp_path / "keys")
    token = make_token("exporter", {Scope.READ, Scope.EXPORT})
    port = _free_port()
    command, env = processes.console_command(services.database_url, port, token=token)
    env["ORCH_SIGNING_KEY"] = str(key_path)
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(port), timeout=60, what="the console to answer")
        yield f"http://127.0.0.1:{port}", pub_path
    finally:
        stop_process(proc, timeout=15)
        print(tail(log, 40))


def _no_exception(page: Any) -> None:
    boxes = page.locator(EXCEPTION)
    assert boxes.count() == 0, boxes.all_inner_texts()


def test_the_audit_page_exports_and_verifies_a_bundle_in_a_browser(served: tuple[str, Path], tmp_path: Path) -> None:
    url, pub_path = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/Audit", wait_until="networkidle")
            page.get_by_text("Audit chain intact").wait_for()
            page.get_by_text("Audit bundles", exact=True).wait_for()
            _no_exception(page)

            # Export: the tenant defaults to the first one the principal may see.
            page.get_by_text("Export a bundle of a tenant's history").click()
            page.get_by_text("ORCH_SIGNING_KEY on the console's server").wait_for()
            export = page.get_by_role("button", name="Export bundle", exact=True)
            export.click()
            page.get_by_text(f"Bundle of {TENANT_A} written").wait_for()
            _no_exception(page)
            shown = page.locator('[data-testid="stMarkdownContainer"]', has_text="sha256 ").first.inner_text()
            sha256 = shown.split()[-1]
            with page.expect_download() as download:
                page.get_by_role("button", name="Download bundle").click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name.startswith(f"{TENANT_A}-") and saved.name.endswith(".tar.gz")
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256

            # Verify the downloaded bundle with the public key, through the page's uploaders.
            page.get_by_text("Verify a bundle", exact=True).click()
            uploaders = page.locator('[data-testid="stFileUploader"]')
            for i, path in enumerate((saved, pub_path)):
                uploaders.nth(i).locator('input[type="file"]').set_input_files(str(path))
                uploaders.nth(i).locator('[data-testid="stFileChip"]').wait_for()
            verify = page.get_by_role("button", name="Verify bundle", exact=True)
            page.wait_for_function(
                "() => [...document.querySelectorAll('button')].some("
                "b => b.innerText.trim() === 'Verify bundle' && !b.disabled)"
            )
            verify.click()
            page.get_by_text(f"Bundle {saved.name} verified: every step passed").wait_for()
            _no_exception(page)
        finally:
            # What the page showed last (kept in the test's tmp_path), then close.
            page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)
            browser.close()
