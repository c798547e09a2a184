"""The audit bundle test vectors (issue 13): one good bundle and one bad bundle per branch of
`orch bundle verify`, each failing at a named step. Regenerate with

    .venv/bin/python -m tests.vectors.bundles.make

The key is derived from a published seed (it signs test vectors only: not a secret), and
Ed25519 signatures are deterministic, so the files come out the same every time;
tests/unit/test_bundle_vectors.py checks that the shipped files are what this writes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.domain import bundle, bundle_archive, bundle_dsse, bundle_replay

HERE = Path(__file__).resolve().parent
FROM = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
TO = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"orch bundle test vectors: not a secret").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"orch bundle test vectors: another key").digest())


def _ts(minute: int, second: int = 0) -> str:
    return bundle.utc(FROM + dt.timedelta(minutes=minute, seconds=second))


def _audit_rows() -> list[dict[str, Any]]:
    rows, prev = [], bundle_replay.GENESIS
    for seq, (action, details) in enumerate([("source.add", {"rate": 2.0}), ("pause", {"released": 0})], 1):
        details_text = json.dumps(details, sort_keys=True, separators=(",", ":"))
        row = {
            "id": seq,
            "at": _ts(seq),
            "chain": "acme",
            "chain_seq": seq,
            "subject": "local:vectors",
            "scopes": ["orch:operate"],
            "action": action,
            "target": "source feed",
            "tenant": "acme",
            "reason": "test vector",
            "ticket": None,
            "details": details,
            "hashed_details": details_text,
            "prev_hash": prev,
        }
        row["hash"] = bundle_replay.row_hash(prev, row)
        prev = row["hash"]
        rows.append(row)
    return rows


def records() -> dict[str, list[dict[str, Any]]]:
    """The good bundle's records: two jobs (one of a run), their history, the run, the chain."""
    job = {"source_id": None, "payload": {"q": "é ✓"}, "attempt": 1, "result": None}
    history = []
    steps = [(None, "submit", "queued"), ("queued", "claim", "leased"), ("leased", "ack", "running")]
    hid = 0
    for job_id, last in ((1, ("running", "succeed", "succeeded")), (2, ("running", "fail_final", "dead_lettered"))):
        for n, (f, e, t) in enumerate([*steps, last]):
            hid += 1
            history.append(
                {"id": hid, "job_id": job_id, "from_state": f, "event": e, "to_state": t, "at": _ts(job_id, n)}
            )
    run_jobs = [{"job_id": 2, "key": "a", "allow_failure": False, "current": True}]
    return {
        "jobs.jsonl": [
            {**job, "id": 1, "run_id": None, "state": "succeeded", "created_at": _ts(1)},
            {**job, "id": 2, "run_id": 7, "state": "dead_lettered", "created_at": _ts(2)},
        ],
        "history.jsonl": history,
        "runs.jsonl": [
            {"id": 7, "created_at": _ts(2), "state": "failed", "cancel_requested": False, "jobs": run_jobs, "edges": []}
        ],
        "audit.jsonl": _audit_rows(),
        "throttles.jsonl": [{"kind": "rate", "id": 1, "at": _ts(3), "old_rate": 5.0, "new_rate": 2.5}],
    }


def anchor(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"chain": "acme", "anchor_hash": bundle_replay.GENESIS, "first_seq": 1, "head_hash": rows[-1]["hash"]}


def pack(
    files: dict[str, list[dict[str, Any]]] | None = None,
    *,
    raw: dict[str, bytes] | None = None,
    key: Ed25519PrivateKey = KEY,
    sign: Callable[[bytes, Ed25519PrivateKey, Callable[..., bytes]], bytes] | None = None,
) -> bytes:
    """A bundle of these records (canonical lines), or of raw file contents (anything), signed."""
    files = records() if files is None else files
    out = io.BytesIO()
    w = bundle_archive.BundleWriter(
        out,
        tenant="acme",
        range_from=FROM,
        range_to=TO,
        exporter_version="orch test vectors",
        key=key,
        audit_anchor=anchor(files["audit.jsonl"]),
    )
    with w:
        for name, recs in files.items():
            if raw and name in raw:
                continue
            w.add_jsonl(name, recs)
        for name, data in (raw or {}).items():
            w._spool(name, [data])  # the bytes as given: how a bad line gets signed
        w.add_file(bundle_archive.REPLAY_PATH, [Path(bundle_replay.__file__).read_bytes()])
        if sign is not None:
            original = bundle_dsse.sign
            bundle_archive.bundle_dsse.sign = lambda p, k: sign(p, k, original)  # type: ignore[assignment]
            try:
                w.close()
            finally:
                bundle_archive.bundle_dsse.sign = original  # type: ignore[assignment]
    return out.getvalue()


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]  # type: ignore[union-attr]


def retar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, int(TO.timestamp()), 0o644, kind
    return info


def _edit(data: bytes, name: str, change: Callable[[bytes], bytes]) -> bytes:
    out = []
    for info, body in _members(data):
        if info.name == name:
            body = change(body)
            info.size = len(body)
        out.append((info, body))
    return retar(out)


def _lines(name: str, change: Callable[[list[bytes]], list[bytes]]) -> bytes:
    recs = records()
    lines = [bundle.canonical_line(r) for r in recs[name]]
    return pack(recs, raw={name: b"".join(change(lines))})


def _payload_type(payload: bytes, key: Ed25519PrivateKey, real_sign: Callable[..., bytes]) -> bytes:
    return real_sign(payload, key, "application/json")


def _statement_type(payload: bytes, key: Ed25519PrivateKey, real_sign: Callable[..., bytes]) -> bytes:
    st = json.loads(payload)
    st["predicateType"] = "https://example.com/other/v1"
    return real_sign(json.dumps(st).encode(), key)


def vectors() -> dict[str, tuple[bytes, str, str]]:
    """{file name: (bytes, the step that fails, a fragment of its message)}; "good.tar.gz" passes."""
    good = pack()
    other_good = pack({**records(), "throttles.jsonl": []})
    other_sig = next(b for m, b in _members(other_good) if m.name == bundle_archive.ENVELOPE)
    recs = records()
    tampered_audit = [dict(r) for r in recs["audit.jsonl"]]
    tampered_audit[1]["reason"] = "rewritten"
    wrong_state = [dict(j) for j in recs["jobs.jsonl"]]
    wrong_state[1]["state"] = "succeeded"
    good_members = _members(good)
    mid = len(good) // 2
    return {
        "good.tar.gz": (good, "", ""),
        "tampered-archive-byte.tar.gz": (good[:mid] + bytes([good[mid] ^ 0x01]) + good[mid + 1 :], "archive", ""),
        "tampered-record-byte.tar.gz": (
            _edit(good, "jobs.jsonl", lambda b: b.replace(b"succeeded", b"succeedeD")),
            "digests",
            "jobs.jsonl does not match",
        ),
        "removed-file.tar.gz": (
            retar([(m, b) for m, b in good_members if m.name != "history.jsonl"]),
            "digests",
            "lacks history.jsonl",
        ),
        "added-file.tar.gz": (
            retar([*good_members, (_info("artifacts/" + hashlib.sha256(b"x").hexdigest(), 1), b"x")]),
            "digests",
            "does not sign",
        ),
        "disallowed-name.tar.gz": (retar([*good_members, (_info("notes.txt", 2), b"hi")]), "archive", "may not hold"),
        "swapped-signature.tar.gz": (
            _edit(good, bundle_archive.ENVELOPE, lambda b: _swap_sig(b, other_sig)),
            "signature",
            "no signature verifies",
        ),
        "other-key.tar.gz": (pack(key=OTHER_KEY), "signature", "no signature verifies"),
        "wrong-payload-type.tar.gz": (pack(sign=_payload_type), "envelope", "payload type"),
        "wrong-predicate-type.tar.gz": (pack(sign=_statement_type), "statement", "predicateType"),
        "non-canonical-line.tar.gz": (
            _lines("jobs.jsonl", lambda ls: [ls[0].replace(b":", b": ", 1), *ls[1:]]),
            "lines",
            "jobs.jsonl line 1 is not canonical",
        ),
        "reordered-lines.tar.gz": (
            _lines("history.jsonl", lambda ls: [ls[1], ls[0], *ls[2:]]),
            "lines",
            "history.jsonl line 2 is out of order",
        ),
        "dotdot-entry.tar.gz": (retar([*good_members, (_info("../evil.jsonl", 2), b"{}")]), "archive", "unsafe path"),
        "symlink.tar.gz": (retar([*good_members, (_link("jobs2.jsonl"), b"")]), "archive", "link"),
        "oversized-entry.tar.gz": (_oversized(good_members), "archive", "over the limit"),
        "duplicate-entry.tar.gz": (retar([*good_members, good_members[-1]]), "archive", "twice"),
        "altered-audit-row.tar.gz": (pack({**recs, "audit.jsonl": tampered_audit}), "audit", "does not match its hash"),
        "replay-disagrees.tar.gz": (pack({**recs, "jobs.jsonl": wrong_state}), "replay", "job 2"),
    }


def _swap_sig(envelope: bytes, other: bytes) -> bytes:
    env, donor = json.loads(envelope), json.loads(other)
    env["signatures"] = donor["signatures"]
    return json.dumps(env, sort_keys=True, separators=(",", ":")).encode()


def _link(name: str) -> tarfile.TarInfo:
    info = _info(name, 0, tarfile.SYMTYPE)
    info.linkname = "/etc/passwd"
    return info


def _oversized(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A member whose header claims 17 GiB (past the 16 GiB limit) and whose body is cut
    short: verify refuses it from the header, before reading a byte of it."""
    body = b"".join(
        info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512) for info, data in members
    )
    big = _info("artifacts/" + "a" * 64, 17 << 30)
    body += big.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 1024
    return gzip.compress(body, mtime=0)


def write(directory: Path = HERE) -> None:
    index = {}
    for name, (data, step, fragment) in vectors().items():
        (directory / name).write_bytes(data)
        index[name] = {"fails_at": step or None, "message": fragment}
    (directory / "vectors.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (directory / "signing.pub").write_bytes(bundle.public_pem(KEY.public_key()))


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
