"""What the event store is asked: `EventQuery` (validated filters), its page `EventPage`, the opaque keyset cursor,
and the SQL that both backends run for it.

Every query is scoped to exactly one organization: the organization id is required, and every statement built
here starts from ``organization_id = <param>``, so no filter value can widen a query to another organization's
events. User input only ever reaches SQL as bound parameters; the few places that use ``LIKE`` escape its
wildcards (`escape_like`).

Order and pagination: newest first, on the key ``(occurred_at DESC, id DESC)``. Event ids are unique, so the key is
a total order even when many events share a timestamp, and a keyset cursor (the key of the last row of a page)
resumes exactly after that row: no duplicates and no gaps, however the table grows in the meantime.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from ..events import AuditEvent

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_FILTER_LENGTH",
    "MAX_LIMIT",
    "EventPage",
    "EventQuery",
    "SortKey",
    "decode_cursor",
    "encode_cursor",
    "escape_like",
    "from_micros",
    "normalize_search_text",
    "to_micros",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
#: Longer filter values are refused: no legitimate id, name or search needs more, and it bounds query cost.
MAX_FILTER_LENGTH: Final = 1000

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MICROSECOND: Final = dt.timedelta(microseconds=1)
_CURSOR_VERSION: Final = 1
_CURSOR_CHECK_BYTES: Final = 8


def to_micros(value: dt.datetime) -> int:
    """Microseconds since the Unix epoch (exact integer arithmetic: floats would break ties at microsecond scale)."""
    if value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _ONE_MICROSECOND


def from_micros(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


class SortKey(NamedTuple):
    """The position of an event in the store's order: newest `occurred_at` first, then the highest `id`."""

    occurred_at_us: int
    id: str


def _cursor_check(payload: bytes, organization_id: str) -> bytes:
    # Not a signature (the cursor grants nothing: every query is scoped to its organization anyway); it turns a
    # corrupted, truncated or hand-edited cursor, or one carried over from another organization, into a clean
    # "invalid cursor" instead of a silently wrong position.
    digest = hashlib.blake2b(payload, digest_size=_CURSOR_CHECK_BYTES, person=b"centure-cursor")
    digest.update(b"\x00" + organization_id.encode("utf-8", "surrogatepass"))
    return digest.digest()


def encode_cursor(key: SortKey, organization_id: str) -> str:
    """An opaque, URL-safe cursor that resumes right after `key` (base64 of the key plus a check value)."""
    payload = json.dumps([_CURSOR_VERSION, key.occurred_at_us, key.id], separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(payload + _cursor_check(payload, organization_id))
    return token.decode("ascii").rstrip("=")


def decode_cursor(cursor: str, organization_id: str) -> SortKey:
    """The key inside `cursor`, or `ValueError("invalid cursor")` for anything not made by `encode_cursor`."""
    try:
        if not isinstance(cursor, str) or not cursor or len(cursor) > 4 * MAX_FILTER_LENGTH:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        # urlsafe_b64decode silently drops characters outside the alphabet; insist on a canonical round trip.
        if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != cursor:
            raise ValueError
        payload, check = raw[:-_CURSOR_CHECK_BYTES], raw[-_CURSOR_CHECK_BYTES:]
        if len(raw) <= _CURSOR_CHECK_BYTES or check != _cursor_check(payload, organization_id):
            raise ValueError
        version, micros, event_id = json.loads(payload)
        if version != _CURSOR_VERSION or type(micros) is not int or type(event_id) is not str:
            raise ValueError
        _check_text(event_id, "cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    return SortKey(micros, event_id)


def escape_like(value: str, escape: str = "\\") -> str:
    """`value` with LIKE's wildcards (`%`, `_`) and the escape character itself escaped, for `LIKE ... ESCAPE`."""
    return value.replace(escape, escape + escape).replace("%", escape + "%").replace("_", escape + "_")


def normalize_search_text(value: str) -> str:
    """The case folding applied to both the stored search text and the searched-for text (so both backends agree)."""
    return value.lower()


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > MAX_FILTER_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_FILTER_LENGTH}")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL at all; refusing it everywhere keeps the two backends' answers identical.
        raise ValueError(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (lone surrogate)") from None
    return value


def _check_datetime(value: object, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ValueError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        # A naive datetime is ambiguous (server local time? UTC?): the caller must say.
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return value


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A validated search of one organization's events. Invalid values raise `ValueError` saying which and why.

    - `actor`: an actor id or an actor name, matched exactly.
    - `action`: an exact action (``api_key.create``) or a prefix ending in ``*`` (``mcp_proxy.*``).
    - `target_type` / `target_id`: events with at least one target matching both given values.
    - `since` (inclusive) and `until` (exclusive): timezone-aware bounds on `occurred_at`.
    - `text`: case-insensitive substring of the actor's name and metadata (email, ...), target names, ids and
      metadata, the event's metadata values and its location.
    - `limit`: the page size of `EventStore.query` (1 to 1000); the streaming `iter_*` methods ignore it.
    - `cursor`: the `next_cursor` of the previous page.

    Empty strings for the optional filters mean "no filter" (what an empty search field sends).
    """

    organization_id: str
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    _after: SortKey | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text(self.organization_id, "organization_id")
        if not self.organization_id.strip():
            raise ValueError("organization_id is required")
        for name in ("actor", "action", "target_type", "target_id", "text"):
            value = getattr(self, name)
            if value is not None:
                _check_text(value, name)
                if not value.strip():
                    object.__setattr__(self, name, None)
        if self.text is not None:
            object.__setattr__(self, "text", self.text.strip())
        if self.action is not None and "*" in self.action[:-1]:
            raise ValueError(f"action {self.action!r}: '*' is only allowed at the end, as in 'mcp_proxy.*'")
        since = _check_datetime(self.since, "since")
        until = _check_datetime(self.until, "until")
        if since is not None and until is not None and since > until:
            raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {self.limit!r}")
        if self.cursor == "":
            object.__setattr__(self, "cursor", None)
        if self.cursor is not None:
            # Any malformed cursor is the same "invalid cursor", whatever is wrong with it.
            object.__setattr__(self, "_after", decode_cursor(self.cursor, self.organization_id))

    @property
    def after(self) -> SortKey | None:
        """The decoded cursor: results start strictly after this key."""
        return self._after

    @property
    def action_prefix(self) -> str | None:
        """The prefix of a ``prefix*`` action pattern (``""`` for a bare ``*``), else None."""
        if self.action is not None and self.action.endswith("*"):
            return self.action[:-1]
        return None

    def replace(self, **changes: object) -> EventQuery:
        """A copy with `changes` applied and validated again (e.g. ``q.replace(cursor=page.next_cursor)``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of results, newest first; pass `next_cursor` back as `EventQuery.cursor` (None: no more pages)."""

    events: list[AuditEvent]
    next_cursor: str | None


# --- SQL shared by the backends ---------------------------------------------------------------------------------

#: Beyond this many (action x actor) combinations a query is run as one statement with OR/range conditions.
MAX_BRANCHES: Final = 64


class Dialect:
    """What differs between the backends' SQL: the parameter marker, time values and the free-text condition."""

    param = "?"

    def time_value(self, micros: int) -> object:
        return micros

    def text_condition(self, q: EventQuery, needle: str) -> TextCondition:
        """A condition on table alias ``e`` that holds when its search text contains `needle` (`q.text`, folded)."""
        raise NotImplementedError


class TextCondition(NamedTuple):
    """`sql` and its `params`; `candidates`: the database will collect the matches from an index and sort them,
    rather than walk the events in order (see `build_select`)."""

    sql: str
    params: list[object]
    candidates: bool


class Lookups(Protocol):
    """Small side tables that turn an OR-ed filter into a few exact index lookups (see `build_select`)."""

    def actions_with_prefix(self, organization_id: str, prefix: str) -> Sequence[str]:
        """The organization's distinct actions starting with `prefix` (a superset is fine: they are re-checked)."""
        ...

    def actor_ids_named(self, organization_id: str, name: str) -> Sequence[str]:
        """The ids of the organization's actors that have appeared under `name`."""
        ...


# One OR-ed alternative: a condition and its parameters.
_Alternative = tuple[str, tuple[object, ...]]


@dataclass(slots=True)
class _Conditions:
    sql: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)
    #: a condition makes the database collect candidates and sort them
    sorts: bool = False

    def add(self, sql: str, *params: object) -> None:
        self.sql.append(sql)
        self.params.extend(params)

    def copy(self) -> _Conditions:
        return _Conditions(list(self.sql), list(self.params), self.sorts)

    def where(self) -> str:
        return " AND ".join(self.sql)


def _prefix_upper_bound(prefix: str) -> str | None:
    # The smallest string greater than every string starting with `prefix`, in code point order (which is SQLite's
    # BINARY and PostgreSQL's "C" collation order for UTF-8): bump the last character, skipping the surrogates.
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1 if last + 1 != 0xD800 else 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def _conditions(
    q: EventQuery, d: Dialect, lookups: Lookups | None, *, after: SortKey | None
) -> tuple[_Conditions, list[list[_Alternative]]]:
    """The AND-ed conditions of `q`, and its OR-ed filters as lists of alternatives (at least one must hold)."""
    p = d.param
    c = _Conditions()
    alternatives: list[list[_Alternative]] = []
    c.add(f"e.organization_id = {p}", q.organization_id)

    if q.actor is not None:
        # Actor id or name. Only actor_id is indexed; a name is first resolved to the ids it has been used with
        # (a small side table), each then checked against the name too, so the answer stays "name equals".
        options: list[_Alternative] = [(f"e.actor_id = {p}", (q.actor,))]
        named = [] if lookups is None else list(lookups.actor_ids_named(q.organization_id, q.actor))
        if lookups is None or len(named) >= MAX_BRANCHES:
            options.append((f"e.actor_name = {p}", (q.actor,)))
        else:
            options.extend((f"e.actor_id = {p} AND e.actor_name = {p}", (i, q.actor)) for i in named if i != q.actor)
        alternatives.append(options)

    prefix = q.action_prefix
    if q.action is not None and prefix is None:
        c.add(f"e.action = {p}", q.action)
    elif prefix:
        known = None if lookups is None else list(lookups.actions_with_prefix(q.organization_id, prefix))
        if known is not None and len(known) < MAX_BRANCHES:
            # A prefix covers a handful of actions: one index-ordered branch each beats sorting every match.
            alternatives.append([(f"e.action = {p}", (a,)) for a in known if a.startswith(prefix)])
        else:
            c.add(f"e.action >= {p}", prefix)
            upper = _prefix_upper_bound(prefix)
            if upper is not None:
                c.add(f"e.action < {p}", upper)

    if q.target_id is not None:
        # A target id is selective: collect its events first (index on organization, target id, type).
        sub = f"t.organization_id = {p} AND t.target_id = {p}"
        params: list[object] = [q.organization_id, q.target_id]
        if q.target_type is not None:
            sub += f" AND t.type = {p}"
            params.append(q.target_type)
        c.add(f"e.seq IN (SELECT t.seq FROM audit_event_targets t WHERE {sub})", *params)
        c.sorts = True
    elif q.target_type is not None:
        # A target type is common: walk the newest events and check each one's targets (primary key lookups),
        # which stops as soon as the page is full.
        c.add(f"EXISTS (SELECT 1 FROM audit_event_targets t WHERE t.seq = e.seq AND t.type = {p})", q.target_type)

    since_us = to_micros(q.since) if q.since is not None else None
    until_us = to_micros(q.until) if q.until is not None else None
    if since_us is not None:
        c.add(f"e.occurred_at >= {p}", d.time_value(since_us))
    if after is not None and (until_us is None or after.occurred_at_us < until_us):
        # The cursor implies occurred_at <= its time < until, so `until` is dropped: one range for the index to use.
        c.add(f"(e.occurred_at, e.id) < ({p}, {p})", d.time_value(after.occurred_at_us), after.id)
    elif until_us is not None:
        c.add(f"e.occurred_at < {p}", d.time_value(until_us))

    if q.text:
        text = d.text_condition(q, normalize_search_text(q.text))
        c.add(text.sql, *text.params)
        c.sorts = c.sorts or text.candidates
    return c, alternatives


def _fold(alternatives: list[_Alternative]) -> tuple[str, list[object]]:
    if not alternatives:
        return "1 = 0", []
    sql = "(" + " OR ".join(f"({cond})" for cond, _ in alternatives) + ")"
    return sql, [value for _, values in alternatives for value in values]


def build_select(
    q: EventQuery,
    d: Dialect,
    columns: str,
    *,
    limit: int,
    after: SortKey | None = None,
    lookups: Lookups | None = None,
) -> tuple[str, list[object]]:
    """``SELECT columns FROM audit_events e`` for `q`, newest first, at most `limit` rows after `after` (default:
    the query's cursor).

    OR-ed filters (an actor's id or the ids its name resolves to, the actions of a prefix) become a UNION of
    branches that each walk one index in key order and stop after `limit` rows, so a page costs about `limit` x
    branches index reads however many events match; a plain OR would make the database collect and sort every
    match first.
    """
    p = d.param
    common, alternatives = _conditions(q, d, lookups, after=after if after is not None else q.after)
    branches: list[_Conditions] = [common]
    for options in alternatives:
        if not options or len(branches) * len(options) > MAX_BRANCHES:
            # Nothing can match, or too many combinations: fold this filter into every branch as an OR.
            sql, params = _fold(options)
            for b in branches:
                b.add(sql, *params)
            continue
        grown: list[_Conditions] = []
        for b in branches:
            for cond, values in options:
                nb = b.copy()
                nb.add(cond, *values)
                grown.append(nb)
        branches = grown
    order = "ORDER BY e.occurred_at DESC, e.id DESC"
    if len(branches) == 1 and not branches[0].sorts:
        # One walk down an index in key order: read the rows as they come.
        only = branches[0]
        return f"SELECT {columns} FROM audit_events e WHERE {only.where()} {order} LIMIT {p}", [*only.params, limit]
    # A plan that sorts: find the page's keys first and read only its rows whole, so that the sort handles small
    # keys, not every candidate's full event.
    if len(branches) == 1:
        only = branches[0]
        inner = f"SELECT e.seq FROM audit_events e WHERE {only.where()} {order} LIMIT {p}"
        inner_params = [*only.params, limit]
    else:
        parts: list[str] = []
        inner_params = []
        for i, b in enumerate(branches):
            parts.append(
                f"SELECT seq FROM (SELECT e.seq FROM audit_events e WHERE {b.where()} {order} LIMIT {p}) AS b{i}"
            )
            inner_params.extend([*b.params, limit])
        inner = " UNION ".join(parts)
    sql = f"SELECT {columns} FROM audit_events e WHERE e.seq IN ({inner}) {order} LIMIT {p}"
    return sql, [*inner_params, limit]


def build_count(q: EventQuery, d: Dialect, *, lookups: Lookups | None = None) -> tuple[str, list[object]]:
    """``SELECT count(*)`` of every event matching `q`'s filters (the cursor and limit are ignored)."""
    common, alternatives = _conditions(q, d, lookups, after=None)
    for options in alternatives:
        sql, params = _fold(options)
        common.add(sql, *params)
    return f"SELECT count(*) FROM audit_events e WHERE {common.where()}", common.params
