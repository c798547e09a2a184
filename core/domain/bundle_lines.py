"""Step 6 of verifying a bundle (core/domain/bundle_verify.py): every line of every record
file is canonical JSON, the file is in its order, and the records whose time decides
membership lie in the range. Pure: the standard library only, plus core.domain.bundle.

Re-encoding every line is most of a verification's work (about 6 µs a history line, 15 a
job line here), so large files are cut into chunks at line ends and checked by worker
processes (one per core, plain child processes: safe under a threaded caller such as the
console), while
the caller goes on with other work (the replay). Each chunk reports its first and last
order keys, so order across chunk edges is checked too; the first failing line of the
earliest file is the one reported, with its line number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from core.domain import errors
from core.domain.bundle import canonical_line
from core.domain.bundle_replay import history_fields

#: Each record file's order (strictly increasing) and the field that must lie in the range.
ORDER_KEYS: dict[str, tuple[Callable[[Mapping[str, Any]], Any], str | None]] = {
    "jobs.jsonl": (lambda r: r["id"], "created_at"),
    "history.jsonl": (lambda r: (r["job_id"], r["id"]), None),
    "runs.jsonl": (lambda r: (r["created_at"], r["id"]), None),
    "throttles.jsonl": (lambda r: (r["at"], r["kind"], r["id"]), "at"),
    "audit.jsonl": (lambda r: (r["at"], r["id"]), "at"),
    "artifacts.jsonl": (lambda r: (r["created_at"], r["id"]), None),
    "incidents.jsonl": (lambda r: (r["opened_at"], r["id"]), "opened_at"),
    "events.jsonl": (lambda r: (r["at"], r["id"]), "at"),
    "sources.jsonl": (lambda r: (r["created_at"], r["id"]), None),
}
CHUNK_BYTES = 16 << 20
#: Below this many bytes of records in all, the caller's process checks them alone.
PARALLEL_BYTES = 64 << 20


class LineFailure(Exception):
    """A line that is not canonical, out of order or outside the range, in one sentence."""


@dataclass(frozen=True)
class Chunk:
    name: str
    path: str
    start: int
    end: int


@dataclass(frozen=True)
class ChunkResult:
    lines: int
    first: Any
    last: Any
    #: (the line's index within the chunk, from 1; what is wrong with it)
    failure: tuple[int, str] | None
    artifact_shas: tuple[str, ...]


def check_chunk(chunk: Chunk, lo: str | None, hi: str) -> ChunkResult:
    """Check the lines of one chunk (run in a worker process, or in the caller's)."""
    order_key, ranged = ORDER_KEYS[chunk.name]
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    first: Any = None
    last: Any = None
    shas: list[str] = []
    n = 0
    history = chunk.name == "history.jsonl"
    for n, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            # A history line the exporter's shape matches is canonical by construction.
            record: Any = history_fields(line) if history else None
            if record is None:
                record = json.loads(line)
                good = isinstance(record, dict) and canonical_line(record) == line
            else:
                good = True
        except (ValueError, errors.InvalidInput):
            good = False
        if not good:
            return ChunkResult(n, first, last, (n, "is not canonical JSON"), ())
        try:
            key = order_key(record)
            when = record[ranged] if ranged else None
        except (KeyError, TypeError):
            return ChunkResult(n, first, last, (n, "lacks the fields that order it"), ())
        if last is not None and not key > last:
            return ChunkResult(n, first, last, (n, "is out of order"), ())
        if ranged and not (isinstance(when, str) and (lo is None or when >= lo) and when < hi):
            return ChunkResult(n, first, last, (n, "lies outside the bundle's range"), ())
        if chunk.name == "artifacts.jsonl":
            shas.append(str(record.get("sha256")))
        if first is None:
            first = key
        last = key
    return ChunkResult(n, first, last, None, tuple(shas))


def chunks(name: str, path: Path, size: int = CHUNK_BYTES) -> list[Chunk]:
    """The file cut at line ends into pieces of about `size` bytes."""
    total = path.stat().st_size
    out, start = [], 0
    with path.open("rb") as f:
        while start < total:
            end = min(start + size, total)
            if end < total:
                f.seek(end)
                rest = f.readline()  # to the end of the line `end` falls in
                end += len(rest)
            out.append(Chunk(name, str(path), start, end))
            start = end
    return out


class Checker:
    """`with Checker(files, lo, hi) as c: ...other work...; total, shas = c.result()`: the
    chunks are checked by worker processes while the block goes on, when the records are
    large enough for that to pay; else by result() itself.

    A worker is `python -m core.domain.bundle_lines`, a plain child process that reads its
    chunks as JSON lines on stdin and writes one result per chunk on stdout, in order. Not
    multiprocessing: a spawned child re-runs the parent's __main__ (a Streamlit page, under
    AppTest), and a forked one inherits the parent's threads' locks."""

    def __init__(
        self,
        files: Sequence[tuple[str, Path]],
        lo: str | None,
        hi: str,
        *,
        workers: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        parallel_bytes: int = PARALLEL_BYTES,
    ) -> None:
        self.lo, self.hi = lo, hi
        self.plan = [(name, chunks(name, path, chunk_bytes)) for name, path in files]
        total = sum(c.end - c.start for _, cs in self.plan for c in cs)
        n = min(2, os.cpu_count() or 1) if workers is None else workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_of: dict[Chunk, int] = {}
        if n > 1 and total >= parallel_bytes:
            every = [c for _, cs in self.plan for c in cs]
            root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
            for w in range(n):
                mine = every[w::n]
                for c in mine:
                    self.worker_of[c] = w
                proc = subprocess.Popen(
                    [sys.executable, "-m", "core.domain.bundle_lines"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                assert proc.stdin is not None
                spec = {"lo": lo, "hi": hi, "chunks": [[c.name, c.path, c.start, c.end] for c in mine]}
                proc.stdin.write(json.dumps(spec).encode() + b"\n")
                proc.stdin.close()
                self.procs.append(proc)

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def _from_worker(self, c: Chunk) -> ChunkResult:
        proc = self.procs[self.worker_of[c]]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            err = (proc.stderr.read() if proc.stderr is not None else b"").decode(errors="replace").strip()
            last = err.splitlines()[-1] if err else f"exit code {proc.returncode}"
            raise LineFailure(f"a worker checking {c.name} failed: {last}")
        r = json.loads(line)
        return ChunkResult(
            r["lines"],
            _tuples(r["first"]),
            _tuples(r["last"]),
            None if r["failure"] is None else tuple(r["failure"]),
            tuple(r["shas"]),
        )

    def result(self, progress: Callable[[str, int], None] | None = None) -> tuple[int, set[str]]:
        """(lines checked, the artifacts' sha256s). Raises LineFailure at the first bad line."""
        total, shas = 0, set[str]()
        for name, cs in self.plan:
            done, last = 0, None
            for c in cs:
                r = self._from_worker(c) if c in self.worker_of else check_chunk(c, self.lo, self.hi)
                if r.failure is not None:
                    raise LineFailure(f"{name} line {done + r.failure[0]} {r.failure[1]}")
                if last is not None and r.first is not None and not r.first > last:
                    raise LineFailure(f"{name} line {done + 1} is out of order")
                done += r.lines
                last = r.last if r.last is not None else last
                shas.update(r.artifact_shas)
                if progress is not None:
                    progress(name, done)
            total += done
        return total, shas


def _tuples(value: Any) -> Any:
    """An order key back from JSON: lists become tuples again."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _worker() -> None:
    """A worker process: chunks from stdin, one result line per chunk on stdout."""
    spec = json.loads(sys.stdin.buffer.readline())
    out = sys.stdout.buffer
    for name, path, start, end in spec["chunks"]:
        r = check_chunk(Chunk(name, path, start, end), spec["lo"], spec["hi"])
        out.write(
            json.dumps(
                {"lines": r.lines, "first": r.first, "last": r.last, "failure": r.failure, "shas": r.artifact_shas}
            ).encode()
            + b"\n"
        )
        out.flush()


if __name__ == "__main__":
    _worker()
