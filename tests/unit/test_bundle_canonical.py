"""The bundle's line format: canonical_line (the standard library only) writes exactly what
the RFC 8785 reference (the rfc8785 package, a test dependency) writes, on its fast path and
off it, numbers included; and the signing keys' files."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import bundle, errors

ROOT = Path(__file__).resolve().parents[2]

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_text, _values, max_size=6))
def test_equal_to_the_reference(record: dict[str, object]) -> None:
    try:
        expected = rfc8785.dumps(record) + b"\n"
    except rfc8785.CanonicalizationError:
        with pytest.raises(errors.InvalidInput):
            bundle.canonical_line(record)
        return
    assert bundle.canonical_line(record) == expected


@pytest.mark.parametrize(
    "record",
    [
        {"s": 'tab\t nl\n cr\r bs\b ff\f nul\x00 us\x1f del\x7f quote" backslash\\ slash/'},
        {"\ue000": 1, "\U0001f600": 2, "a": 3},  # UTF-16 order puts the emoji's surrogates first
        {"n": 2**53 - 1, "m": -(2**53 - 1)},
        {"f": 1e21, "g": 0.1, "h": -0.0, "i": 5e-324},
        {"deep": [{"b": [1, {"a": None}]}, "é", "\u2028"]},
    ],
)
def test_edge_cases_equal_to_the_reference(record: dict[str, object]) -> None:
    assert bundle.canonical_line(record) == rfc8785.dumps(record) + b"\n"


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_as_ecmascript_writes_them(x: float) -> None:
    assert bundle.es_number(x).encode() == rfc8785.dumps(x)


@pytest.mark.parametrize(
    "x",
    [
        1e21,
        1e20,
        123456789012345680000.0,
        1e-6,
        1e-7,
        1.5e-6,
        5e-324,
        1.7976931348623157e308,
        -0.0,
        100.0,
        0.1,
        -2.5e-9,
    ],
)
def test_number_edges_as_ecmascript_writes_them(x: float) -> None:
    assert bundle.es_number(x).encode() == rfc8785.dumps(x)


def test_verify_needs_only_the_standard_library_and_cryptography() -> None:
    """What `import core.domain.bundle_verify` loads beyond the standard library: cryptography
    (and its binding) and core's own modules, nothing else (no rfc8785, no database)."""
    code = (
        "import sys; before = set(sys.modules); import core.domain.bundle_verify; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stdout))  # a printed list of names
    assert "cryptography" in loaded
    # __mp_main__: multiprocessing's alias of __main__ (the lines step spawns workers).
    assert loaded - {"core", "cryptography", "_cffi_backend", "_openssl", "__mp_main__"} == set(), loaded


def test_fast_path_taken_for_plain_records_only() -> None:
    assert bundle._plain({"id": 1, "at": "x", "tags": ["a", None, True]})
    assert not bundle._plain({"x": 1.5})
    assert not bundle._plain({"x": 2**53})
    assert not bundle._plain({"\U0001f600": 1})


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": b"bytes"}, {"x": "\ud800"}])
def test_values_json_cannot_hold_fail_in_one_line(bad: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidInput, match="canonical JSON"):
        bundle.canonical_line(bad)


def test_utc_has_one_format() -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    assert bundle.utc(dt.datetime(2026, 12, 2, 1, 5, tzinfo=cest)) == "2026-12-01T23:05:00.000000Z"
    with pytest.raises(errors.InvalidInput, match="time zone"):
        bundle.utc(dt.datetime(2026, 12, 2))


def test_key_pair_files_and_fingerprint(tmp_path: Path) -> None:
    key_path, pub_path, fp = bundle.write_key_pair(tmp_path / "k")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = bundle.load_private_key(key_path)
    assert bundle.load_private_key(key_path.read_text()).public_key() == key.public_key()
    pub = bundle.load_public_key(pub_path)
    assert bundle.fingerprint(pub) == fp == bundle.fingerprint(key.public_key())
    message = b"PAE bytes"
    pub.verify(key.sign(message), message)  # raises on a bad signature
    with pytest.raises(errors.InvalidInput, match="never overwritten"):
        bundle.write_key_pair(tmp_path / "k")
    with pytest.raises(errors.InvalidInput, match="not a PEM public key"):
        bundle.load_public_key(key_path)
    with pytest.raises(errors.InvalidInput, match="not an unencrypted PEM private key"):
        bundle.load_private_key(pub_path)
    with pytest.raises(errors.InvalidInput, match="cannot read"):
        bundle.load_private_key(tmp_path / "missing.key")


def test_orch_keys_create(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "keys"
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "keys", "create", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fp = bundle.fingerprint(bundle.load_public_key(out / "signing.pub"))
    assert f"fingerprint sha256:{fp}" in done.stdout
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    again = subprocess.run(
        [sys.executable, "-m", "worker.cli", "keys", "create", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "never overwritten" in again.stderr
    assert "Traceback" not in again.stderr


#: RFC 8785 Appendix B: IEEE 754 doubles (as hex) and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("hex_bits", "text"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(hex_bits: str, text: str) -> None:
    import struct

    (x,) = struct.unpack(">d", bytes.fromhex(hex_bits))
    assert bundle.es_number(x) == text


def test_rfc8785_sorting_example() -> None:
    """Section 3.2.3: property names sorted by their UTF-16 code units."""
    record = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(bundle.canonical_line(record)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
