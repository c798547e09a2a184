"""Audit bundles (issue 13, docs/bundles.md): the one line format every record file of a
bundle uses (RFC 8785 canonical JSON), the one timestamp format, and Ed25519 signing keys
with their fingerprints. Pure: no database, no settings. The archive is bundle_archive, the
envelope bundle_dsse, verification bundle_verify, the replay bundle_replay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.domain import errors

#: json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
#: built once (json.dumps with arguments builds an encoder per call).
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
#: Integers JSON numbers (IEEE 754 doubles, RFC 8785 section 3.2.2.3) hold exactly.
_SAFE_INT = 2**53 - 1


def utc(ts: dt.datetime) -> str:
    """The bundle's one timestamp format: UTC, microseconds always written, a Z suffix."""
    if ts.tzinfo is None:
        raise errors.InvalidInput(f"timestamp {ts.isoformat()} has no time zone")
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> bool:
    """True when json.dumps(sort_keys=True, ensure_ascii=False) writes `value` exactly as
    RFC 8785 does: no floats (their shortest form differs), no integers past 2**53, and no
    object key with a character past U+FFFF (RFC 8785 orders keys by UTF-16 code units,
    Python by code points; the two orders differ only there)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not (k.isascii() or max(map(ord, k)) <= 0xFFFF):
                return False
            tv = type(v)
            if tv is str or v is None or tv is bool:
                continue
            if tv is int:
                if -_SAFE_INT <= v <= _SAFE_INT:
                    continue
                return False
            if (tv is dict or tv is list or tv is tuple) and _plain(v):
                continue
            return False
        return True
    if t is list or t is tuple:
        for v in value:
            tv = type(v)
            if tv is str or v is None or tv is bool:
                continue
            if tv is int:
                if -_SAFE_INT <= v <= _SAFE_INT:
                    continue
                return False
            if (tv is dict or tv is list or tv is tuple) and _plain(v):
                continue
            return False
        return True
    if t is str or value is None or t is bool:
        return True
    if t is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    return False  # floats, subclasses and anything else: the RFC's rules decide


def canonical_line(record: Mapping[str, Any]) -> bytes:
    """One record as RFC 8785 canonical JSON and a newline, with the standard library only.
    A plain record (no floats, no integer past 2**53, no key past U+FFFF) is written by the
    stdlib encoder, which writes exactly RFC 8785 there and is about three times faster than
    the rfc8785 package's pure Python; anything else by `_canonical`, which follows the RFC
    (ECMAScript number form, keys in UTF-16 order). tests/unit/test_bundle_canonical.py
    checks both against the rfc8785 reference. Raises InvalidInput for values JSON cannot
    hold (NaN, infinities, integers past 2**53, bytes, lone surrogates)."""
    try:
        if _plain(record):
            return _ENCODER.encode(record).encode("utf-8") + b"\n"
        return "".join(_canonical(record, [])).encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise errors.InvalidInput(f"a record cannot be written as canonical JSON: {exc}") from None


def _canonical(value: Any, out: list[str]) -> list[str]:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(_ENCODER.encode(str(value)))
    elif isinstance(value, int):
        if not -_SAFE_INT <= value <= _SAFE_INT:
            raise ValueError(f"{value} is past the integers a JSON number holds exactly (2**53)")
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(es_number(value))
    elif isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("object keys must be strings")
        out.append("{")
        for i, k in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_ENCODER.encode(str(k)))
            out.append(":")
            _canonical(value[k], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _canonical(v, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")
    return out


def es_number(x: float) -> str:
    """A double as ECMAScript's Number.prototype.toString writes it (RFC 8785 section 3.2.2.3):
    the shortest digits that round-trip (Python's repr has the same), then fixed notation for
    exponents in [-6, 21) and exponential (1e+21, 1.5e-7) outside."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"{x} is not a JSON number")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es_number(-x)
    mantissa, _, exp = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    stripped = digits.lstrip("0")
    # value = 0.<stripped> * 10**point
    point = len(whole) + int(exp or 0) - (len(digits) - len(stripped))
    stripped = stripped.rstrip("0")
    k = len(stripped)
    if k <= point <= 21:
        return stripped + "0" * (point - k)
    if 0 < point <= 21:
        return stripped[:point] + "." + stripped[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + stripped
    e = point - 1
    sign = "+" if e >= 0 else "-"
    head = stripped[0] + ("." + stripped[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"


# -- keys -----------------------------------------------------------------------------------


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, in hex: how a key is named everywhere."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path_or_pem: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file, or from PEM text itself (as ORCH_SIGNING_KEY
    may hold it). One-line InvalidInput for anything else; the key's bytes never appear in
    the message."""
    text = str(path_or_pem)
    if "-----BEGIN" in text:
        data, where = text.encode(), "the PEM text given"
    else:
        try:
            data, where = Path(text).read_bytes(), text
        except OSError as exc:
            raise errors.InvalidInput(f"cannot read the signing key {text}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise errors.InvalidInput(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.InvalidInput(f"{where} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (SubjectPublicKeyInfo); one-line InvalidInput."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise errors.InvalidInput(f"cannot read the public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise errors.InvalidInput(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise errors.InvalidInput(f"{path} is not an Ed25519 key")
    return key


def write_key_pair(directory: Path) -> tuple[Path, Path, str]:
    """DIR/signing.key (mode 600, created so: never readable by others, not even briefly) and
    DIR/signing.pub. Refuses to overwrite either. Returns both paths and the fingerprint."""
    key_path, pub_path = directory / "signing.key", directory / "signing.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise errors.InvalidInput(f"{p} exists; keys are never overwritten (choose another --out)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key = new_key()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private_pem(key))
        pub_path.write_bytes(public_pem(key.public_key()))
    except OSError as exc:
        raise errors.InvalidInput(f"cannot write the keys to {directory}: {exc.strerror}") from None
    return key_path, pub_path, fingerprint(key.public_key())
