"""Payload canonical form and digest (core/domain/payloads.py): the identity behind idempotency."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import errors, payloads

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=8)


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same document with every object's keys in another insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(objects, st.randoms(use_true_random=False))
def test_canonical_json_is_key_order_independent(doc: dict[str, Any], rng: random.Random) -> None:
    other = _shuffled(doc, rng)
    assert payloads.canonical_json(other) == payloads.canonical_json(doc)
    assert payloads.digest(payloads.canonical_json(other)) == payloads.digest(payloads.canonical_json(doc))


@given(objects)
def test_canonical_json_round_trips_and_is_a_fixed_point(doc: dict[str, Any]) -> None:
    text = payloads.canonical_json(doc)
    assert json.loads(text) == doc
    assert payloads.canonical_json(json.loads(text)) == text
    assert payloads.check_payload(doc) == text
    assert payloads.parse_payload(text) == doc


def test_canonical_json_form() -> None:
    assert payloads.canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'


@given(objects, objects)
def test_different_documents_have_different_digests(a: dict[str, Any], b: dict[str, Any]) -> None:
    ca, cb = payloads.canonical_json(a), payloads.canonical_json(b)
    assert (payloads.digest(ca) == payloads.digest(cb)) == (ca == cb)


def test_digest_is_stable_sha256_hex() -> None:
    # Pinned: a change here would make every stored idempotency digest mismatch.
    canonical = payloads.canonical_json({"seconds": 1, "name": "x"})
    assert canonical == '{"name":"x","seconds":1}'
    assert payloads.digest(canonical) == "c477594e91a3ee23a6f8b0fa5e592267f11e59dacebd62faef0ca64a6845a24a"
    assert payloads.digest("{}") == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@given(st.text())
def test_digest_shape(text: str) -> None:
    d = payloads.digest(text)
    assert len(d) == 64 and set(d) <= set("0123456789abcdef")
    assert payloads.digest(text) == d


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"a": }', "{'a': 1}", '{"a": 1,}', "not json"],
)
def test_parse_payload_refuses_invalid_json_with_a_useful_message(text: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        payloads.parse_payload(text)
    message = str(info.value)
    assert "not valid JSON" in message
    assert "line" in message and "column" in message
    assert '{"seconds": 1}' in message  # shows what a good payload looks like


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[1, 2]", "list"),
        ('"x"', "str"),
        ("1", "int"),
        ("1.5", "float"),
        ("null", "NoneType"),
        ("true", "bool"),
    ],
)
def test_parse_payload_refuses_non_objects(text: str, kind: str) -> None:
    with pytest.raises(errors.InvalidInput, match=f"must be a JSON object, got {kind}"):
        payloads.parse_payload(text)


def test_parse_payload_accepts_an_object() -> None:
    assert payloads.parse_payload(' {"seconds": 1, "tags": ["a"]} ') == {
        "seconds": 1,
        "tags": ["a"],
    }


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(errors.InvalidInput, match="not JSON-serialisable"):
        payloads.canonical_json({"x": value})
    with pytest.raises(errors.InvalidInput):
        payloads.check_payload({"nested": [{"x": value}]})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_parse_payload_refuses_nan_literals(literal: str) -> None:
    with pytest.raises(errors.InvalidInput):
        payloads.parse_payload('{"x": ' + literal + "}")


def test_check_payload_refuses_non_objects_and_unserialisable_values() -> None:
    with pytest.raises(errors.InvalidInput, match="must be a JSON object, got list"):
        payloads.check_payload([1])
    with pytest.raises(errors.InvalidInput, match="not JSON-serialisable"):
        payloads.check_payload({"x": object()})
    with pytest.raises(errors.InvalidInput, match="not JSON-serialisable"):
        payloads.check_payload({"x": {1, 2}})


def test_check_payload_refuses_oversized_payloads() -> None:
    with pytest.raises(errors.InvalidInput, match="limit is"):
        payloads.check_payload({"blob": "x" * payloads.MAX_PAYLOAD_BYTES})
    assert payloads.check_payload({"blob": "x" * 1000}).startswith('{"blob":')


def test_lone_surrogate_is_refused_as_invalid_input() -> None:
    doc = payloads.parse_payload('{"k": "\\ud800"}')
    with pytest.raises(errors.InvalidInput):
        payloads.digest(payloads.check_payload(doc))


def test_deeply_nested_payload_is_refused_as_invalid_input() -> None:
    with pytest.raises(errors.InvalidInput):
        payloads.parse_payload('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
