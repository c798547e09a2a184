"""Screenshot of the console's run view (docs/img/run-view.png), from a real console.

Creates a scratch ledger (database orch_shot on the local PostgreSQL), plays a small nightly
run through it as a worker would (claims, a retry, an upstream 429, one job failing for good,
so the run fails with its downstream upstream-failed and a one_failed notifier run), starts
the console with `orch console`'s command line (worker.cli.processes.console_command) signed
in with an admin token, opens /Runs?run=N in headless Chromium (Playwright, driving the
system's `chromium`) and saves the page. Stops the console and drops the database after.

    .venv/bin/python scripts/screenshot_run_view.py [--out docs/img/run-view.png] [--port 8765] [--keep]

Needs: the local PostgreSQL (ORCH_SHOT_ADMIN_URL, default postgres@127.0.0.1:5432), the
Debian package chromium, and Playwright in the venv (pip install playwright; no browser
download: the system chromium is used)."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import control  # noqa: E402
from core.domain.auth import Scope, local_principal  # noqa: E402
from core.ledger import db  # noqa: E402
from core.ledger import jobs as ledger_jobs  # noqa: E402
from worker.cli import processes  # noqa: E402
from worker.runtime import pool  # noqa: E402

DBNAME = "orch_shot"
TENANT = "acme"
WORKER = "shot-worker"
#: At most this many bytes of PNG (quantised further when over).
MAX_BYTES = 400_000

J = control.JobSpec
#: key -> (after, seconds it runs, what happens on its first attempt).
PLAN: dict[str, tuple[list[str], float, str]] = {
    "fetch-nvd": ([], 1.6, "ok"),
    "fetch-osv": ([], 0.9, "ok"),
    "fetch-ghsa": ([], 1.2, "throttle"),  # an upstream 429: waits, then runs again
    "parse-nvd": (["fetch-nvd"], 1.0, "retry"),  # fails once, retried after a back-off
    "parse-osv": (["fetch-osv"], 0.7, "fail"),  # fails for good
    "parse-ghsa": (["fetch-ghsa"], 0.8, "ok"),
    "archive-raw": (["fetch-nvd", "fetch-osv", "fetch-ghsa"], 1.4, "ok"),
    "merge": (["parse-nvd", "parse-osv", "parse-ghsa"], 1.0, "ok"),
    "score": (["merge"], 1.0, "ok"),
    "publish": (["score"], 0.5, "ok"),
    "notify-failure": (["merge"], 0.4, "ok"),
}
RULES = {"notify-failure": "one_failed", "archive-raw": "all_done"}


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def scratch_ledger(admin_url: str) -> str:
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DBNAME}"')
    return sa.make_url(admin_url).set(database=DBNAME).render_as_string(hide_password=False)


def drop_ledger(admin_url: str) -> None:
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')


def play(engine: sa.Engine, name: str, plan: dict[str, tuple[list[str], float, str]]) -> int:
    """Submit the run and work it like a pool of workers would, until nothing is left to do."""
    admin = local_principal("screenshot")
    specs = [
        J(
            TENANT,
            "noop",
            payload={"feed": key.split("-")[-1]},
            key=key,
            after=after,
            trigger_rule=RULES.get(key, "all_success"),
        )
        for key, (after, _, _) in plan.items()
    ]
    run = control.submit_run(engine, admin, control.RunSpec(TENANT, name, jobs=specs), control.NoDoorbell())
    key_of = {v: k for k, v in run.jobs.items()}
    started: dict[int, tuple[float, uuid.UUID, int]] = {}  # job id -> (when, lease, attempt)
    first_done: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.begin() as conn:
            ledger_jobs.release_due_jobs(conn, limit=100, actor=WORKER)
            for r in ledger_jobs.claim_and_start_jobs(
                conn, queue="default", limit=100, owner=WORKER, job_types=["noop"]
            ):
                started[int(r["id"])] = (time.monotonic(), r["lease_id"], int(r["attempt"]))
        for job_id, (at, lease, _attempt) in list(started.items()):
            key = key_of[job_id]
            _, seconds, first = plan[key]
            if time.monotonic() - at < seconds:
                continue
            outcome = first if key not in first_done else "ok"
            first_done.add(key)
            with engine.begin() as conn:
                if outcome == "throttle":
                    ledger_jobs.throttle_jobs(
                        conn, [job_id], [lease], [1.5], ["HTTP 429 Too Many Requests"], actor=WORKER
                    )
                elif outcome == "retry":
                    ledger_jobs.fail_retryable_jobs(
                        conn, [job_id], [lease], [1.2], ["http_5xx"], ["HTTP 502 Bad Gateway"], actor=WORKER
                    )
                elif outcome == "fail":
                    ledger_jobs.fail_final_jobs(
                        conn,
                        [job_id],
                        [lease],
                        ["schema_mismatch"],
                        ["schema mismatch: field 'cvss' missing in osv export"],
                        ["not retryable"],
                        actor=WORKER,
                    )
                else:
                    ledger_jobs.succeed_jobs(conn, [job_id], [lease], actor=WORKER)
            del started[job_id]
        with engine.connect() as conn:
            state = conn.execute(sa.text("SELECT state FROM runs WHERE id = :id"), {"id": run.run_id}).scalar_one()
        if state != "running":
            break
        time.sleep(0.1)
    return run.run_id


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def shoot(url: str, out: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": 1200}, device_scale_factor=1)
        page.goto(url, wait_until="networkidle")
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
        # Streamlit scrolls inside its main block: grow the window to the content, then shoot.
        height = page.evaluate(
            "Math.max(...[...document.querySelectorAll('[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight))"
        )
        page.set_viewport_size({"width": width, "height": int(height) + 80})
        page.wait_for_timeout(2500)  # plotly redraws at the new size
        png = page.screenshot(full_page=True)
        browser.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_small(png))


def _small(png: bytes) -> bytes:
    """The screenshot without the blank space under the page's content, as a palette PNG when
    that is needed to stay under MAX_BYTES."""
    from PIL import Image, ImageChops

    image = Image.open(io.BytesIO(png)).convert("RGB")
    main = image.crop((image.width // 3, 0, image.width, image.height))  # right of the sidebar
    box = ImageChops.difference(main, Image.new("RGB", main.size, "white")).getbbox()
    if box is not None:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + 48)))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    if buf.tell() <= MAX_BYTES:
        return buf.getvalue()
    for colours in (256, 128, 64):
        buf = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "run-view.png")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    admin_url = os.environ.get("ORCH_SHOT_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    url = scratch_ledger(admin_url)
    engine = db.create_engine(url, application_name="orch-screenshot")
    console: subprocess.Popen[bytes] | None = None
    try:
        db.upgrade(engine)
        handlers = pool.load_handlers([])
        control.register_job_types(engine, [h.job_type_row() for h in handlers.values()])
        play(engine, "hourly-sync", {"pull": ([], 0.3, "ok"), "index": (["pull"], 0.3, "ok")})
        run_id = play(engine, "nightly-advisories", PLAN)
        token = control.create_token(
            engine, local_principal("screenshot"), subject="admin", scopes=frozenset(Scope), tenants=None
        )
        command, env = processes.console_command(url, args.port, token=token)
        console = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: healthy(args.port), 60, "the console")
        shoot(f"http://127.0.0.1:{args.port}/Runs?run={run_id}", args.out, args.width)
        print(f"{args.out}: {args.out.stat().st_size} bytes, run {run_id}")
    finally:
        if console is not None:
            console.terminate()
            try:
                console.wait(15)
            except subprocess.TimeoutExpired:
                console.kill()
                console.wait(5)
        engine.dispose()
        if not args.keep:
            drop_ledger(admin_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
