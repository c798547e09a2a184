"""Error fingerprints: failures that differ only in numbers, ids, urls, hex or quoted values
form one cluster ("HTTP 503 for /feed?page=17" and "... page=18" are the same problem)."""

from __future__ import annotations

import hashlib
import re

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<hex>"),
    (re.compile(r"(?<=[=/:])[^\s/?&=:]*\d[^\s/?&=:]*"), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)

MAX_NORMALISED = 300


def normalise(message: str) -> str:
    """The message with its variable parts replaced by placeholders."""
    text = message[:4000]
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text.strip()[:MAX_NORMALISED]


def fingerprint(error_class: str, message: str) -> str:
    """16 hex chars identifying (error class, normalised message)."""
    return hashlib.sha256(f"{error_class}\x00{normalise(message)}".encode()).hexdigest()[:16]
