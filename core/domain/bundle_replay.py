"""Replay an Orch audit bundle (issue 13, docs/bundles.md), with nothing but the Python
standard library: re-derive every job's final state from history.jsonl and check it against
jobs.jsonl, re-derive every run's state from its jobs and check it against runs.jsonl, and
re-check the tenant's audit chain from its own hashes. Prints what it checked; exits 1 at
the first disagreement, naming it in one line.

    python3 replay/replay.py BUNDLE.tar.gz        (or a directory the bundle was unpacked to)

Every bundle carries a copy of this file as replay/replay.py; `orch bundle verify` runs the
same checks (this module, core/domain/bundle_replay.py) after it has checked the archive,
the signature and every digest. This script checks consistency, not authenticity: the
signature is checked by `orch bundle verify --pubkey`.

Stdlib only, by contract (import-linter) and by test (it runs under `python3 -I -S`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: Every allowed (from_state, event, to_state) of a job; a job is created by a history row
#: (None, "submit", one of INITIAL). Equal to core.domain.states.TRANSITIONS (a test says so).
TRANSITIONS = frozenset(
    {
        ("pending", "deps_met", "queued"),
        ("pending", "parent_failed", "upstream_failed"),
        ("pending", "skip", "skipped"),
        ("queued", "claim", "leased"),
        ("queued", "deny", "throttled"),
        ("throttled", "due", "queued"),
        ("leased", "ack", "running"),
        ("leased", "lease_expired", "queued"),
        ("running", "succeed", "succeeded"),
        ("running", "fail_retryable", "retrying"),
        ("running", "throttle", "throttled"),
        ("running", "fail_final", "dead_lettered"),
        ("running", "lease_expired", "retrying"),
        ("running", "lease_expired", "dead_lettered"),
        ("retrying", "due", "queued"),
        ("pending", "cancel", "canceled"),
        ("queued", "cancel", "canceled"),
        ("throttled", "cancel", "canceled"),
        ("retrying", "cancel", "canceled"),
        ("running", "cancel", "canceled"),
    }
)
INITIAL = frozenset({"pending", "queued", "throttled"})
#: How a job's end counts for its run (core.domain.dag).
RUN_SUCCEEDED = frozenset({"succeeded"})
RUN_FAILED = frozenset({"dead_lettered", "upstream_failed", "canceled"})
RUN_SKIPPED = frozenset({"skipped"})
GENESIS = "0" * 64
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
RECORD_FILES = (
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


#: A history line as the exporter writes it, when no string in it needs an escape: then the
#: line is canonical JSON by construction, and its fields are read without a JSON parser
#: (five times faster). Any other line goes through json.loads.
_STR = r'"[^"\\\x00-\x1f]*"'
_NSTR = "(?:null|" + _STR + ")"
_INT = "(?:0|-?[1-9][0-9]{0,15})"
HISTORY_LINE = re.compile(
    '{"actor":'
    + _NSTR
    + ',"at":'
    + _STR
    + ',"attempt":(?:null|'
    + _INT
    + '),"error_class":'
    + _NSTR
    + ',"event":('
    + _STR
    + '),"fingerprint":'
    + _NSTR
    + ',"from_state":('
    + _NSTR
    + '),"id":('
    + _INT
    + '),"job_id":('
    + _INT
    + '),"message":'
    + _NSTR
    + ',"reason":'
    + _NSTR
    + ',"to_state":('
    + _STR
    + '),"wait_reason":'
    + _NSTR
    + "}\n"
)
_SAFE_INT = 2**53 - 1


def history_fields(line: bytes) -> dict[str, Any] | None:
    """The replay's fields of a history line that HISTORY_LINE matches (its integers within
    2**53), else None. Raises UnicodeDecodeError for a line that is not UTF-8."""
    m = HISTORY_LINE.fullmatch(line.decode("utf-8"))
    if m is None:
        return None
    event, from_state, row_id, job_id, to_state = m.groups()
    row, job = int(row_id), int(job_id)
    if abs(row) > _SAFE_INT or abs(job) > _SAFE_INT:
        return None
    return {
        "id": row,
        "job_id": job,
        "from_state": None if from_state == "null" else from_state[1:-1],
        "event": event[1:-1],
        "to_state": to_state[1:-1],
    }


def history_records(path: Path) -> Iterator[dict[str, Any]]:
    """history.jsonl's rows, each with at least the fields the replay reads."""
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            try:
                fields = history_fields(line)
                yield fields if fields is not None else json.loads(line)
            except ValueError:
                raise Disagreement(f"{path.name} line {n} is not JSON") from None


class Disagreement(Exception):
    """The bundle disagrees with itself; the message says where, in one line."""


def records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except ValueError:
                raise Disagreement(f"{path.name} line {n} is not JSON") from None


def run_state(jobs: Iterable[tuple[str, bool]], *, cancel_requested: bool) -> str:
    """A run's state from its current jobs' (state, allow_failure), as core.domain.dag.run_state."""
    failed = False
    for state, allow_failure in jobs:
        if state not in RUN_SUCCEEDED | RUN_FAILED | RUN_SKIPPED:
            return "running"
        if state in RUN_FAILED and not allow_failure:
            failed = True
    if cancel_requested:
        return "canceled"
    return "failed" if failed else "succeeded"


def replay_jobs(
    jobs: Iterable[Mapping[str, Any]], history: Iterable[Mapping[str, Any]]
) -> tuple[int, int, dict[int, str], dict[int, int]]:
    """Walk jobs (by id) and history (by job, then id) side by side, re-deriving each job's
    state along allowed transitions only. Returns (jobs, history rows, the state of every
    job of a run by id, and for every run the jobs name its first job). Raises Disagreement."""
    rows = iter(history)
    pending = next(rows, None)
    n_jobs = n_rows = 0
    run_states: dict[int, str] = {}
    runs_named: dict[int, int] = {}
    for job in jobs:
        n_jobs += 1
        job_id = job["id"]
        if pending is not None and pending["job_id"] < job_id:
            raise Disagreement(
                f"history row {pending['id']} names job {pending['job_id']}, which jobs.jsonl does not hold"
            )
        state: str | None = None
        while pending is not None and pending["job_id"] == job_id:
            n_rows += 1
            step = (pending["from_state"], pending["event"], pending["to_state"])
            if state is None:
                if (
                    pending["from_state"] is not None
                    or pending["event"] != "submit"
                    or pending["to_state"] not in INITIAL
                ):
                    raise Disagreement(f"job {job_id}: its first history row {pending['id']} is {step}, not a submit")
            elif pending["from_state"] != state:
                raise Disagreement(
                    f"job {job_id}: history row {pending['id']} leaves {pending['from_state']!r} "
                    f"but the job was {state!r}"
                )
            elif step not in TRANSITIONS:
                raise Disagreement(f"job {job_id}: history row {pending['id']} is {step}, not an allowed transition")
            state = pending["to_state"]
            pending = next(rows, None)
        if state is None:
            raise Disagreement(f"job {job_id} has no history")
        if state != job["state"]:
            raise Disagreement(f"job {job_id}: its history ends in {state!r} but jobs.jsonl says {job['state']!r}")
        if job.get("run_id") is not None:
            run_states[job_id] = state
            runs_named.setdefault(job["run_id"], job_id)
    if pending is not None:
        raise Disagreement(f"history row {pending['id']} names job {pending['job_id']}, which jobs.jsonl does not hold")
    return n_jobs, n_rows, run_states, runs_named


def replay_runs(runs: Iterable[Mapping[str, Any]], job_states: Mapping[int, str]) -> tuple[int, int]:
    """Each run's state from its current jobs' states. A run whose jobs are not all in the
    bundle (it spans the range's edge) is counted, not re-derived. Returns (re-derived,
    spanning the edge). Raises Disagreement, also for a job whose run is not in runs.jsonl."""
    derived = edge = 0
    seen: set[int] = set()
    for run in runs:
        seen.add(run["id"])
        current = [j for j in run["jobs"] if j["current"]]
        if any(j["job_id"] not in job_states for j in current):
            edge += 1
            continue
        state = run_state(
            ((job_states[j["job_id"]], bool(j["allow_failure"])) for j in current),
            cancel_requested=bool(run["cancel_requested"]),
        )
        if state != run["state"]:
            raise Disagreement(f"run {run['id']}: its jobs say {state!r} but runs.jsonl says {run['state']!r}")
        derived += 1
    return derived, edge


def check_job_runs(runs_named: Mapping[int, int], run_ids: set[int]) -> None:
    """Every run a job names is in runs.jsonl."""
    for run_id, job_id in sorted(runs_named.items()):
        if run_id not in run_ids:
            raise Disagreement(f"job {job_id} belongs to run {run_id}, which runs.jsonl does not hold")


def isoformat(ts: str) -> str:
    """A bundle timestamp as the audit log hashes it (datetime.isoformat in UTC)."""
    return dt.datetime.strptime(ts, TIME_FORMAT).replace(tzinfo=dt.UTC).isoformat()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """A chained audit row's hash, as core.ledger.audit.row_hash computes it: sha256 over the
    previous hash and the row's JSON with sorted keys, its details as `hashed_details` (the
    exact text hashed; canonical JSON would write 2.0 as 2)."""
    details = row["hashed_details"]
    if not isinstance(details, str) or json.loads(details) != row["details"]:
        raise Disagreement(f"audit row {row['id']}: hashed_details is not its details")
    body = (
        '{"action":'
        + _dumps(row["action"])
        + ',"at":'
        + _dumps(isoformat(row["at"]))
        + ',"chain":'
        + _dumps(row["chain"])
        + ',"details":'
        + details
        + ',"reason":'
        + _dumps(row["reason"])
        + ',"scopes":'
        + _dumps(sorted(row["scopes"]))
        + ',"seq":'
        + _dumps(row["chain_seq"])
        + ',"subject":'
        + _dumps(row["subject"])
        + ',"target":'
        + _dumps(row["target"])
        + ',"tenant":'
        + _dumps(row["tenant"])
        + ',"ticket":'
        + _dumps(row["ticket"])
        + "}"
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def check_audit(rows: Iterable[Mapping[str, Any]], anchor: Mapping[str, Any]) -> tuple[int, str]:
    """The range's part of the tenant's chain from the manifest's anchor: consecutive places
    from first_seq, each row's prev_hash the hash before it, each hash over its own content.
    Returns (rows, the last hash). Raises Disagreement."""
    prev, seq, n = anchor["anchor_hash"], anchor["first_seq"], 0
    for row in rows:
        n += 1
        if row["chain"] != anchor["chain"]:
            raise Disagreement(f"audit row {row['id']} belongs to chain {row['chain']!r}, not {anchor['chain']!r}")
        if row["chain_seq"] != seq:
            raise Disagreement(f"audit row {row['id']}: rows {seq}..{row['chain_seq'] - 1} of the chain are missing")
        if row["prev_hash"] != prev:
            raise Disagreement(f"audit row {row['id']}: prev_hash does not match the row before it")
        if row_hash(prev, row) != row["hash"]:
            raise Disagreement(f"audit row {row['id']}: its content does not match its hash (it was altered)")
        prev, seq = row["hash"], seq + 1
    if "head_hash" in anchor and anchor["head_hash"] != prev:
        raise Disagreement("the audit chain ends at another hash than the manifest's head_hash (rows were removed)")
    return n, prev


def replay_dir(root: Path, manifest: Mapping[str, Any], say: Callable[[str], None] = print) -> None:
    """Every check on an unpacked bundle. Raises Disagreement at the first failure."""
    n_jobs, n_rows, states, runs_named = replay_jobs(
        records(root / "jobs.jsonl"), history_records(root / "history.jsonl")
    )
    say(f"jobs: {n_jobs} final states re-derived from {n_rows} history rows; all agree with jobs.jsonl")
    run_ids = {r["id"] for r in records(root / "runs.jsonl")}
    check_job_runs(runs_named, run_ids)
    derived, edge = replay_runs(records(root / "runs.jsonl"), states)
    say(
        f"runs: {derived} states re-derived from their jobs; all agree with runs.jsonl"
        + (f" ({edge} run(s) span the range's edge: their jobs outside it are not in the bundle)" if edge else "")
    )
    anchor = manifest.get("audit")
    if anchor is None:
        raise Disagreement("manifest.json names no audit anchor")
    n, last = check_audit(records(root / "audit.jsonl"), anchor)
    say(f"audit: {n} rows of chain {anchor['chain']!r} from seq {anchor['first_seq']} verified; head {last[:16]}")


def _unpack(bundle: Path, into: Path) -> None:
    """Unpack a bundle's regular files with safe names only (never a link, an absolute path
    or '..')."""
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar:
            name = member.name
            if not member.isfile() or name.startswith("/") or ".." in name.split("/"):
                raise Disagreement(f"the archive holds {name!r}, which is not a plain file with a safe name")
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with src, target.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 replay.py BUNDLE.tar.gz | DIRECTORY", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        with tempfile.TemporaryDirectory(prefix="orch-replay-") as tmp:
            root = path
            if not path.is_dir():
                root = Path(tmp)
                _unpack(path, root)
            manifest = json.loads((root / "manifest.json").read_bytes())
            for name in RECORD_FILES:
                if not (root / name).is_file():
                    raise Disagreement(f"the bundle has no {name}")
            replay_dir(root, manifest)
    except Disagreement as exc:
        print(f"replay: disagreement: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError) as exc:
        print(f"replay: cannot replay {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("replay: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
