"""Step 6 of verify in chunks (core/domain/bundle_lines.py): the same verdicts, with the same
line numbers, whether one process checks a file or worker processes check it in pieces, and
order is checked across the pieces' edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.domain import bundle_lines, errors
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


def test_the_history_shape_is_canonical_exactly_when_the_reference_says_so() -> None:
    """history_fields' fast path (a regex of the exporter's shape) accepts a line only if
    canonical_line writes that very line, and reads the fields json.loads reads."""
    import json

    from core.domain.bundle_replay import history_fields

    base = {
        "actor": "w-1",
        "at": "2026-11-01T10:00:00.000000Z",
        "attempt": 1,
        "error_class": None,
        "event": "claim",
        "fingerprint": None,
        "from_state": "queued",
        "id": 7,
        "job_id": 3,
        "message": None,
        "reason": None,
        "to_state": "leased",
        "wait_reason": None,
    }
    good = canonical_line(base)
    fields = history_fields(good)
    assert fields == {k: base[k] for k in ("id", "job_id", "from_state", "event", "to_state")}
    assert history_fields(canonical_line({**base, "from_state": None, "event": "submit"})) is not None
    # Lines the fast path refuses: each goes to json.loads and the full check instead.
    refused = [
        good.replace(b'"id":7', b'"id":-0'),
        good.replace(b'"id":7', b'"id":07'),
        good.replace(b'"id":7', b'"id":9007199254740992'),
        good.replace(b"w-1", b"w\\u002d1"),  # an escape the canonical form does not use
        good.replace(b":", b": ", 1),
        good.replace(b'"w-1"', b'"w\\"1"'),  # strings with escapes always take the full path
        canonical_line({**base, "actor": "tab\tin"}),
        good.rstrip(b"\n"),
        good.replace(b',"wait_reason":null', b""),
    ]
    for line in refused:
        assert history_fields(line) is None, line
    # and whatever it refuses, the full check decides as before: the lines with a quote or a
    # tab (which need an escape) and the line of another shape are canonical, the rest not
    canonical = {refused[5], refused[6], refused[8]}
    for line in refused:
        try:
            full = canonical_line(json.loads(line)) == line
        except (ValueError, errors.InvalidInput):
            full = False
        assert full == (line in canonical), line


def test_a_worker_that_dies_fails_the_check(tmp_path: Path) -> None:
    """Fail closed: a worker that cannot finish its chunks is a failure, never a pass."""
    path = _write(tmp_path, _jobs(400))
    with bundle_lines.Checker([("jobs.jsonl", path)], LO, HI, workers=2, chunk_bytes=500, parallel_bytes=0) as c:
        for proc in c.procs:
            proc.kill()
        with pytest.raises(bundle_lines.LineFailure, match=r"a worker checking jobs\.jsonl failed"):
            c.result()
