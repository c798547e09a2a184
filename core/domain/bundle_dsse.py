"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1) signed with
Ed25519: what a bundle's manifest.dsse.json will be (issue 13). Pure: no database.

The signature covers PAE(payloadType, payload), never the JSON of the envelope. Verifying
parses the envelope strictly (exactly the keys the spec names, strict base64, the one payload
type expected) and accepts it only when a signature verifies with one of the keys given: a
signature's `keyid` is a hint for people, never used to choose or to accept a key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.domain import errors
from core.domain.bundle import fingerprint

#: The in-toto Statement's media type: the payload type of a bundle's envelope.
IN_TOTO = "application/vnd.in-toto+json"


class EnvelopeInvalid(errors.InvalidInput):
    """The envelope does not parse, or no signature verifies with the keys given."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body,
    lengths as ASCII decimal byte counts."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign(payload: bytes, key: Ed25519PrivateKey, payload_type: str = IN_TOTO) -> bytes:
    """The envelope as compact JSON with sorted keys (so the same payload and key always give
    the same bytes: Ed25519 signatures are deterministic)."""
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {
                "keyid": fingerprint(key.public_key()),
                "sig": base64.b64encode(key.sign(pae(payload_type, payload))).decode("ascii"),
            }
        ],
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("ascii")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeInvalid(f"the envelope's {what} is not a string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeInvalid(f"the envelope's {what} is not strict base64") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise EnvelopeInvalid("the envelope repeats a key")
    return dict(pairs)


def parse(data: bytes, payload_type: str = IN_TOTO) -> tuple[bytes, list[bytes]]:
    """The payload and the signatures of an envelope, parsed strictly; nothing verified yet."""
    try:
        env = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeInvalid(f"the envelope is not JSON: {exc}") from None
    if not isinstance(env, dict) or set(env) != {"payloadType", "payload", "signatures"}:
        raise EnvelopeInvalid("the envelope must hold exactly payloadType, payload and signatures")
    if env["payloadType"] != payload_type:
        raise EnvelopeInvalid(f"the payload type is {env['payloadType']!r}, not {payload_type!r}")
    payload = _b64(env["payload"], "payload")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeInvalid("the envelope holds no signatures")
    out = []
    for s in sigs:
        if not isinstance(s, dict) or "sig" not in s or not set(s) <= {"sig", "keyid"}:
            raise EnvelopeInvalid("a signature must hold sig and at most keyid")
        out.append(_b64(s["sig"], "signature"))
    return payload, out


def verify(data: bytes, keys: Sequence[Ed25519PublicKey], payload_type: str = IN_TOTO) -> tuple[bytes, str]:
    """The payload and the fingerprint of the key that signed it. Raises EnvelopeInvalid
    unless some signature verifies over the PAE with one of `keys`."""
    if not keys:
        raise EnvelopeInvalid("no public key given to verify with")
    payload, sigs = parse(data, payload_type)
    message = pae(payload_type, payload)
    for key in keys:
        for sig in sigs:
            try:
                key.verify(sig, message)
            except InvalidSignature:
                continue
            return payload, fingerprint(key)
    raise EnvelopeInvalid("no signature verifies with the public keys given")
