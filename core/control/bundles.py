"""Audit bundles (issue 13, docs/bundles.md): export a tenant's history in a range as one
signed, deterministic tar.gz, and import a verified bundle into an empty ledger.

Both need orch:export on the tenant and are audited. An export reads everything in one
REPEATABLE READ snapshot, writes to a temporary file beside the target and renames it into
place only when the archive is whole, then records its own audit row, whose time lies after
the range's end, so it never changes a later export of the same range. An import verifies
first (every step: nothing is written for a bundle that does not verify), refuses a ledger
that is not empty, loads every row in one transaction keeping its id, and sets every
identity past them; exporting the imported range again gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.control.common import append_audit
from core.domain import bundle_verify, errors
from core.domain.auth import Principal, Scope
from core.domain.bundle import utc
from core.domain.bundle_archive import ORDER, REPLAY_PATH, BundleWriter
from core.ledger import bundles as ledger
from core.ledger import flow

#: progress(stage, lines done in it): stages are the record files in ORDER, then "archive".
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Exported:
    path: str
    sha256: str
    tenant: str
    range_from: str | None
    range_to: str
    lines: dict[str, int]
    size: int
    fingerprint: str


@dataclass(frozen=True)
class Imported:
    tenant: str
    range_from: str | None
    range_to: str
    rows: dict[str, int]
    fingerprint: str


def exporter_version() -> str:
    try:
        return f"orch {metadata.version('orch')}"
    except metadata.PackageNotFoundError:
        return "orch (unpackaged)"


def default_to(now: dt.datetime) -> dt.datetime:
    """The start of the current minute: the default end of a range."""
    return now.astimezone(dt.UTC).replace(second=0, microsecond=0)


def check_range(range_from: dt.datetime | None, range_to: dt.datetime, now: dt.datetime) -> None:
    for name, ts in (("--from", range_from), ("--to", range_to)):
        if ts is not None and ts.tzinfo is None:
            raise errors.InvalidInput(f"{name} {ts.isoformat()} has no time zone (add Z or +00:00)")
    if range_to > now:
        raise errors.InvalidInput(
            f"--to {utc(range_to)} lies in the future: a range must have ended, "
            "so that exporting it again gives the same bundle"
        )
    if range_from is not None and range_from >= range_to:
        raise errors.InvalidInput(f"the range is empty: --from {utc(range_from)} is not before --to {utc(range_to)}")


def _replay_source() -> Iterator[bytes]:
    yield resources.files("core.domain").joinpath("bundle_replay.py").read_bytes()


def export_bundle(
    engine: sa.Engine,
    principal: Principal,
    *,
    tenant: str,
    out: Path,
    key: Ed25519PrivateKey,
    range_from: dt.datetime | None = None,
    range_to: dt.datetime | None = None,
    with_artifacts: bool = False,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> Exported:
    """Write the bundle of `tenant`'s records with times in [range_from, range_to) to `out`.
    Raises Forbidden, NotFound (no such tenant), InvalidInput (a bad range, `out` exists or
    cannot be written)."""
    principal.require(Scope.EXPORT, tenant)
    now = now or dt.datetime.now(dt.UTC)
    range_to = range_to or default_to(now)
    check_range(range_from, range_to, now)
    if out.exists():
        raise errors.InvalidInput(f"{out} exists; bundles are never overwritten (choose another --out)")
    if not out.parent.is_dir():
        raise errors.InvalidInput(f"cannot write {out}: {out.parent} is not a directory")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    tmp = Path(tmp_name)
    lines: dict[str, int] = {}
    try:
        with (
            os.fdopen(fd, "wb") as f,
            engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            tid = ledger.tenant_id(conn, tenant)
            if tid is None:
                raise errors.NotFound(f"no tenant {tenant!r}")
            params = {"tenant_id": tid, "tenant": tenant, "range_from": range_from, "range_to": range_to}
            anchor = ledger.audit_anchor(conn, params)
            writer = BundleWriter(
                f,
                tenant=tenant,
                range_from=range_from,
                range_to=range_to,
                exporter_version=exporter_version(),
                key=key,
                audit_anchor=anchor,
                spool_dir=out.parent,
            )
            with writer:
                _write_files(conn, writer, params, writer.audit_anchor or {}, lines, with_artifacts, progress)
                sha256 = writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fp = _fingerprint(key)
    try:
        _audit_export(engine, principal, tenant, sha256, fp, range_from, range_to, lines, with_artifacts)
    except BaseException:
        # No bundle without its audit row: an export that cannot be recorded is not kept.
        out.unlink(missing_ok=True)
        raise
    return Exported(
        path=str(out),
        sha256=sha256,
        tenant=tenant,
        range_from=None if range_from is None else utc(range_from),
        range_to=utc(range_to),
        lines=lines,
        size=out.stat().st_size,
        fingerprint=fp,
    )


def _audit_export(
    engine: sa.Engine,
    principal: Principal,
    tenant: str,
    sha256: str,
    fp: str,
    range_from: dt.datetime | None,
    range_to: dt.datetime,
    lines: Mapping[str, int],
    with_artifacts: bool,
) -> None:
    with engine.begin() as conn:
        append_audit(
            conn,
            principal,
            Scope.EXPORT,
            "bundle.export",
            f"bundle sha256:{sha256}",
            tenant=tenant,
            details={
                "from": None if range_from is None else utc(range_from),
                "to": utc(range_to),
                "sha256": sha256,
                "key": fp,
                "lines": dict(lines),
                "with_artifacts": with_artifacts,
            },
        )


def _write_files(
    conn: sa.Connection,
    writer: BundleWriter,
    params: Mapping[str, Any],
    anchor: dict[str, Any],
    lines: dict[str, int],
    with_artifacts: bool,
    progress: Progress | None,
) -> None:
    readers = {
        "jobs.jsonl": ledger.jobs,
        "history.jsonl": ledger.history,
        "runs.jsonl": ledger.runs,
        "throttles.jsonl": ledger.throttles,
        "audit.jsonl": _audit_with_head(anchor),
        "artifacts.jsonl": ledger.artifacts,
        "incidents.jsonl": ledger.incidents,
        "events.jsonl": ledger.events,
        "sources.jsonl": ledger.sources,
    }
    for name in ORDER:
        report = None if progress is None else (lambda n, name=name: progress(name, n))
        lines[name] = writer.add_jsonl(name, readers[name](conn, params), report)
        if progress is not None:
            progress(name, lines[name])
    if with_artifacts:
        for sha, data in ledger.artifact_bytes(conn, params):
            writer.add_file(f"artifacts/{sha}", [data])
    writer.add_file(REPLAY_PATH, _replay_source())
    if progress is not None:
        progress("archive", 0)


def _audit_with_head(anchor: dict[str, Any]) -> Callable[[sa.Connection, Mapping[str, Any]], Iterator[dict[str, Any]]]:
    """The audit reader, noting the chain's last hash in the range into the anchor (the
    manifest, written after every file, names where the range's part of the chain ends)."""

    def read(conn: sa.Connection, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        anchor["head_hash"] = anchor["anchor_hash"]
        for row in ledger.audit(conn, params):
            anchor["head_hash"] = row["hash"]
            yield row

    return read


def _fingerprint(key: Ed25519PrivateKey) -> str:
    from core.domain.bundle import fingerprint

    return fingerprint(key.public_key())


# -- import ----------------------------------------------------------------------------------


def verify_bundle(
    path: Path, keys: Sequence[Ed25519PublicKey], progress: Progress | None = None
) -> bundle_verify.Report:
    """Every verification step (no database). Raises InvalidInput when the file is missing."""
    if not path.is_file():
        raise errors.InvalidInput(f"no bundle at {path}")
    return bundle_verify.verify(path, keys, progress=progress)


def _jsonl(root: Path, name: str) -> Iterator[dict[str, Any]]:
    with (root / name).open("rb") as f:
        for line in f:
            yield json.loads(line)


def import_bundle(
    engine: sa.Engine,
    principal: Principal,
    *,
    path: Path,
    keys: Sequence[Ed25519PublicKey],
    progress: Progress | None = None,
) -> Imported:
    """Verify the bundle, then load it into this empty ledger. Raises InvalidInput (the
    bundle does not verify, naming the first failure; the ledger is not empty; the role may
    not load rows as a restore does) and Forbidden; writes nothing in any of those cases."""
    if not path.is_file():
        raise errors.InvalidInput(f"no bundle at {path}")
    spool = Path(tempfile.mkdtemp(prefix="orch-import-"))
    try:
        report = bundle_verify.verify(path, keys, progress=progress, into=spool)
        if not report.ok:
            raise errors.InvalidInput(f"the bundle does not verify, nothing was imported: {report.failure}")
        manifest = report.manifest
        assert manifest is not None and report.fingerprint is not None
        tenant = str(manifest["tenant"])
        principal.require(Scope.EXPORT, tenant)
        rows = _load(engine, spool, manifest, progress, principal.subject)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    with engine.begin() as conn:
        append_audit(
            conn,
            principal,
            Scope.EXPORT,
            "bundle.import",
            f"bundle of {tenant}",
            tenant=tenant,
            details={"from": manifest["from"], "to": manifest["to"], "key": report.fingerprint, "rows": rows},
        )
    return Imported(tenant, manifest["from"], manifest["to"], rows, report.fingerprint)


IMPORT_PAUSE = "imported from an audit bundle: its jobs are evidence, not work"


def _load(
    engine: sa.Engine, root: Path, manifest: Mapping[str, Any], progress: Progress | None, principal_subject: str
) -> dict[str, int]:
    tenant = str(manifest["tenant"])
    rows: dict[str, int] = {}
    with engine.begin() as conn:
        if ledger.ledger_in_use(conn):
            raise errors.InvalidInput(
                "this ledger is not empty: a bundle is imported only into a freshly migrated database"
            )
        try:
            with conn.begin_nested():
                ledger.begin_restore(conn)
        except sa.exc.DBAPIError:
            raise errors.InvalidInput(
                "this database role may not load rows as a restore does (SET session_replication_role "
                "needs a superuser or the like); import with such a role"
            ) from None
        ledger.begin_restore(conn)
        tid = int(
            conn.execute(sa.text("INSERT INTO tenants (name) VALUES (:n) RETURNING id"), {"n": tenant}).scalar_one()
        )

        def load(table: str, records: Iterator[dict[str, Any]], stage: str) -> None:
            rows[table] = rows.get(table, 0) + ledger.load_rows(conn, table, records)
            if progress is not None:
                progress(stage, rows[table])

        def with_tenant(name: str, drop: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
            for r in _jsonl(root, name):
                for k in drop:
                    r.pop(k, None)
                r["tenant_id"] = tid
                yield r

        load("sources", with_tenant("sources.jsonl"), "sources.jsonl")
        # Each file is read as often as it feeds a table, never held whole.
        load(
            "runs",
            ({**_without(r, "edges", "jobs"), "tenant_id": tid} for r in _jsonl(root, "runs.jsonl")),
            "runs.jsonl",
        )
        load(
            "run_jobs", ({**j, "run_id": r["id"]} for r in _jsonl(root, "runs.jsonl") for j in r["jobs"]), "runs.jsonl"
        )
        load(
            "dag_edges",
            (
                {"parent_id": p, "child_id": c, "run_id": r["id"]}
                for r in _jsonl(root, "runs.jsonl")
                for p, c in r["edges"]
            ),
            "runs.jsonl",
        )
        load("jobs", with_tenant("jobs.jsonl", drop=("result",)), "jobs.jsonl")
        load(
            "job_results",
            (
                {"job_id": j["id"], "tenant_id": tid, "result": j["result"], "size_bytes": _size(j["result"])}
                for j in _jsonl(root, "jobs.jsonl")
                if j["result"] is not None
            ),
            "jobs.jsonl",
        )
        load("job_history", _jsonl(root, "history.jsonl"), "history.jsonl")
        load(
            "throttles",
            ({**_without(t, "kind"), "tenant_id": tid} for t in _jsonl(root, "throttles.jsonl") if t["kind"] == "rate"),
            "throttles.jsonl",
        )
        load(
            "circuit_transitions",
            (
                {**_without(t, "kind"), "tenant_id": tid}
                for t in _jsonl(root, "throttles.jsonl")
                if t["kind"] == "circuit"
            ),
            "throttles.jsonl",
        )
        # The details as hashed (hashed_details keeps 2.0 as 2.0, which canonical JSON does not).
        last: list[dict[str, Any]] = []

        def audit_rows() -> Iterator[dict[str, Any]]:
            for r in _jsonl(root, "audit.jsonl"):
                row = {**_without(r, "hashed_details"), "details": json.loads(r["hashed_details"])}
                last[:] = [row]
                yield row

        load("audit_log", audit_rows(), "audit.jsonl")
        anchor = manifest["audit"]
        ledger.set_audit_head(conn, chain=tenant, anchor_hash=anchor["anchor_hash"], last=last[0] if last else None)
        load("artifacts", _artifacts(root, tid), "artifacts.jsonl")
        load("incidents", with_tenant("incidents.jsonl"), "incidents.jsonl")
        # Imported events are history: marked published, so no relay announces them again.
        load(
            "events",
            ({**e, "tenant_id": tid, "published_at": e["at"]} for e in _jsonl(root, "events.jsonl")),
            "events.jsonl",
        )
        ledger.set_sequences(conn)
        ledger.rebuild_totals(conn, tid)
        # The imported jobs are evidence: a job captured queued or running must not run again
        # because a worker or the scheduler meets this ledger. The tenant is paused (a pause
        # is state, not in any bundle, so the re-export is unchanged); `orch resume` lifts it.
        flow.insert_pause(
            conn,
            tenant_id=tid,
            source_id=None,
            job_type=None,
            reason=IMPORT_PAUSE,
            ticket=None,
            actor=principal_subject,
        )
    return rows


def _without(record: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _artifacts(root: Path, tid: int) -> Iterator[dict[str, Any]]:
    """Artifact rows with their bytes where the bundle holds them (--with-artifacts); else
    empty bytes: the row keeps its name, size and digest as evidence."""
    for a in _jsonl(root, "artifacts.jsonl"):
        blob = root / f"artifacts__{a['sha256']}"
        data = blob.read_bytes() if blob.is_file() else b""
        yield {**a, "tenant_id": tid, "data": "\\x" + data.hex()}
