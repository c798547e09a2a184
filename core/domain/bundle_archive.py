"""Writing an audit bundle (issue 13): record files of canonical lines, a manifest, a DSSE
envelope over an in-toto Statement whose subjects are every file, all in one deterministic
tar.gz. Pure: the records come from the caller (core.control.bundles), the key too.

Deterministic: the same records, range and key give the same archive, byte for byte.
Entries are sorted by name; every one is a regular file with mode 644, uid and gid 0, no user
or group names and the range's end as its mtime (USTAR headers, so no PAX extras); gzip
writes no file name and mtime 0. Each file is spooled to a temporary file while its size,
line count and sha256 are computed, so no file is ever whole in memory.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.domain import bundle_dsse, errors
from core.domain.bundle import canonical_line, utc

SCHEMA_VERSION = "orch.bundle.v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://orch.dev/bundle/v1"
#: The record files, each in every bundle (empty when the range has none of its records).
ORDER = (
    "jobs.jsonl",
    "history.jsonl",
    "runs.jsonl",
    "throttles.jsonl",
    "audit.jsonl",
    "artifacts.jsonl",
    "incidents.jsonl",
    "events.jsonl",
    "sources.jsonl",
)
MANIFEST = "manifest.json"
ENVELOPE = "manifest.dsse.json"
REPLAY_PATH = "replay/replay.py"
_ARTIFACT = re.compile(r"artifacts/[0-9a-f]{64}")
_CHUNK = 1 << 20


def allowed(name: str) -> bool:
    """The names a bundle may hold (besides the manifest and its envelope)."""
    return name in ORDER or name == REPLAY_PATH or _ARTIFACT.fullmatch(name) is not None


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    lines: int
    sha256: str

    def as_record(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "lines": self.lines, "sha256": self.sha256}


class BundleWriter:
    """`with BundleWriter(out, ...) as w: w.add_jsonl(...)`; the archive is written to `out`
    when the block ends without an error (close() also returns its sha256)."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        tenant: str,
        range_from: dt.datetime | None,
        range_to: dt.datetime,
        exporter_version: str,
        key: Ed25519PrivateKey,
        audit_anchor: Mapping[str, Any] | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        if range_from is not None and range_from >= range_to:
            raise errors.InvalidInput(f"the range is empty: {utc(range_from)} is not before {utc(range_to)}")
        self.out, self.tenant, self.key = out, tenant, key
        self.range_from, self.range_to, self.exporter_version = range_from, range_to, exporter_version
        #: Where the range's part of the tenant's audit chain starts and ends (chain,
        #: anchor_hash, first_seq, head_hash), so consecutive bundles link.
        self.audit_anchor = dict(audit_anchor) if audit_anchor is not None else None
        self._dir = Path(tempfile.mkdtemp(prefix="orch-bundle-", dir=spool_dir))
        self._files: dict[str, FileEntry] = {}
        self.sha256: str | None = None

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None and self.sha256 is None:
                self.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _spool(self, name: str, chunks: Iterable[bytes]) -> FileEntry:
        if not allowed(name):
            raise errors.InvalidInput(f"{name!r} is not a file a bundle may hold")
        if name in self._files:
            raise errors.InvalidInput(f"{name} was added twice")
        digest, size, lines = hashlib.sha256(), 0, 0
        path = self._dir / name.replace("/", "__")
        with path.open("wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                f.write(chunk)
        entry = FileEntry(name, size, lines, digest.hexdigest())
        self._files[name] = entry
        return entry

    def add_jsonl(
        self,
        name: str,
        records: Iterable[Mapping[str, Any] | bytes],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """One record file, its records in the order given (the caller's canonical order). A
        record given as bytes is its canonical line already, without the newline (the
        caller's proof: a line the server built, checked against the reference by tests)."""
        if name not in ORDER:
            raise errors.InvalidInput(f"{name!r} is not a record file of a bundle")

        def lines() -> Iterable[bytes]:
            batch: list[bytes] = []
            for n, record in enumerate(records, 1):
                batch.append(record + b"\n" if isinstance(record, bytes) else canonical_line(record))
                if len(batch) == 10_000:
                    yield b"".join(batch)
                    batch.clear()
                    if progress is not None:
                        progress(n)
            if batch:
                yield b"".join(batch)

        return self._spool(name, lines()).lines

    def add_file(self, name: str, chunks: Iterable[bytes]) -> None:
        """The replay script or an artifact's bytes (under artifacts/<its sha256>)."""
        entry = self._spool(name, chunks)
        if name.startswith("artifacts/") and name != f"artifacts/{entry.sha256}":
            raise errors.InvalidInput(f"{name} does not hold the bytes its name's sha256 says")

    def manifest(self) -> bytes:
        return canonical_line(
            {
                "schema": SCHEMA_VERSION,
                "tenant": self.tenant,
                "from": None if self.range_from is None else utc(self.range_from),
                "to": utc(self.range_to),
                "exporter": self.exporter_version,
                "audit": self.audit_anchor,
                "files": [self._files[n].as_record() for n in sorted(self._files)],
            }
        )

    def statement(self, manifest: bytes) -> bytes:
        entries = sorted(self._files.values(), key=lambda e: e.path)
        manifest_sha = hashlib.sha256(manifest).hexdigest()
        subjects = [{"name": e.path, "digest": {"sha256": e.sha256}} for e in entries]
        subjects.append({"name": MANIFEST, "digest": {"sha256": manifest_sha}})
        subjects.sort(key=lambda s: str(s["name"]))
        return canonical_line(
            {
                "_type": STATEMENT_TYPE,
                "subject": subjects,
                "predicateType": PREDICATE_TYPE,
                "predicate": {
                    "schema": SCHEMA_VERSION,
                    "tenant": self.tenant,
                    "from": None if self.range_from is None else utc(self.range_from),
                    "to": utc(self.range_to),
                    "manifest": {"sha256": manifest_sha},
                },
            }
        ).rstrip(b"\n")

    def close(self) -> str:
        """Write the archive to `out`; returns its sha256 (hex)."""
        for name in ORDER:
            if name not in self._files:
                self._spool(name, ())
        manifest = self.manifest()
        envelope = bundle_dsse.sign(self.statement(manifest), self.key)
        (self._dir / MANIFEST).write_bytes(manifest)
        (self._dir / ENVELOPE).write_bytes(envelope)
        names = sorted([*self._files, MANIFEST, ENVELOPE])
        hashing = _HashingWriter(self.out)
        mtime = int(self.range_to.timestamp())
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for name in names:
                path = self._dir / name.replace("/", "__")
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = path.stat().st_size, mtime, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
        self.sha256 = hashing.digest.hexdigest()
        return self.sha256


class _HashingWriter:
    """A write-only file that hashes what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.digest = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()
