"""`metadata.changes`: what changed, as the JSON string Centure documents, within 500 characters.

Centure's `metadata.changes` is a string holding ``{"field": {"from": old, "to": new}, ...}``, "truncated if longer"
than 500 characters. Cutting the text at 500 would leave invalid JSON that every SIEM parser downstream chokes on,
so this encoder shortens the *values* instead and the result is always valid JSON:

1. the whole object, if it fits;
2. else every string value (and any nested list or object, as its JSON text) longer than a common cap is cut to it
   and ends with "…"; the largest cap that fits is used, so short values stay whole;
3. else (too many fields even with every value reduced to "…") the first fields that fit are kept and the object
   ends with ``"_omitted": <number of fields left out>``.

Length is counted in UTF-16 code units, like JavaScript's ``String.length``: WorkOS's API is JavaScript, and the
emulator (like ajv's non-unicode mode) counts an emoji as 2. That count is never lower than the code point count,
so the result is within 500 whichever way WorkOS counts. Cuts fall on code point boundaries (never inside a UTF-8
sequence or a surrogate pair) and never separate a character from its combining marks, variation selectors or
zero-width joiner sequences; lone surrogates in the input become U+FFFD so the text is always valid UTF-8.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import unicodedata
import uuid
from collections.abc import Mapping, Set
from decimal import Decimal
from typing import Any, Final, overload

__all__ = ["CHANGES_LIMIT", "ELLIPSIS", "OMITTED_KEY", "changes", "encode_changes", "text_length"]

CHANGES_LIMIT: Final = 500
ELLIPSIS: Final = "…"
OMITTED_KEY: Final = "_omitted"
# Below this even {"_omitted": 12345} might not fit.
_MIN_LIMIT: Final = 32
_ZWJ: Final = "\u200d"


@overload
def changes(pairs: Mapping[str, tuple[Any, Any]], /, *, limit: int = CHANGES_LIMIT) -> str: ...
@overload
def changes(before: Mapping[str, Any], after: Mapping[str, Any], /, *, limit: int = CHANGES_LIMIT) -> str: ...
def changes(first: Mapping[str, Any], after: Mapping[str, Any] | None = None, /, *, limit: int = CHANGES_LIMIT) -> str:
    """The `metadata.changes` string.

    ``changes({"name": ("Old", "New")})`` takes (from, to) pairs; ``changes(before, after)`` compares two
    mappings and keeps the keys whose values differ (a key missing on one side is null there), in `before`'s
    key order then `after`'s new keys.
    """
    if after is None:
        diff: dict[str, dict[str, Any]] = {}
        for name, pair in first.items():
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise TypeError(f"changes({{{name!r}: ...}}) takes (from, to) pairs, got {pair!r}")
            diff[str(name)] = {"from": pair[0], "to": pair[1]}
    else:
        diff = {}
        for name in [*first, *(k for k in after if k not in first)]:
            old, new = first.get(name), after.get(name)
            if name not in first or name not in after or old != new:
                diff[str(name)] = {"from": old, "to": new}
    return encode_changes(diff, limit=limit)


def encode_changes(diff: Mapping[str, Mapping[str, Any]], *, limit: int = CHANGES_LIMIT) -> str:
    """Compact JSON of `diff` ({field: {"from": .., "to": ..}}), shortened as the module says to fit `limit`."""
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}, got {limit}")
    fields = {_clean(str(name)): {k: _plain(v) for k, v in change.items()} for name, change in diff.items()}
    # Nothing longer than the limit can survive, so cut there first: a 10 MB value costs one pass, not twenty.
    fields = _capped_changes(fields, limit)
    text = _dump(fields)
    if text_length(text) <= limit:
        return text
    best = _largest_fitting_cap(fields, limit)
    if best is not None:
        return best
    # Even with every value reduced to "…" the fields don't fit: keep the first `kept` and count the rest.
    items = list(fields.items())
    low, high, kept = 0, len(items) - 1, 0
    while low <= high:
        middle = (low + high) // 2
        if text_length(_dump(_capped_changes(_with_omitted(items, middle), 0))) <= limit:
            kept, low = middle, middle + 1
        else:
            high = middle - 1
    best = _largest_fitting_cap(_with_omitted(items, kept), limit)
    return best if best is not None else _dump({OMITTED_KEY: len(items)})


def text_length(text: str) -> int:
    """Length in UTF-16 code units (JavaScript's `String.length`): an astral character such as an emoji counts 2."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _largest_fitting_cap(fields: dict[str, Any], limit: int) -> str | None:
    # Longer caps give longer text, so a binary search finds the largest that fits.
    best: str | None = None
    low, high = 0, limit
    while low <= high:
        cap = (low + high) // 2
        text = _dump(_capped_changes(fields, cap))
        if text_length(text) <= limit:
            best, low = text, cap + 1
        else:
            high = cap - 1
    return best


def _with_omitted(items: list[tuple[str, Any]], kept: int) -> dict[str, Any]:
    out = dict(items[:kept])
    out[OMITTED_KEY] = len(items) - kept
    return out


def _capped_changes(fields: dict[str, Any], cap: int) -> dict[str, Any]:
    """Each field's from/to values cut to `cap`; field names, and the `_omitted` count, are kept whole."""
    return {
        name: {k: _capped(v, cap) for k, v in change.items()} if isinstance(change, dict) else change
        for name, change in fields.items()
    }


def _capped(value: Any, cap: int) -> Any:
    """`value`, or if it is a string (or a list or object, as its JSON text) longer than `cap`, its first `cap`
    characters ending with "…"."""
    if isinstance(value, str):
        return value if len(value) <= cap else _cut(value, max(cap - 1, 0)) + ELLIPSIS
    if isinstance(value, dict | list):
        text = _dump(value)
        return value if len(text) <= cap else _cut(text, max(cap - 1, 0)) + ELLIPSIS
    return value


def _cut(text: str, end: int) -> str:
    """The first `end` code points, backing off so no character loses its combining marks or joiners."""
    end = min(end, len(text))
    while 0 < end < len(text) and _attached(text[end - 1], text[end]):
        end -= 1
    return text[:end]


def _attached(previous: str, following: str) -> bool:
    return (
        previous == _ZWJ
        or following == _ZWJ
        or unicodedata.category(following) in ("Mn", "Mc", "Me")
        or "\ufe00" <= following <= "\ufe0f"  # variation selectors (text/emoji presentation)
        or "\U0001f3fb" <= following <= "\U0001f3ff"  # skin tone modifiers
        or "\U000e0020" <= following <= "\U000e007f"  # emoji tag sequences (subdivision flags)
    )


def _clean(text: str) -> str:
    """`text` as valid Unicode: lone surrogates (which no UTF-8 encoder accepts) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Round-tripping through UTF-16 pairs up valid surrogate halves and replaces the lone ones.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _plain(value: Any) -> Any:
    """A JSON-ready copy of `value` (the JSON the docs describe has no dates, sets or NaN)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return _clean(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {_clean(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, Set):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return _clean(str(value))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
