"""Redaction of secrets in metadata, applied recursively before any sink or log sees an event."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["DEFAULT_REDACT_PATTERNS", "REDACTED", "Redactor"]

REDACTED: Final = "[REDACTED]"
DEFAULT_REDACT_PATTERNS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "private_key",
    "cookie",
    "credential",
)


class Redactor:
    """Replaces the value of every key that contains one of `patterns` (case-insensitive), at any depth: nested
    mappings, lists, and JSON strings are not special-cased beyond their keys (a value is never parsed)."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT_PATTERNS) -> None:
        words = [p for p in patterns if p]
        self.patterns = tuple(words)
        self._match = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE).search if words else None

    def is_secret(self, key: str) -> bool:
        return self._match is not None and self._match(key) is not None

    def __call__(self, value: Any) -> Any:
        """`value` with secrets replaced; `value` itself when it holds none (most metadata), so nothing is copied."""
        match = self._match
        if match is None:
            return value
        if isinstance(value, Mapping):
            out = {}
            changed = False
            for k, v in value.items():
                new = REDACTED if isinstance(k, str) and match(k) is not None else self(v)
                changed = changed or new is not v
                out[k] = new
            return out if changed else value
        if isinstance(value, list | tuple):
            items = [self(v) for v in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        return value
