"""Step 6 of verify in chunks (core/domain/bundle_lines.py): the same verdicts, with the same
line numbers, whether one process checks a file or worker processes check it in pieces, and
order is checked across the pieces' edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.domain import bundle_lines
from core.domain.bundle import canonical_line

LO, HI = "2026-11-01T00:00:00.000000Z", "2026-11-02T00:00:00.000000Z"


def _jobs(n: int) -> list[bytes]:
    return [
        canonical_line({"id": i, "created_at": "2026-11-01T10:00:00.000000Z", "payload": {"é": i}})
        for i in range(1, n + 1)
    ]


def _check(tmp_path: Path, lines: list[bytes], *, workers: int) -> tuple[int, set[str]]:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(lines))
    with bundle_lines.Checker([("jobs.jsonl", path)], LO, HI, workers=workers, chunk_bytes=500, parallel_bytes=0) as c:
        return c.result()


@pytest.mark.parametrize("workers", [1, 2])
def test_good_lines_in_chunks(tmp_path: Path, workers: int) -> None:
    lines = _jobs(400)
    assert len(bundle_lines.chunks("jobs.jsonl", _write(tmp_path, lines), 500)) > 10
    assert _check(tmp_path, lines, workers=workers) == (400, set())


def _write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "probe.jsonl"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: ls.__setitem__(236, ls[236].replace(b":", b": ", 1)), "jobs.jsonl line 237 is not canonical JSON"),
        (lambda ls: ls.__setitem__(300, ls[299]), "jobs.jsonl line 301 is out of order"),
        (
            lambda ls: ls.__setitem__(99, ls[99].replace(b"2026-11-01T10", b"2026-11-03T10")),
            "jobs.jsonl line 100 lies outside",
        ),
    ],
)
def test_the_first_bad_line_is_named_alike(tmp_path: Path, workers: int, edit: object, message: str) -> None:
    lines = _jobs(400)
    edit(lines)  # type: ignore[operator]
    with pytest.raises(bundle_lines.LineFailure, match=message):
        _check(tmp_path, lines, workers=workers)


def test_order_is_checked_across_chunk_edges(tmp_path: Path) -> None:
    lines = _jobs(400)
    chunks = bundle_lines.chunks("jobs.jsonl", _write(tmp_path, lines), 500)
    # swap the last line of one chunk with the first line of the next: each chunk alone is in order
    first_of_second = sum(1 for line in b"".join(lines)[: chunks[1].start].splitlines())
    lines[first_of_second - 1], lines[first_of_second] = lines[first_of_second], lines[first_of_second - 1]
    with pytest.raises(bundle_lines.LineFailure, match="out of order"):
        _check(tmp_path, lines, workers=2)
