"""The wheel, installed in a fresh virtual environment with the repository out of reach, is the
whole product: the console (app/ and its pages) and the ledger's SQL files come with it, and
`orch db upgrade` and `orch console` work from it. The wheel is built from exactly the files
the Dockerfile copies, so this is also what the image's `pip install` gets.

The fresh environment gets the dependencies through a .pth line naming the test venv's
site-packages (appended after its own site-packages, and a path line only: the .pth files
there, among them the editable install's finder of orch itself, are not run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, SESSION, Services, stop_process, wait_until

pytestmark = pytest.mark.slow

#: The test venv's site-packages: the fresh environment's dependencies.
TEST_PURELIB = Path(sysconfig.get_paths()["purelib"]).resolve()
_FUNCTION_FILE = re.compile(r"^([a-z_][a-z0-9_]*)\.v[0-9]+\.sql$")

#: Run by the fresh environment's python: where everything was imported from.
PROBE = """
import importlib, importlib.util, json, sys, sysconfig
from importlib import metadata

def where(module):
    try:
        return importlib.import_module(module).__file__
    except Exception as exc:
        return f"cannot import: {exc!r}"

def console_home():
    try:
        from worker.cli import processes
        return str(processes.console_home())
    except Exception as exc:
        return f"failed: {exc!r}"

spec = importlib.util.find_spec("app")
print(json.dumps({
    "purelib": sysconfig.get_paths()["purelib"],
    "sys_path": sys.path,
    "meta_path": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path],
    **{module: where(module) for module in ("worker", "core", "app", "streamlit")},
    "app_locations": list(spec.submodule_search_locations or []) if spec else [],
    "console_home": console_home(),
    "orch_dist": str(metadata.distribution("orch").locate_file("")),
}))
"""

#: Run by the fresh environment's python: the installed console's every page, signed in with
#: the token in argv[1], as a browser session would run them (Streamlit's AppTest).
PAGES_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
from worker.cli.processes import console_home
home = console_home()
out = {}
for page in [None] + sorted(p.name for p in (home.parent / "pages").glob("*.py")):
    at = AppTest.from_file(str(home), default_timeout=60)
    at.session_state["orch_token"] = sys.argv[1]
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}").run()
    out[page or "Home.py"] = {
        "exceptions": [e.value for e in at.exception],
        "sidebar": [m.value for m in at.sidebar.markdown],
    }
print(json.dumps(out))
"""


def dockerfile_sources() -> list[str]:
    """What the Dockerfile's build stage copies from the build context (COPY without --from)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    sources: list[str] = []
    for instruction in "\n".join(lines).replace("\\\n", " ").splitlines():
        words = instruction.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except OSError:
        return None


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _check(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass
class Installed:
    src: Path  # the copy of the build context the wheel was built from
    packages: list[str]  # the directories of it that hold packages
    wheel: Path
    venv: Path
    python: Path
    orch: Path
    work: Path  # the working directory of every command: neither the repo nor the venv
    env: dict[str, str]
    probe: dict[str, Any]

    @property
    def site(self) -> Path:
        return Path(self.probe["purelib"]).resolve()

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        return subprocess.run(args, cwd=self.work, env=env or self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout,
    # and a stale build/lib there could slip removed files into the wheel.
    src = tmp / "src"
    src.mkdir()
    sources = dockerfile_sources()
    assert sources, "the Dockerfile copies nothing"
    packages = []
    for name in sources:
        path = ROOT / name
        assert path.exists(), f"the Dockerfile copies {name}, which is not in the repository"
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            packages.append(name)
        else:
            shutil.copy2(path, src / name)
    build_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = tmp / "dist"
    # Build isolation fetches setuptools>=68 (pyproject's build requirement) for the build;
    # the test venv's own setuptools is older, so --no-build-isolation would not build what
    # the image builds. A path with a slash: pip takes a bare word for a package name.
    _check(
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(src)],
            cwd=tmp,
            env=build_env,
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "pip wheel",
    )
    (wheel,) = dist.glob("orch-*.whl")
    # A venv without pip (3 s faster); the test venv's pip installs into it (--python). The
    # wheel goes in before the .pth below: with the test venv visible, pip would find the
    # editable orch there "already installed".
    venv = tmp / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120), "venv")
    python = venv / "bin" / "python"
    _check(
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
            cwd=tmp,
            env=build_env,
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "pip install",
    )
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ORCH_", "VIRTUAL_ENV"))}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    fresh_purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    (Path(fresh_purelib) / "orch-test-dependencies.pth").write_text(f"{TEST_PURELIB}\n", encoding="utf-8")
    probe = _check(
        subprocess.run([str(python), "-c", PROBE], cwd=work, env=env, capture_output=True, text=True, timeout=120),
        "the import probe",
    )
    return Installed(
        src=src,
        packages=packages,
        wheel=wheel,
        venv=venv,
        python=python,
        orch=venv / "bin" / "orch",
        work=work,
        env=env,
        probe=json.loads(probe.stdout),
    )


@pytest.fixture(scope="module")
def ledger_url(services: Services) -> Iterator[str]:
    """A fresh, empty database of this module's own."""
    name = f"orch_wheel_{SESSION}"
    with psycopg.connect(_libpq(services.admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(services.admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(services.admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def upgrade(installed: Installed, ledger_url: str) -> subprocess.CompletedProcess[str]:
    """`orch db upgrade` of the fresh environment, once, on the fresh database."""
    return installed.run([str(installed.orch), "db", "upgrade"], dict(installed.env, ORCH_DATABASE_URL=ledger_url))


def test_the_installed_package_is_imported_not_the_checkout(installed: Installed) -> None:
    p, site = installed.probe, installed.site
    assert site.is_relative_to(installed.venv.resolve())
    for module in ("worker", "core", "app"):
        assert Path(p[module]).is_absolute(), f"{module}: {p[module]}"
        where = Path(p[module]).resolve()
        assert where.is_relative_to(site), f"{module} imported from {where}, not the wheel in {site}"
        assert not where.is_relative_to(ROOT), f"{module} imported from the checkout: {where}"
    assert [Path(x).resolve() for x in p["app_locations"]] == [site / "app"]
    assert Path(p["orch_dist"]).resolve() == site, "importlib.metadata finds another orch first"
    resolved = [Path(x or installed.work).resolve() for x in p["sys_path"]]
    assert ROOT not in resolved, p["sys_path"]
    # The dependencies come from the test venv, after the fresh venv's own site-packages; the
    # editable install's finder (run by a .pth there) is not installed.
    assert resolved.index(site) < resolved.index(TEST_PURELIB)
    assert Path(p["streamlit"]).is_absolute(), p["streamlit"]
    assert Path(p["streamlit"]).resolve().is_relative_to(TEST_PURELIB)
    assert not [f for f in p["meta_path"] if "editable" in f.lower()], p["meta_path"]


def test_console_home_is_the_installed_app_with_its_pages(installed: Installed) -> None:
    # Without app* in the wheel's packages this is where the console dies: console_home()
    # raises "the console is not installed".
    home = installed.probe["console_home"]
    assert home == str(installed.site / "app" / "Home.py")
    home = Path(home)
    pages = sorted(p.name for p in (home.parent / "pages").glob("*.py"))
    assert pages == sorted(p.name for p in (ROOT / "app" / "pages").glob("*.py"))
    assert pages, "no console pages installed"


def test_the_wheel_holds_every_file_of_the_packages(installed: Installed) -> None:
    """Package data included: every file of core, worker, dashboards and app (SQL statements
    and functions, migrations, console pages) is installed."""
    missing = []
    for package in installed.packages:
        for path in sorted((installed.src / package).rglob("*")):
            rel = path.relative_to(installed.src)
            if path.is_file() and not (installed.site / rel).is_file():
                missing.append(str(rel))
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    assert list((installed.site / "core" / "ledger" / "sql" / "statements").glob("*.sql"))
    assert list((installed.site / "core" / "ledger" / "sql" / "functions").glob("*.sql"))


def test_db_upgrade_from_the_wheel_builds_a_fresh_ledger(
    installed: Installed, ledger_url: str, upgrade: subprocess.CompletedProcess[str]
) -> None:
    _check(upgrade, "orch db upgrade")
    assert "ledger at revision" in upgrade.stdout
    functions = {
        m.group(1)
        for f in (installed.site / "core" / "ledger" / "sql" / "functions").iterdir()
        if (m := _FUNCTION_FILE.match(f.name))
    }
    with psycopg.connect(_libpq(ledger_url)) as conn:
        installed_functions = {
            r[0] for r in conn.execute("SELECT proname FROM pg_proc WHERE proname = ANY(%s)", [list(functions)])
        }
    assert installed_functions == functions
    again = _check(
        installed.run([str(installed.orch), "db", "upgrade"], dict(installed.env, ORCH_DATABASE_URL=ledger_url)),
        "a second orch db upgrade",
    )
    assert "ledger at revision" in again.stdout


def test_orch_console_from_the_wheel_serves_the_app(
    installed: Installed, ledger_url: str, upgrade: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    _check(upgrade, "orch db upgrade")
    port = _free_port()
    env = dict(installed.env, ORCH_DATABASE_URL=ledger_url, ORCH_CONSOLE_PORT=str(port))
    log = tmp_path / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(installed.orch), "console"], cwd=installed.work, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or _get(f"http://127.0.0.1:{port}/_stcore/health") == (200, b"ok"),
            timeout=60,
            interval=0.2,
            what="the console of the wheel to answer /_stcore/health",
        )
        assert proc.poll() is None, f"orch console exited {proc.returncode}:\n{log.read_text(errors='replace')}"
        page = _get(f"http://127.0.0.1:{port}/")
        assert page is not None and page[0] == 200, page
    finally:
        code = stop_process(proc)
    text = log.read_text(errors="replace")
    assert f"console: http://127.0.0.1:{port}" in text
    assert "Traceback" not in text, text
    assert code == 0, text


def test_every_console_page_of_the_wheel_runs_signed_in(
    installed: Installed, ledger_url: str, upgrade: subprocess.CompletedProcess[str]
) -> None:
    _check(upgrade, "orch db upgrade")
    env = dict(installed.env, ORCH_DATABASE_URL=ledger_url)
    created = _check(
        installed.run(
            [str(installed.orch), "tokens", "create", "--subject", "wheel-test", "--scopes", "orch:read", "--json"], env
        ),
        "orch tokens create",
    )
    token = json.loads(created.stdout)["token"]
    ran = _check(
        installed.run([str(installed.python), "-c", PAGES_SCRIPT, token], env, timeout=180), "the console pages"
    )
    pages = json.loads(ran.stdout.strip().splitlines()[-1])
    assert len(pages) == 1 + len(list((installed.site / "app" / "pages").glob("*.py")))
    for page, result in pages.items():
        assert not result["exceptions"], (page, result["exceptions"])
        assert any("wheel-test" in m for m in result["sidebar"]), (page, result["sidebar"])
