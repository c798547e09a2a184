"""Payload canonical form and digest: the identity used for idempotency checks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.domain import errors

MAX_PAYLOAD_BYTES = 1_000_000


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: equal documents give equal strings."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # a lone surrogate survives dumps but is not UTF-8
    except (TypeError, ValueError) as exc:
        raise errors.InvalidInput(f"payload is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise errors.InvalidInput("payload is nested too deeply") from None
    return text


def digest(canonical: str) -> str:
    """sha256 hex of a canonical JSON string."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _refuse_constant(name: str) -> Any:
    raise errors.InvalidInput(f"payload contains {name}, which is not JSON; use null or a string")


def parse_payload(text: str) -> dict[str, Any]:
    """Parse a payload given as JSON text; it must be an object."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise errors.InvalidInput("payload is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(
            f"payload is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "pass an object such as '{\"seconds\": 1}'"
        ) from None
    if not isinstance(value, dict):
        raise errors.InvalidInput(f"payload must be a JSON object, got {type(value).__name__}")
    return value


def check_payload(value: Any) -> str:
    """Validate a payload object and return its canonical JSON."""
    if not isinstance(value, dict):
        raise errors.InvalidInput(f"payload must be a JSON object, got {type(value).__name__}")
    text = canonical_json(value)
    if len(text) > MAX_PAYLOAD_BYTES:
        raise errors.InvalidInput(
            f"payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES} (store large data as an artifact)"
        )
    return text
