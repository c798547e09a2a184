"""DSSE envelopes: the PAE of the spec, strict parsing, and verification that trusts only
the keys given (a keyring for rotation; keyid is never trusted)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.domain import bundle, bundle_dsse


def test_pae_is_the_spec_s_encoding() -> None:
    # The DSSE protocol document's worked example.
    assert bundle_dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert bundle_dsse.pae("t", b"") == b"DSSEv1 1 t 0 "


def test_sign_then_verify_with_a_keyring() -> None:
    old, new = bundle.new_key(), bundle.new_key()
    env = bundle_dsse.sign(b'{"_type":"x"}', old)
    assert env == bundle_dsse.sign(b'{"_type":"x"}', old)  # deterministic bytes
    payload, fp = bundle_dsse.verify(env, [new.public_key(), old.public_key()])
    assert payload == b'{"_type":"x"}'
    assert fp == bundle.fingerprint(old.public_key())


def _edit(env: bytes, **changes: object) -> bytes:
    d = json.loads(env)
    d.update(changes)
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e, k: bundle_dsse.sign(b"p", bundle.new_key()), "no signature verifies"),
        (lambda e, k: _edit(e, payload=base64.b64encode(b"q").decode()), "no signature verifies"),
        (lambda e, k: _edit(e, payloadType="application/json"), "payload type"),
        (lambda e, k: _edit(e, extra=1), "exactly payloadType"),
        (lambda e, k: _edit(e, payload="cA=="[:-1] + "!"), "strict base64"),
        (lambda e, k: _edit(e, signatures=[]), "no signatures"),
        (lambda e, k: _edit(e, signatures=[{"sig": "AA==", "keyid": "x", "more": 1}]), "at most keyid"),
        (lambda e, k: e.replace(b'"payloadType"', b'"payloadType":"x","payloadType"', 1), "repeats a key"),
        (lambda e, k: b"\xff", "not JSON"),
        # A keyid naming the verifier's key does not make another key's signature count.
        (
            lambda e, k: _edit(
                bundle_dsse.sign(b"p", bundle.new_key()),
                signatures=[
                    {
                        "keyid": bundle.fingerprint(k.public_key()),
                        "sig": json.loads(bundle_dsse.sign(b"p", bundle.new_key()))["signatures"][0]["sig"],
                    }
                ],
            ),
            "no signature verifies",
        ),
    ],
)
def test_every_bad_envelope_fails_in_one_line(
    mutate: Callable[[bytes, Ed25519PrivateKey], bytes], message: str
) -> None:
    key = bundle.new_key()
    env = bundle_dsse.sign(b"p", key)
    with pytest.raises(bundle_dsse.EnvelopeInvalid, match=message) as info:
        bundle_dsse.verify(mutate(env, key), [key.public_key()])
    assert "\n" not in str(info.value)


def test_no_key_no_verification() -> None:
    key = bundle.new_key()
    with pytest.raises(bundle_dsse.EnvelopeInvalid, match="no public key"):
        bundle_dsse.verify(bundle_dsse.sign(b"p", key), [])
