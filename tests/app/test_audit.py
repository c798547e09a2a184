"""Audit page: the log with filters, per tenant, the verification of the hash chain, and audit
bundles: export (key from ORCH_SIGNING_KEY or an upload), verify an uploaded bundle step by step."""

from __future__ import annotations

import datetime as dt
import hashlib
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import bundle_views, common, labels
from core import control
from core.domain import bundle, bundle_verify
from core.domain.auth import Scope, local_principal
from core.domain.bundle_archive import ORDER
from tests.app.conftest import (
    ARTIFACT,
    TENANT_A,
    TENANT_B,
    Seeded,
    audit_count,
    button,
    last_audit,
    open_app,
    text_input,
    texts,
)


def _entries(at: AppTest) -> Any:
    return at.dataframe[0].value


def test_audit_lists_entries_and_verifies_the_chain(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("auditor", {Scope.READ}), "audit")
    total = audit_count(console)
    with console.connect() as conn:
        chains = conn.execute(sa.text("SELECT count(*) FROM audit_chains")).scalar_one()
    assert chains >= 2  # the seeded ledger has two tenants' chains, at least
    assert [s.value for s in at.success] == [
        f"Audit chain intact: {total} rows in {chains} chain(s), every hash chain verified."
    ]
    entries = _entries(at)
    with console.connect() as conn:
        newest = conn.execute(sa.text("SELECT id FROM audit_log ORDER BY id DESC LIMIT 100")).scalars().all()
    assert list(entries["id"]) == newest
    at.text_input(key="audit_action").input("submit").run()
    submits = _entries(at)
    assert set(submits["action"]) == {"submit"}
    assert {TENANT_A, TENANT_B} <= set(submits["tenant"])
    at.text_input(key="audit_subject").input("nobody-at-all").run()
    assert _entries(at).empty


def test_an_action_in_the_console_appears_in_the_log(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    at = open_app(make_token("operator", {Scope.READ, Scope.OPERATE}), "jobs")
    job_id = seeded.b.queued[0]
    at.selectbox(key="jobs_selected").set_value(job_id).run()
    button(at, labels.CANCEL).click().run()
    text_input(at, labels.REASON_LABEL).input("tenant asked us to stop")
    button(at, labels.CONFIRM).click().run()
    at.switch_page("pages/4_Audit.py").run()
    at.text_input(key="audit_action").input("cancel").run()
    newest = _entries(at).iloc[0]
    assert (newest["subject"], newest["target"], newest["tenant"], newest["reason"]) == (
        "operator",
        f"job {job_id}",
        TENANT_B,
        "tenant asked us to stop",
    )
    (intact,) = [s.value for s in at.success]
    assert intact.startswith(f"Audit chain intact: {audit_count(console)} rows in ")


def test_a_tenant_limited_principal_sees_only_its_entries(seeded: Seeded, make_token: Callable[..., str]) -> None:
    at = open_app(make_token("globex-auditor", {Scope.READ}, {TENANT_B}), "audit")
    entries = _entries(at)
    assert not entries.empty
    assert set(entries["tenant"]) == {TENANT_B}
    assert TENANT_A not in texts(at) + entries.to_string()


def test_a_tampered_row_shows_the_chain_broken(
    seeded: Seeded, console: sa.Engine, make_token: Callable[..., str]
) -> None:
    token = make_token("auditor", {Scope.READ})
    with console.connect() as conn:
        row_id, reason = conn.execute(
            sa.text("SELECT id, reason FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET 1")
        ).one()
    # The log is append-only: switch its guard off for a moment to alter one row, then put it back.
    with console.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(sa.text("UPDATE audit_log SET reason = 'rewritten' WHERE id = :id"), {"id": row_id})
        conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    try:
        at = open_app(token, "audit")
        (error,) = [e.value for e in at.error]
        assert error.startswith(f"Audit chain broken at row {row_id} (chain ")
        assert not at.success
    finally:
        with console.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            conn.execute(sa.text("UPDATE audit_log SET reason = :r WHERE id = :id"), {"r": reason, "id": row_id})
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    (intact,) = [s.value for s in open_app(token, "audit").success]
    assert intact.startswith("Audit chain intact")


# -- audit bundles (app.bundle_views) ----------------------------------------------------------


@pytest.fixture
def scratch_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary directory for this test: where the console writes bundles."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, str]:
    return bundle.write_key_pair(tmp_path / "keys")


@pytest.fixture
def env_key(keys: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    monkeypatch.setenv(bundle_views.SIGNING_KEY_ENV, str(keys[0]))
    return keys


def _exporter(make_token: Callable[..., str]) -> AppTest:
    return open_app(make_token("exporter", {Scope.READ, Scope.EXPORT}), "audit")


def _table(at: AppTest, *columns: str) -> list[Any]:
    """The tables with these columns (st.dataframe keeps no key a test can read)."""
    return [d.value for d in at.dataframe if list(d.value.columns) == list(columns)]


def _steps(at: AppTest) -> list[tuple[str, str]]:
    (frame,) = _table(at, "step", "result", "detail")
    return list(zip(frame["step"], frame["result"], strict=True))


def _upload_and_verify(at: AppTest, name: str, data: bytes, pubs: list[Path]) -> None:
    at.file_uploader(key="verify_bundle_file").set_value((name, data, "application/gzip"))
    files = [(p.name, p.read_bytes(), "application/x-pem-file") for p in pubs]
    at.file_uploader(key="verify_bundle_keys").set_value(files)
    at.run()
    button(at, labels.VERIFY_BUNDLE).click().run()
    assert not at.exception, [e.value for e in at.exception]


def _bundle(engine: sa.Engine, key_path: Path, out: Path) -> control.Exported:
    return control.export_bundle(
        engine, local_principal("tests"), tenant=TENANT_A, out=out, key=bundle.load_private_key(key_path)
    )


def test_export_with_the_key_from_the_environment_writes_a_bundle_that_verifies(
    seeded: Seeded,
    console: sa.Engine,
    make_token: Callable[..., str],
    env_key: tuple[Path, Path, str],
    scratch_tmp: Path,
) -> None:
    _, pub_path, fp = env_key
    at = _exporter(make_token)
    assert labels.SIGNING_KEY_FROM_ENV in texts(at)
    assert not [u for u in at.file_uploader if str(u.key).startswith("bundle_key_")]  # no key upload offered
    at.selectbox(key="bundle_tenant").set_value(TENANT_A).run()
    before = audit_count(console)
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    exported = at.session_state[bundle_views.EXPORT_KEY]
    path = Path(exported.path)
    assert path.parent.parent == scratch_tmp and path.name.startswith(f"{TENANT_A}-")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == exported.sha256
    shown = texts(at)
    assert f"sha256 `{exported.sha256}`" in shown
    assert f"sha256:`{fp}`" in shown and exported.fingerprint == fp
    assert f"{exported.size:,} bytes" in shown
    (lines,) = _table(at, "file", "lines")
    assert dict(zip(lines["file"], lines["lines"], strict=True)) == exported.lines
    assert [p.value for p in at.progress] == [100]
    assert [b.label for b in at.download_button] == [labels.DOWNLOAD_BUNDLE]
    # The export is audited, and the bundle verifies with the public key.
    assert audit_count(console) == before + 1
    row = last_audit(console)
    assert (row["action"], row["tenant"], row["details"]["sha256"]) == ("bundle.export", TENANT_A, exported.sha256)
    report = control.verify_bundle(path, [bundle.load_public_key(pub_path)])
    assert report.ok, report.failure
    assert report.fingerprint == fp
    assert report.manifest is not None and report.manifest["tenant"] == TENANT_A
    # The next export replaces this one: its file is removed.
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert not path.exists()
    assert Path(at.session_state[bundle_views.EXPORT_KEY].path).is_file()


def test_a_future_to_shows_the_error_and_writes_nothing(
    seeded: Seeded,
    console: sa.Engine,
    make_token: Callable[..., str],
    env_key: tuple[Path, Path, str],
    scratch_tmp: Path,
) -> None:
    at = _exporter(make_token)
    future = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0) + dt.timedelta(hours=1)
    at.datetime_input(key="bundle_to").set_value(future).run()
    before = audit_count(console)
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = [e.value for e in at.error]
    assert "lies in the future" in error and "Traceback" not in error
    assert bundle_views.EXPORT_KEY not in at.session_state
    assert list(scratch_tmp.iterdir()) == []
    assert audit_count(console) == before
    assert not at.download_button


def test_export_with_an_uploaded_key_forgets_the_key_after(
    seeded: Seeded,
    make_token: Callable[..., str],
    keys: tuple[Path, Path, str],
    scratch_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(bundle_views.SIGNING_KEY_ENV, raising=False)
    key_path, pub_path, fp = keys
    at = _exporter(make_token)
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert [e.value for e in at.error] == [labels.NO_SIGNING_KEY]
    # Text that is not PEM is refused as it is: never taken for a path on the server.
    at.file_uploader(key="bundle_key_0").set_value(("k.pem", str(key_path).encode(), "text/plain")).run()
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert [e.value for e in at.error] == ["the uploaded key 'k.pem' is not an unencrypted PEM private key"]
    at.file_uploader(key="bundle_key_0").set_value(("signing.key", key_path.read_bytes(), "text/plain")).run()
    button(at, labels.EXPORT_BUNDLE).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    exported = at.session_state[bundle_views.EXPORT_KEY]
    assert exported.fingerprint == fp
    assert control.verify_bundle(Path(exported.path), [bundle.load_public_key(pub_path)]).ok
    # A fresh uploader, empty: the key is not kept for the next export.
    (uploader,) = [u for u in at.file_uploader if str(u.key).startswith("bundle_key_")]
    assert uploader.key == "bundle_key_1" and not uploader.value
    assert key_path.read_text() not in texts(at)


def test_export_needs_the_export_scope(seeded: Seeded, make_token: Callable[..., str], env_key: Any) -> None:
    at = open_app(make_token("auditor", {Scope.READ}), "audit")
    assert button(at, labels.EXPORT_BUNDLE).disabled
    assert labels.missing_scope("auditor", Scope.EXPORT.value) in texts(at)
    limited = open_app(make_token("globex-exporter", {Scope.READ, Scope.EXPORT}, {TENANT_B}), "audit")
    assert limited.selectbox(key="bundle_tenant").options == [TENANT_B]
    assert not button(limited, labels.EXPORT_BUNDLE).disabled


def test_verify_a_good_bundle_shows_every_step_passed(
    seeded: Seeded,
    console: sa.Engine,
    make_token: Callable[..., str],
    keys: tuple[Path, Path, str],
    tmp_path: Path,
    scratch_tmp: Path,
) -> None:
    key_path, pub_path, fp = keys
    exported = _bundle(console, key_path, tmp_path / "good.tar.gz")
    at = open_app(make_token("auditor", {Scope.READ}), "audit")
    assert button(at, labels.VERIFY_BUNDLE).disabled
    other = bundle.write_key_pair(tmp_path / "other")[1]
    _upload_and_verify(at, "good.tar.gz", Path(exported.path).read_bytes(), [other, pub_path])
    steps = _steps(at)
    assert [s for s, _ in steps] == [f"{i}. {name}" for i, name in enumerate(bundle_verify.STEPS, 1)]
    assert {r for _, r in steps} == {labels.STEP_PASSED}
    assert [s.value for s in at.success][-1] == (
        f"Bundle good.tar.gz verified: every step passed, signed with the key sha256:{fp}."
    )
    assert not at.error
    assert list(scratch_tmp.iterdir()) == []  # the upload's temporary copy is gone again


def test_verify_a_tampered_bundle_or_with_another_key_shows_the_failure(
    seeded: Seeded,
    console: sa.Engine,
    make_token: Callable[..., str],
    keys: tuple[Path, Path, str],
    tmp_path: Path,
) -> None:
    key_path, pub_path, _ = keys
    data = bytearray(Path(_bundle(console, key_path, tmp_path / "b.tar.gz").path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    at = open_app(make_token("auditor", {Scope.READ}), "audit")
    _upload_and_verify(at, "b.tar.gz", bytes(data), [pub_path])
    steps = _steps(at)
    results = [r for _, r in steps]
    failed = results.index(labels.STEP_FAILED)
    assert results == [labels.STEP_PASSED] * failed + [labels.STEP_FAILED] + [labels.STEP_NOT_RUN] * (7 - failed)
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"Bundle b.tar.gz rejected: step {failed + 1} ({bundle_verify.STEPS[failed]}) failed: ")
    assert not [s for s in at.success if s.value.startswith("Bundle ")]

    # The untouched bundle with a key that did not sign it: the signature step fails.
    other = bundle.write_key_pair(tmp_path / "other")[1]
    _upload_and_verify(at, "b.tar.gz", (tmp_path / "b.tar.gz").read_bytes(), [other])
    assert [r for _, r in _steps(at)][:4] == [labels.STEP_PASSED] * 2 + [labels.STEP_FAILED, labels.STEP_NOT_RUN]
    (error,) = [e.value for e in at.error]
    assert error.startswith("Bundle b.tar.gz rejected: step 3 (signature) failed: ")

    # A public key that is no key at all: one line, nothing verified.
    bad = tmp_path / "bad.pub"
    bad.write_bytes(b"not a key")
    _upload_and_verify(at, "b.tar.gz", (tmp_path / "b.tar.gz").read_bytes(), [bad])
    assert [e.value for e in at.error] == ["bad.pub is not a PEM public key"]
    assert not _table(at, "step", "result", "detail")


def test_export_progress_follows_the_record_files() -> None:
    fractions = [bundle_views.stage_fraction(s) for s in (*ORDER, "archive")]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] < 1
    assert bundle_views.stage_text("jobs.jsonl", 12_000) == "Writing jobs.jsonl: 12,000 lines"


def test_export_writes_the_tenants_records_and_artifacts(
    seeded: Seeded, console: sa.Engine, keys: tuple[Path, Path, str], scratch_tmp: Path
) -> None:
    """bundle_views.export, as the button calls it, with a range that holds the seeded records."""
    key_path, pub_path, _ = keys
    exported = bundle_views.export(
        common.Session(console, local_principal("tests")),
        tenant=TENANT_A,
        key=bundle.load_private_key(key_path),
        range_from=None,
        range_to=dt.datetime.now(dt.UTC),
        with_artifacts=True,
    )
    assert exported.lines["jobs.jsonl"] == len(seeded.a.all_ids)
    assert exported.lines["artifacts.jsonl"] == 1
    with tarfile.open(exported.path) as tar:
        assert f"artifacts/{hashlib.sha256(ARTIFACT).hexdigest()}" in tar.getnames()
    assert control.verify_bundle(Path(exported.path), [bundle.load_public_key(pub_path)]).ok
    bundle_views.discard(exported)
    assert list(scratch_tmp.iterdir()) == []
