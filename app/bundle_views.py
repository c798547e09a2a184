"""Audit bundles on the Audit page (issue 13, docs/bundles.md): export a tenant's history in a
range as a signed bundle (core.control.export_bundle, needs orch:export) and download it, and
verify an uploaded bundle against uploaded public keys, step by step (no database).

The page draws export_section and verify_section; what they call (signing_key, public_key,
export, verify_upload, show_exported, show_report) stands alone so tests can drive it too.
The signing key comes from ORCH_SIGNING_KEY on the console's server when set (a path or the
PEM text, as for `orch bundle export`), else from an upload that is read for one export and
dropped after; it is never stored, logged or shown."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import sqlalchemy as sa
import streamlit as st
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app import common, labels
from core import control, queries
from core.control.bundles import default_to
from core.domain import bundle, errors
from core.domain.auth import Principal, Scope
from core.domain.bundle_archive import ORDER
from core.domain.bundle_verify import STEPS, Report

SIGNING_KEY_ENV = "ORCH_SIGNING_KEY"
#: Session state: the last export of this browser session (control.Exported).
EXPORT_KEY = "audit_bundle_export"
#: Session state: the last verification, with the ids of the uploads it was of.
VERIFIED_KEY = "audit_bundle_verified"
#: Session state: bumped after an export with an uploaded key, so the uploader forgets it.
KEY_NONCE = "audit_bundle_key_nonce"
#: Exports are written to a directory of their own under the system's temporary directory.
TMP_PREFIX = "orch-console-bundle-"
#: An export's directory left behind (its browser session gone) is removed after a day.
STALE_S = 86_400
MINUTE = dt.timedelta(minutes=1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

Progress = Callable[[str, int], None]


# -- keys -------------------------------------------------------------------------------------


def signing_key(upload: tuple[str, bytes] | None, env: str | None = None) -> Ed25519PrivateKey:
    """The export's signing key: ORCH_SIGNING_KEY (`env`, read from the environment when not
    given) when set, else the uploaded (name, PEM bytes). One-line InvalidInput otherwise;
    the key's bytes never appear in a message."""
    source = (os.environ.get(SIGNING_KEY_ENV, "") if env is None else env).strip()
    if source:
        return bundle.load_private_key(source)
    if upload is None:
        raise errors.InvalidInput(labels.NO_SIGNING_KEY)
    name, data = upload
    text = data.decode("utf-8", errors="replace")
    # Only PEM text: anything else would be taken for a path on the console's server.
    if "-----BEGIN" not in text:
        raise errors.InvalidInput(f"the uploaded key {name!r} is not an unencrypted PEM private key")
    try:
        return bundle.load_private_key(text)
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(str(exc).replace("the PEM text given", f"the uploaded key {name!r}")) from None


def public_key(name: str, data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from an uploaded PEM file (SubjectPublicKeyInfo); one-line InvalidInput."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise errors.InvalidInput(f"{name} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise errors.InvalidInput(f"{name} is not an Ed25519 key")
    return key


# -- export -----------------------------------------------------------------------------------


def stage_fraction(stage: str) -> float:
    """How far an export is at the start of `stage`: the record files in ORDER, then "archive"."""
    done = ORDER.index(stage) if stage in ORDER else len(ORDER)
    return done / (len(ORDER) + 1)


def stage_text(stage: str, n: int) -> str:
    return "Writing the archive" if stage not in ORDER else f"Writing {stage}: {n:,} lines"


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A datetime input's value (naive, meant as UTC) as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _safe(name: str, default: str) -> str:
    cleaned = _UNSAFE.sub("_", Path(name).name).lstrip(".")[:120]
    return cleaned or default


def _sweep_stale(now: float) -> None:
    """Remove export directories older than STALE_S (their sessions are long gone)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > STALE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def discard(exported: control.Exported | None) -> None:
    """Remove an export's file and its directory (one of ours only)."""
    if exported is None:
        return
    directory = Path(exported.path).parent
    if directory.name.startswith(TMP_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)


def export(
    session: common.Session,
    *,
    tenant: str,
    key: Ed25519PrivateKey,
    range_from: dt.datetime | None,
    range_to: dt.datetime | None,
    with_artifacts: bool,
    progress: Progress | None = None,
) -> control.Exported:
    """control.export_bundle into a new temporary directory (removed again when it fails).
    Raises what it raises: Forbidden, NotFound, InvalidInput (e.g. a "to" in the future)."""
    _sweep_stale(time.time())
    range_to = range_to or default_to(common.now())
    try:
        directory = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    except OSError as exc:
        raise errors.InvalidInput(f"cannot make a temporary directory for the bundle: {exc.strerror}") from None
    out = directory / f"{_safe(tenant, 'tenant')}-{range_to.astimezone(dt.UTC):%Y%m%dT%H%MZ}.tar.gz"
    try:
        return control.export_bundle(
            session.engine,
            session.principal,
            tenant=tenant,
            out=out,
            key=key,
            range_from=range_from,
            range_to=range_to,
            with_artifacts=with_artifacts,
            progress=progress,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def show_exported(exported: control.Exported) -> None:
    lines = sum(exported.lines.values())
    start = "the beginning" if exported.range_from is None else labels.utc(exported.range_from)
    st.success(
        f"Bundle of {exported.tenant} written: [{start}, {labels.utc(exported.range_to)}) UTC,"
        f" {lines:,} lines, {exported.size:,} bytes."
    )
    st.markdown(f"sha256 `{exported.sha256}`")
    st.markdown(f"Signed with the key sha256:`{exported.fingerprint}`")
    st.dataframe(
        [{"file": name, "lines": n} for name, n in exported.lines.items()], hide_index=True, key="bundle_lines"
    )
    path = Path(exported.path)
    if not path.is_file():
        st.warning("The bundle's file is gone from the console's server: export it again.")
        return
    # The file is read only when the button is pressed; pressing it does not rerun the page.
    st.download_button(
        labels.DOWNLOAD_BUNDLE,
        data=path.read_bytes,
        file_name=path.name,
        mime="application/gzip",
        on_click="ignore",
        key="bundle_download",
    )


def _export_blocked(principal: Principal, tenant: str | None) -> str | None:
    if tenant is None:
        return "No tenant to export."
    if Scope.EXPORT not in principal.scopes:
        return labels.missing_scope(principal.subject, Scope.EXPORT.value)
    if not principal.can(Scope.EXPORT, tenant):
        return f"{principal.subject} may not export tenant {tenant!r}."
    return None


def _tenants(session: common.Session) -> list[str]:
    with common.shown_errors(), session.engine.connect() as conn:
        return queries.tenants(conn, session.principal)
    return []


def _run_export(
    session: common.Session,
    *,
    tenant: str,
    upload: tuple[str, bytes] | None,
    range_from: dt.datetime | None,
    range_to: dt.datetime | None,
    with_artifacts: bool,
) -> bool:
    """One press of Export bundle: True when a bundle was written (and kept in the session)."""
    discard(st.session_state.pop(EXPORT_KEY, None))
    bar = st.progress(0.0, text="Starting the export")

    def progress(stage: str, n: int) -> None:
        bar.progress(stage_fraction(stage), text=stage_text(stage, n))

    try:
        key = signing_key(upload)
        exported = export(
            session,
            tenant=tenant,
            key=key,
            range_from=range_from,
            range_to=range_to,
            with_artifacts=with_artifacts,
            progress=progress,
        )
    except errors.OrchError as exc:
        bar.empty()
        st.error(str(exc))
        return False
    except sa.exc.SQLAlchemyError as exc:
        bar.empty()
        st.error(f"The ledger is unavailable: {str(exc).strip().splitlines()[0]}")
        return False
    except OSError as exc:  # e.g. the temporary directory's disk is full
        bar.empty()
        st.error(f"Cannot write the bundle on the console's server: {exc.strerror or exc}")
        return False
    bar.progress(1.0, text="Bundle written")
    st.session_state[EXPORT_KEY] = exported
    return True


@st.fragment
def export_section(session: common.Session) -> None:
    """Tenant, range, artifacts, signing key; Export bundle; the last export with its download.
    A fragment: its inputs rerun only this section, not the log and its chain verification."""
    tenants = _tenants(session)
    cols = st.columns(3)
    with cols[0]:
        tenant = st.selectbox("Tenant", tenants, key="bundle_tenant")
    with cols[1]:
        start = st.datetime_input(labels.BUNDLE_FROM_LABEL, value=None, step=MINUTE, key="bundle_from")
    with cols[2]:
        end = st.datetime_input(
            labels.BUNDLE_TO_LABEL,
            value=default_to(common.now()).replace(tzinfo=None),
            step=MINUTE,
            key="bundle_to",
        )
    with_artifacts = st.checkbox(labels.WITH_ARTIFACTS_LABEL, key="bundle_with_artifacts")
    upload = None
    if os.environ.get(SIGNING_KEY_ENV, "").strip():
        st.caption(labels.SIGNING_KEY_FROM_ENV)
    else:
        nonce = int(st.session_state.get(KEY_NONCE, 0))
        uploaded = st.file_uploader(labels.SIGNING_KEY_LABEL, key=f"bundle_key_{nonce}")
        st.caption(labels.SIGNING_KEY_UPLOAD_HELP)
        if uploaded is not None:
            upload = (uploaded.name, uploaded.getvalue())
    why = _export_blocked(session.principal, None if tenant is None else str(tenant))
    pressed = st.button(labels.EXPORT_BUNDLE, type="primary", key="bundle_export", disabled=why is not None, help=why)
    if why is not None:
        st.caption(why)
    elif pressed and tenant is not None:
        written = _run_export(
            session,
            tenant=str(tenant),
            upload=upload,
            range_from=as_utc(start),
            range_to=as_utc(end),
            with_artifacts=bool(with_artifacts),
        )
        if written and upload is not None:
            # Forget the uploaded key: a new uploader (another key) has none.
            st.session_state[KEY_NONCE] = int(st.session_state.get(KEY_NONCE, 0)) + 1
            st.rerun()
    shown = st.session_state.get(EXPORT_KEY)
    if isinstance(shown, control.Exported):
        show_exported(shown)


# -- verify -----------------------------------------------------------------------------------


def verify_upload(name: str, data: IO[bytes], keys: Sequence[Ed25519PublicKey]) -> Report:
    """Write the uploaded bundle to a temporary file, verify it (control.verify_bundle, every
    step, no database) and remove the file again."""
    directory = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}verify-"))
    try:
        path = directory / _safe(name, "bundle.tar.gz")
        data.seek(0)
        with path.open("wb") as f:
            shutil.copyfileobj(data, f, 1 << 20)
        return control.verify_bundle(path, keys)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report_rows(report: Report) -> list[dict[str, str]]:
    """All eight steps, in order: passed, failed, or not run (after the first failure)."""
    done = {s.name: s for s in report.steps}
    rows = []
    for i, name in enumerate(STEPS, 1):
        step = done.get(name)
        if step is None:
            result, detail = labels.STEP_NOT_RUN, labels.NOT_RUN_DETAIL
        else:
            result, detail = (labels.STEP_PASSED if step.ok else labels.STEP_FAILED), step.detail
        rows.append({"step": f"{i}. {name}", "result": result, "detail": detail or labels.DASH})
    return rows


def show_report(name: str, report: Report) -> None:
    st.dataframe(report_rows(report), hide_index=True, key="bundle_steps")
    if report.ok:
        st.success(f"Bundle {name} verified: every step passed, signed with the key sha256:{report.fingerprint}.")
    else:
        st.error(f"Bundle {name} rejected: {report.failure}")


@st.fragment
def verify_section() -> None:
    """Upload a bundle and public keys; Verify bundle; the step-by-step result. No database."""
    upload = st.file_uploader(labels.BUNDLE_FILE_LABEL, type=["tar.gz", "tgz"], key="verify_bundle_file")
    pubs = st.file_uploader(labels.PUBLIC_KEYS_LABEL, accept_multiple_files=True, key="verify_bundle_keys")
    ready = upload is not None and bool(pubs)
    pressed = st.button(labels.VERIFY_BUNDLE, type="primary", key="verify_bundle_run", disabled=not ready)
    if upload is None or not pubs:
        st.caption(labels.VERIFY_NEEDS)
        return
    ids = (upload.file_id, tuple(p.file_id for p in pubs))
    if pressed:
        st.session_state.pop(VERIFIED_KEY, None)
        try:
            keys = [public_key(p.name, p.getvalue()) for p in pubs]
            with st.spinner(f"Verifying {upload.name}"):
                report = verify_upload(upload.name, upload, keys)
        except errors.OrchError as exc:
            st.error(str(exc))
            return
        except OSError as exc:
            st.error(f"Cannot write the upload to a temporary file: {exc.strerror}")
            return
        st.session_state[VERIFIED_KEY] = (ids, upload.name, report)
    shown = st.session_state.get(VERIFIED_KEY)
    if shown is not None and shown[0] == ids:
        show_report(shown[1], shown[2])
