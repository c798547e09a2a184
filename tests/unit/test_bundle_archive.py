"""The bundle archive: deterministic bytes, the fixed tar metadata, a manifest that matches
the files, and an envelope whose Statement names every file with its digest."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import tarfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.domain import bundle, bundle_archive, bundle_dsse, errors

TO = dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)
FROM = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a test key, fixed for determinism


def _write(jobs: int = 3, key: Ed25519PrivateKey = KEY, artifact: bytes | None = None) -> bytes:
    out = io.BytesIO()
    with bundle_archive.BundleWriter(
        out, tenant="acme", range_from=FROM, range_to=TO, exporter_version="orch 0.1.0", key=key
    ) as w:
        w.add_jsonl("jobs.jsonl", ({"id": i, "state": "succeeded", "payload": {"é": i}} for i in range(1, jobs + 1)))
        w.add_jsonl("history.jsonl", [{"job_id": 1, "seq": 1, "event": "submit"}])
        w.add_file(bundle_archive.REPLAY_PATH, [b"print('replay')\n"])
        if artifact is not None:
            w.add_file(f"artifacts/{hashlib.sha256(artifact).hexdigest()}", [artifact])
    return out.getvalue()


def _members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        got = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            got[m.name] = (m, f.read())
        return got


def test_same_input_same_bytes_and_other_input_other_bytes() -> None:
    a, b = _write(), _write()
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert _write(jobs=4) != a


def test_fixed_metadata_sorted_entries_and_every_record_file() -> None:
    data = _write(artifact=b"bytes of a page")
    assert data[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert gzip.decompress(data)  # one valid gzip stream
    members = _members(data)
    names = list(members)
    assert names == sorted(names)
    assert set(bundle_archive.ORDER) <= set(names)
    assert {bundle_archive.MANIFEST, bundle_archive.ENVELOPE, bundle_archive.REPLAY_PATH} <= set(names)
    for info, _ in members.values():
        assert info.isreg() and info.mode == 0o644 and info.uid == info.gid == 0
        assert info.uname == info.gname == "" and info.mtime == int(TO.timestamp())
    assert members["events.jsonl"][1] == b""  # a record file with no records is still there


def test_manifest_and_statement_cover_every_file() -> None:
    members = _members(_write(artifact=b"x"))
    manifest_bytes = members[bundle_archive.MANIFEST][1]
    manifest = json.loads(manifest_bytes)
    assert manifest_bytes == bundle.canonical_line(manifest)
    assert manifest["tenant"] == "acme" and manifest["from"] == "2026-11-01T00:00:00.000000Z"
    for f in manifest["files"]:
        body = members[f["path"]][1]
        assert f["size"] == len(body) and f["sha256"] == hashlib.sha256(body).hexdigest()
        assert f["lines"] == body.count(b"\n")
    jobs = members["jobs.jsonl"][1].splitlines()
    assert [json.loads(line)["id"] for line in jobs] == [1, 2, 3]
    assert all(line + b"\n" == bundle.canonical_line(json.loads(line)) for line in jobs)

    payload, fp = bundle_dsse.verify(members[bundle_archive.ENVELOPE][1], [KEY.public_key()])
    assert fp == bundle.fingerprint(KEY.public_key())
    statement = json.loads(payload)
    assert statement["_type"] == bundle_archive.STATEMENT_TYPE
    assert statement["predicateType"] == bundle_archive.PREDICATE_TYPE
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert set(subjects) == set(members) - {bundle_archive.ENVELOPE}
    for name, digest in subjects.items():
        assert hashlib.sha256(members[name][1]).hexdigest() == digest
    assert statement["predicate"]["manifest"]["sha256"] == subjects[bundle_archive.MANIFEST]


def test_other_key_other_envelope() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    envelope = _members(_write(key=other))[bundle_archive.ENVELOPE][1]
    with pytest.raises(bundle_dsse.EnvelopeInvalid, match="no signature verifies"):
        bundle_dsse.verify(envelope, [KEY.public_key()])


@pytest.mark.parametrize(
    ("name", "message"),
    [("../etc/passwd", "may hold"), ("/abs.jsonl", "may hold"), ("artifacts/" + "0" * 64, "sha256 says")],
)
def test_bad_names_refused(name: str, message: str) -> None:
    with (
        pytest.raises(errors.InvalidInput, match=message),
        bundle_archive.BundleWriter(
            io.BytesIO(), tenant="t", range_from=None, range_to=TO, exporter_version="v", key=KEY
        ) as w,
    ):
        w.add_file(name, [b"x"])


def test_twice_and_empty_range_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="range is empty"):
        bundle_archive.BundleWriter(io.BytesIO(), tenant="t", range_from=TO, range_to=TO, exporter_version="v", key=KEY)
    with (
        pytest.raises(errors.InvalidInput, match="added twice"),
        bundle_archive.BundleWriter(
            io.BytesIO(), tenant="t", range_from=None, range_to=TO, exporter_version="v", key=KEY
        ) as w,
    ):
        w.add_jsonl("jobs.jsonl", [])
        w.add_jsonl("jobs.jsonl", [])
