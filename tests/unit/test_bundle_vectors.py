"""The shipped bundle test vectors (tests/vectors/bundles): the good one passes all eight
steps of verify; every bad one fails, at the step that owns its branch, with its message.
Also: the vectors are what the generator writes today, the replay script runs on the
standard library alone, and its rules are the product's rules."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.domain import bundle, bundle_replay, bundle_verify, dag, states
from core.ledger import audit
from tests.vectors.bundles import make

VECTORS = Path(make.__file__).resolve().parent
INDEX = json.loads((VECTORS / "vectors.json").read_text())
KEYS = [bundle.load_public_key(VECTORS / "signing.pub")]
#: The branches issue 13 names, each shipped as a vector.
NAMED = {
    "tampered-record-byte.tar.gz",
    "tampered-archive-byte.tar.gz",
    "removed-file.tar.gz",
    "added-file.tar.gz",
    "swapped-signature.tar.gz",
    "other-key.tar.gz",
    "wrong-payload-type.tar.gz",
    "non-canonical-line.tar.gz",
    "reordered-lines.tar.gz",
    "dotdot-entry.tar.gz",
    "symlink.tar.gz",
    "oversized-entry.tar.gz",
}


def test_the_good_bundle_passes_every_step() -> None:
    report = bundle_verify.verify(VECTORS / "good.tar.gz", KEYS)
    assert report.ok, report.failure
    assert [s.name for s in report.steps] == list(bundle_verify.STEPS)
    assert report.fingerprint == bundle.fingerprint(make.KEY.public_key())


@pytest.mark.parametrize("name", sorted(n for n in INDEX if n != "good.tar.gz"))
def test_each_bad_bundle_fails_at_its_step(name: str) -> None:
    expected = INDEX[name]
    report = bundle_verify.verify(VECTORS / name, KEYS)
    assert not report.ok
    failed = [s for s in report.steps if not s.ok]
    assert len(failed) == 1 and failed[0] is report.steps[-1], "the first failure ends the verification"
    assert failed[0].name == expected["fails_at"], report.failure
    assert expected["message"] in failed[0].detail
    assert report.failure is not None and "\n" not in report.failure


def test_every_branch_the_issue_names_has_a_vector() -> None:
    assert set(INDEX) >= NAMED
    steps = {v["fails_at"] for v in INDEX.values() if v["fails_at"]}
    assert steps == set(bundle_verify.STEPS), "every step has a vector that fails there"


def test_no_key_and_a_missing_file_fail_closed(tmp_path: Path) -> None:
    assert bundle_verify.verify(VECTORS / "good.tar.gz", []).failure.startswith("step 3 (signature)")  # type: ignore[union-attr]
    missing = bundle_verify.verify(tmp_path / "nothing.tar.gz", KEYS)
    assert not missing.ok and missing.steps[0].name == "archive"


def test_the_shipped_vectors_are_what_the_generator_writes(tmp_path: Path) -> None:
    make.write(tmp_path)
    for name in [*INDEX, "vectors.json", "signing.pub"]:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), (
            f"{name} is stale: run .venv/bin/python -m tests.vectors.bundles.make"
        )


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(bundle_replay.__file__)
    # -I -S: no site-packages, no environment, no current directory: the standard library only.
    return subprocess.run([sys.executable, "-I", "-S", str(script), *args], capture_output=True, text=True, timeout=60)


def test_the_replay_script_runs_on_the_standard_library_alone() -> None:
    good = _replay(str(VECTORS / "good.tar.gz"))
    assert good.returncode == 0, good.stderr
    assert "jobs: 2 final states re-derived from 8 history rows" in good.stdout
    assert "every check passed" in good.stdout
    bad = _replay(str(VECTORS / "replay-disagrees.tar.gz"))
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "replay: disagreement: job 2: its history ends in 'dead_lettered' but jobs.jsonl says 'succeeded'"
    )
    altered = _replay(str(VECTORS / "altered-audit-row.tar.gz"))
    assert altered.returncode == 1 and "does not match its hash" in altered.stderr
    unsafe = _replay(str(VECTORS / "dotdot-entry.tar.gz"))
    assert unsafe.returncode == 1 and "safe name" in unsafe.stderr


def test_the_replay_knows_the_products_transitions_and_run_rule() -> None:
    product = {(t.from_state.value, t.event.value, t.to_state.value) for t in states.TRANSITIONS}
    assert product == bundle_replay.TRANSITIONS
    assert {s.value for s in states.INITIAL} == bundle_replay.INITIAL
    assert {s.value for s in dag.FAILED} == bundle_replay.RUN_FAILED
    assert {s.value for s in dag.SUCCEEDED} == bundle_replay.RUN_SUCCEEDED
    assert {s.value for s in dag.SKIPPED} == bundle_replay.RUN_SKIPPED
    for n in (1, 2):
        for combo in itertools.product(list(states.State), [False, True], repeat=n):
            jobs = [(combo[i], combo[i + 1]) for i in range(0, len(combo), 2)]
            for cancel in (False, True):
                want = dag.run_state(jobs, cancel_requested=cancel).value
                got = bundle_replay.run_state([(s.value, f) for s, f in jobs], cancel_requested=cancel)  # type: ignore[attr-defined]
                assert got == want


@pytest.mark.parametrize("details", [{}, {"rate": 2.0, "n": 3}, {"nested": {"é": ["✓", None, True]}}, {"big": 1e21}])
def test_the_replay_hashes_an_audit_row_as_the_ledger_does(details: dict[str, object]) -> None:
    import datetime as dt

    at = dt.datetime(2026, 12, 3, 7, 0, 0, 123000, tzinfo=dt.UTC)
    entry = audit.AuditEntry(
        "local:x", ["orch:operate", "orch:read"], "pause", "tenant acme", "acme", "why", None, details
    )
    want = audit.row_hash("ab" * 32, at, entry, chain="acme", seq=4)
    row = {
        "id": 9,
        "at": bundle.utc(at),
        "subject": entry.subject,
        "scopes": list(entry.scopes),
        "action": entry.action,
        "target": entry.target,
        "tenant": entry.tenant,
        "reason": entry.reason,
        "ticket": entry.ticket,
        "details": json.loads(json.dumps(details)),
        "hashed_details": json.dumps(details, sort_keys=True, separators=(",", ":"), default=str),
        "chain": "acme",
        "chain_seq": 4,
    }
    assert bundle_replay.row_hash("ab" * 32, row) == want


def test_the_replay_knows_the_bundles_record_files() -> None:
    """bundle_replay keeps its own copy of the record files (it may import nothing of core)."""
    from core.domain import bundle_archive

    assert bundle_replay.RECORD_FILES == bundle_archive.ORDER
