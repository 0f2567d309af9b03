"""Redaction of secrets in metadata, applied before any sink, store, outbox, dead letter or log sees an event.

A key is secret when one of the patterns occurs in its *normalised* spelling: Unicode compatibility form (NFKC, so
full-width letters count as the letters they look like), lower case, and every character other than a letter or a
digit removed. So the pattern ``api_key`` catches ``api_key``, ``api.key`` (which coercion would deliver as
``api_key``), ``apiKey``, ``API-KEY``, ``x-api-key`` and ``api key`` alike: matching the raw key alone let
``api.key`` and ``private key`` through, and coercion then delivered them as ``api_key`` and ``private_key``.

Values are redacted at any depth: nested mappings, lists and tuples, and strings that hold JSON (an app's own
``json.dumps`` of a changes dict, or one cut to 500 characters by coercion, which no JSON parser can read any more).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["DEFAULT_REDACT_PATTERNS", "REDACTED", "Redactor", "normalise_key"]

REDACTED: Final = "[REDACTED]"
DEFAULT_REDACT_PATTERNS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "access_key",
    "private_key",
    "cookie",
    "credential",
    "session_id",
)

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_NOT_ASCII_ALNUM = re.compile(r"[^0-9A-Za-z]+")
#: A quoted JSON key followed by its colon: where a secret's value starts inside a JSON string.
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*')
_CACHE_LIMIT: Final = 4096


def normalise_key(key: str) -> str:
    """The spelling patterns are matched against: NFKC, lower case, letters and digits only."""
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", key).lower())


class Redactor:
    """Replaces with ``[REDACTED]`` the value of every key whose normalised spelling contains a pattern's."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT_PATTERNS) -> None:
        words = sorted({normalise_key(p) for p in patterns if p} - {""})
        self.patterns = tuple(words)
        self._search = re.compile("|".join(re.escape(w) for w in words)).search if words else None
        # Keys repeat from event to event: remember the verdicts (bounded, so hostile keys can't grow it forever).
        self._verdicts: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        verdict = self._verdicts.get(key)
        if verdict is None:
            search = self._search
            # Also the ASCII letters alone, as coercion would deliver the key: NFKC and lower() can turn a character
            # that coercion replaces by "_" into letters ("İ" lowers to "i" and a combining dot).
            verdict = search is not None and (
                search(normalise_key(key)) is not None or search(_NOT_ASCII_ALNUM.sub("", key).lower()) is not None
            )
            if len(self._verdicts) >= _CACHE_LIMIT:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def __call__(self, value: Any) -> Any:
        """`value` with secrets replaced; `value` itself when it holds none (most metadata), so nothing is copied."""
        if self._search is None:
            return value
        return self._redact(value)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            out = {}
            changed = False
            for k, v in value.items():
                new = REDACTED if isinstance(k, str) and self.is_secret(k) else self._redact(v)
                changed = changed or new is not v
                out[k] = new
            return out if changed else value
        if isinstance(value, list | tuple):
            items = [self._redact(v) for v in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        if isinstance(value, str) and value[:1] in ("{", "[") and self._mentions_secret(value):
            return self._redact_json_text(value)
        return value

    def _mentions_secret(self, text: str) -> bool:
        # A cheap test before any parsing: every secret key inside the text shows up in its normalised form.
        return self._search is not None and self._search(normalise_key(text)) is not None

    def _redact_json_text(self, text: str) -> str:
        try:
            parsed = json.loads(text)
        except ValueError:
            return self._redact_json_prefix(text)
        redacted = self._redact(parsed)
        if redacted is parsed:
            return text
        return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    def _redact_json_prefix(self, text: str) -> str:
        """JSON that no parser can read (cut short by a truncation): replace each secret key's value in the text."""
        out: list[str] = []
        position = 0
        for match in _JSON_KEY.finditer(text):
            if match.start() < position or not self.is_secret(match.group(1)):
                continue
            out.append(text[position : match.end()])
            out.append(json.dumps(REDACTED))
            position = _skip_json_value(text, match.end())
        out.append(text[position:])
        return "".join(out)


def _skip_json_value(text: str, start: int) -> int:
    """The index just after the JSON value that starts at `start` (or the end of a text cut inside it)."""
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        ch = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 0:
                    return index + 1
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            if depth == 0:
                return index  # the end of the enclosing object: a scalar value ended just before
            depth -= 1
            if depth == 0:
                return index + 1
        elif ch == "," and depth == 0:
            return index
    return len(text)
