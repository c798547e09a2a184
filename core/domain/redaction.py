"""Secrets never leave the handler: payload keys that look like credentials are masked in
everything shown or stored outside it (console, CLI, events, logs, bundles)."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"token|password|passwd|secret|authorization|api[_-]?key|cookie", re.IGNORECASE)
# key=value, key: value and "key": "value" inside free text (log lines, error messages).
_TEXT = re.compile(
    r"""(?P<key>["']?[A-Za-z0-9_-]*(?:token|password|passwd|secret|authorization|api[_-]?key|cookie)[A-Za-z0-9_-]*["']?)"""
    r"""(?P<sep>\s*[:=]\s*)(?P<q>["']?)(?P<value>(?:Bearer\s+)?[^\s"',;&}]+)(?P=q)""",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with the values of secret-looking keys masked, at any depth."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_text(text: str) -> str:
    """Mask `secret=value`-shaped fragments in free text."""
    return _TEXT.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}{m['q']}", text)
