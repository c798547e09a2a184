"""Verifying an audit bundle, fail closed (issue 13, docs/bundles.md). Pure: the standard
library and `cryptography`, no database, no settings.

Eight steps, in this order; the bundle is good only if every one passes, and the first that
fails ends the verification (there is no warning state; any exception is a failure):

1. archive: only regular files with allowed names (no links, no absolute paths, no '..',
   no duplicates), each and all within the size limits; each is unpacked to a private
   temporary directory while its size, lines and sha256 are counted;
2. envelope: manifest.dsse.json parses strictly, with the exact payload type;
3. signature: a signature verifies over the PAE with one of the public keys given;
4. statement: only now is the payload parsed, with the exact _type and predicateType;
5. digests: the files are exactly the subjects, every digest matches, and the manifest
   agrees with the statement and with every file;
6. lines: every line of every record file is canonical JSON, in the file's order, and
   within the range where its time decides membership;
7. audit: the tenant's chain verifies from the manifest's anchor;
8. replay: every job's state and every run's state re-derive from the history.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.domain import bundle_dsse, bundle_lines, bundle_replay
from core.domain.bundle import canonical_line
from core.domain.bundle_archive import (
    ENVELOPE,
    MANIFEST,
    ORDER,
    PREDICATE_TYPE,
    SCHEMA_VERSION,
    STATEMENT_TYPE,
    allowed,
)

STEPS = ("archive", "envelope", "signature", "statement", "digests", "lines", "audit", "replay")


@dataclass(frozen=True)
class Limits:
    member_bytes: int = 16 << 30
    total_bytes: int = 64 << 30
    members: int = 1_000_000
    #: The manifest and the envelope are read whole.
    meta_bytes: int = 64 << 20


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    fingerprint: str | None = None
    manifest: dict[str, Any] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(STEPS) and all(s.ok for s in self.steps)

    @property
    def failure(self) -> str | None:
        bad = next((s for s in self.steps if not s.ok), None)
        return None if bad is None else f"step {STEPS.index(bad.name) + 1} ({bad.name}) failed: {bad.detail}"


class Failed(Exception):
    """A step's failure, in one line."""


@dataclass
class _Unpacked:
    root: Path
    files: dict[str, tuple[int, int, str]]  # name -> (size, lines, sha256)


def _members(tar: tarfile.TarFile, into: Path, limits: Limits, files: dict[str, tuple[int, int, str]]) -> None:
    total = 0
    for member in tar:
        name = member.name
        if member.issym() or member.islnk():
            raise Failed(f"the archive holds a link: {name!r}")
        if not member.isreg():
            raise Failed(f"the archive holds {name!r}, which is not a regular file")
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise Failed(f"the archive holds an unsafe path: {name!r}")
        if name not in (MANIFEST, ENVELOPE) and not allowed(name):
            raise Failed(f"the archive holds {name!r}, which a bundle may not hold")
        if name in files:
            raise Failed(f"the archive holds {name!r} twice")
        limit = limits.meta_bytes if name in (MANIFEST, ENVELOPE) else limits.member_bytes
        if member.size > limit:
            raise Failed(f"{name} is {member.size} bytes, over the limit of {limit}")
        total += member.size
        if total > limits.total_bytes or len(files) >= limits.members:
            raise Failed("the archive is over the size limits")
        src = tar.extractfile(member)
        if src is None:
            raise Failed(f"{name} cannot be read")
        digest, size, lines = hashlib.sha256(), 0, 0
        with src, (into / name.replace("/", "__")).open("wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                out.write(chunk)
        if size != member.size:
            raise Failed(f"{name} is cut short")
        files[name] = (size, lines, digest.hexdigest())


def _unpack(path: Path, into: Path, limits: Limits) -> _Unpacked:
    files: dict[str, tuple[int, int, str]] = {}
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                _members(tar, into, limits, files)
            # The rest of the stream (the end-of-archive blocks): reading to its end is what
            # checks the gzip CRC and length, so a damaged archive never passes as whole.
            while gz.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise Failed(f"{path.name} is not a whole gzip-compressed tar archive ({exc})") from None
    for required in (MANIFEST, ENVELOPE):
        if required not in files:
            raise Failed(f"the archive has no {required}")
    return _Unpacked(into, files)


def _strict_json(data: bytes, what: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise Failed(f"{what} repeats a key")
        return dict(items)

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Failed(f"{what} is not JSON: {exc}") from None


def _statement(payload: bytes) -> dict[str, Any]:
    st = _strict_json(payload, "the statement")
    if not isinstance(st, dict) or set(st) != {"_type", "subject", "predicateType", "predicate"}:
        raise Failed("the statement must hold exactly _type, subject, predicateType and predicate")
    if st["_type"] != STATEMENT_TYPE:
        raise Failed(f"the statement's _type is {st['_type']!r}, not {STATEMENT_TYPE!r}")
    if st["predicateType"] != PREDICATE_TYPE:
        raise Failed(f"the statement's predicateType is {st['predicateType']!r}, not {PREDICATE_TYPE!r}")
    subjects = st["subject"]
    if not isinstance(subjects, list) or not isinstance(st["predicate"], dict):
        raise Failed("the statement's subject must be a list and its predicate an object")
    for s in subjects:
        ok = isinstance(s, dict) and set(s) == {"name", "digest"} and isinstance(s["name"], str)
        if not ok or not isinstance(s["digest"], dict) or set(s["digest"]) != {"sha256"}:
            raise Failed("every subject must hold exactly a name and a sha256 digest")
    return st


def _digests(u: _Unpacked, st: Mapping[str, Any]) -> dict[str, Any]:
    subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
    if len(subjects) != len(st["subject"]):
        raise Failed("the statement names a subject twice")
    held = set(u.files) - {ENVELOPE}
    if missing := sorted(set(subjects) - held):
        raise Failed(f"the archive lacks {missing[0]}, which the statement signs")
    if extra := sorted(held - set(subjects)):
        raise Failed(f"the archive holds {extra[0]}, which the statement does not sign")
    for name, sha in sorted(subjects.items()):
        if u.files[name][2] != sha:
            raise Failed(f"{name} does not match its signed sha256 (it was changed)")
    raw = (u.root / MANIFEST).read_bytes()
    manifest = _strict_json(raw, MANIFEST)
    if not isinstance(manifest, dict) or canonical_line(manifest) != raw:
        raise Failed("manifest.json is not one line of canonical JSON")
    pred = st["predicate"]
    if manifest.get("schema") != SCHEMA_VERSION or pred.get("schema") != SCHEMA_VERSION:
        raise Failed(f"the bundle's schema is {manifest.get('schema')!r}, not {SCHEMA_VERSION!r}")
    for k in ("tenant", "from", "to"):
        if manifest.get(k) != pred.get(k):
            raise Failed(f"the manifest's {k} differs from the signed statement's")
    if pred.get("manifest") != {"sha256": u.files[MANIFEST][2]}:
        raise Failed("the signed statement names another manifest")
    listed = {f["path"]: (f["size"], f["lines"], f["sha256"]) for f in manifest.get("files", [])}
    actual = {n: v for n, v in u.files.items() if n not in (MANIFEST, ENVELOPE)}
    if listed != actual:
        diff = sorted(set(listed.items()) ^ set(actual.items()))
        raise Failed(f"the manifest's list of files disagrees with the archive at {diff[0][0]}")
    if missing := [n for n in ORDER if n not in actual]:
        raise Failed(f"the bundle has no {missing[0]}")
    for name, (_size, _lines, sha) in actual.items():
        if name.startswith("artifacts/") and name != f"artifacts/{sha}":
            raise Failed(f"{name} does not hold the bytes its name says")
    return manifest


def _artifacts_referenced(u: _Unpacked, shas: set[str]) -> None:
    for name in u.files:
        if name.startswith("artifacts/") and name.removeprefix("artifacts/") not in shas:
            raise Failed(f"{name} is not the content of any artifact in artifacts.jsonl")


def verify(
    path: Path,
    keys: Sequence[Ed25519PublicKey],
    *,
    limits: Limits = Limits(),
    progress: Callable[[str, int], None] | None = None,
    into: Path | None = None,
) -> Report:
    """Every step, in order, until one fails. Never raises for a bad bundle: the report says.
    The files are unpacked to a temporary directory removed at the end, or to `into` (an
    empty directory the caller owns and removes), where an import reads exactly the bytes
    that were verified (names with '/' as '__')."""
    report = Report()
    tmp = into if into is not None else Path(tempfile.mkdtemp(prefix="orch-verify-"))
    state: dict[str, Any] = {}

    def archive() -> str:
        state["u"] = _unpack(path, tmp, limits)
        return f"{len(state['u'].files)} regular files, names and sizes allowed"

    def envelope() -> str:
        try:
            bundle_dsse.parse((tmp / ENVELOPE).read_bytes())
        except bundle_dsse.EnvelopeInvalid as exc:
            raise Failed(str(exc)) from None
        return f"payload type {bundle_dsse.IN_TOTO}"

    def signature() -> str:
        try:
            payload, fp = bundle_dsse.verify((tmp / ENVELOPE).read_bytes(), keys)
        except bundle_dsse.EnvelopeInvalid as exc:
            raise Failed(str(exc)) from None
        state["payload"], report.fingerprint = payload, fp
        return f"Ed25519 signature verifies with key sha256:{fp}"

    def statement() -> str:
        state["st"] = _statement(state["payload"])
        return f"in-toto Statement v1 with {len(state['st']['subject'])} subjects"

    def digests() -> str:
        report.manifest = state["m"] = _digests(state["u"], state["st"])
        return f"every file is a subject and matches its sha256 (tenant {state['m']['tenant']!r})"

    def lines() -> str:
        m = state["m"]
        files = [(name, tmp / name) for name in ORDER]
        with bundle_lines.Checker(files, m["from"], m["to"]) as checker:
            # While worker processes check the lines, this one replays (step 8's verdict,
            # kept until its turn: a later step never speaks before an earlier one).
            try:
                bundle_replay.replay_dir(tmp, m, say=report.lines.append)
                state["replay"] = None
            except Exception as exc:
                state["replay"] = exc
            try:
                n, shas = checker.result(progress)
            except bundle_lines.LineFailure as exc:
                raise Failed(str(exc)) from None
        _artifacts_referenced(state["u"], shas)
        return f"{n} lines canonical, in order and within the range"

    def audit() -> str:
        anchor = state["m"].get("audit")
        if not isinstance(anchor, dict):
            raise Failed("the manifest names no audit anchor")
        n, head = bundle_replay.check_audit(bundle_replay.records(tmp / "audit.jsonl"), anchor)
        return f"{n} rows of chain {anchor['chain']!r} verified from seq {anchor['first_seq']}; head {head[:16]}"

    def replay() -> str:
        if state["replay"] is not None:
            raise state["replay"]
        return "; ".join(report.lines)

    try:
        for name, fn in zip(
            STEPS, (archive, envelope, signature, statement, digests, lines, audit, replay), strict=True
        ):
            try:
                detail = fn()
            except Failed as exc:
                report.steps.append(Step(name, False, str(exc)))
                break
            except bundle_replay.Disagreement as exc:
                report.steps.append(Step(name, False, str(exc)))
                break
            except Exception as exc:
                report.steps.append(Step(name, False, f"{type(exc).__name__}: {exc}"))
                break
            report.steps.append(Step(name, True, detail))
    finally:
        if into is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return report
