"""The event store interface (`EventStore`), and the SQL machinery its two backends share (`SqlEventStore`).

The store keeps each event whole (``event.to_dict()`` as JSON, enrichment included) plus the columns its filters
need, indexed per organization. It is written by the dispatcher (through `StoreSink`) and read by the admin page,
the JSON API and the CLI, often at the same time and from different threads.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

from ..events import AuditEvent
from .export import csv_row
from .query import (
    MAX_BRANCHES,
    MAX_FILTER_LENGTH,
    MAX_LIMIT,
    Dialect,
    EventPage,
    EventQuery,
    SortKey,
    build_count,
    build_select,
    encode_cursor,
    normalize_search_text,
    to_micros,
)

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "EXTENDED_RETENTION_DAYS",
    "RETENTION_CHOICES",
    "EventStore",
    "SqlEventStore",
    "StoreError",
    "StoreUnavailable",
    "StoredRow",
    "check_retention_days",
    "event_row",
    "search_text",
]

DEFAULT_RETENTION_DAYS: Final = 30
EXTENDED_RETENTION_DAYS: Final = 365
#: The WorkOS retention tiers the product sells (DESIGN §7): standard 30 days, extended 12 months.
RETENTION_CHOICES: Final = (DEFAULT_RETENTION_DAYS, EXTENDED_RETENTION_DAYS)

#: Rows fetched per statement by the streaming `iter_*` methods: big enough to amortise a round trip, small enough
#: that memory stays flat whatever the export size.
STREAM_CHUNK: Final = MAX_LIMIT


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or written right now (locked, disk full, connection lost): try again later."""


def check_retention_days(days: object) -> int:
    if type(days) is not int or days not in RETENTION_CHOICES:
        choices = " or ".join(str(c) for c in RETENTION_CHOICES)
        raise ValueError(f"retention must be {choices} days, got {days!r}")
    return days


def _check_key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_FILTER_LENGTH or "\x00" in value:
        # Ids must be expressible as filter values and in cursors, which have the same limits.
        raise ValueError(f"{what} must be at most {MAX_FILTER_LENGTH} characters without NUL")
    return value


def _usable_key(value: object) -> bool:
    return isinstance(value, str) and bool(value) and len(value) <= MAX_FILTER_LENGTH and "\x00" not in value


def search_text(event: AuditEvent) -> str:
    """What free-text search looks in: actor name and metadata (email, ...), target names, ids and metadata, the
    event's metadata values and location; one field per line, case-folded."""
    actor = event.actor
    parts: list[object] = [actor.name, *actor.metadata.values()]
    for target in event.targets:
        parts += (target.name, target.id, *target.metadata.values())
    parts += event.metadata.values()
    parts.append(event.context.location)
    return normalize_search_text("\n".join([str(p) for p in parts if p is not None and p != ""]))


class StoredRow(NamedTuple):
    """An event as the store writes it: the indexed columns and the full event as JSON."""

    id: str
    organization_id: str
    occurred_at_us: int
    action: str
    actor_id: str
    actor_name: str | None
    actor_type: str
    search_text: str
    body: str
    csv_row: str


def event_row(event: AuditEvent, body: str | None = None, *, with_csv: bool = True) -> StoredRow:
    """The columns stored for `event`, or `ValueError` if it lacks what the store indexes.

    `body` is `event.to_json()` when the caller has it already (the dispatcher encodes each event once). Without
    `with_csv`, ``csv_row`` is left empty and the export makes the line from the body when it needs it: exports
    are rare, appends are every event."""
    if not isinstance(event, AuditEvent):
        raise ValueError(f"expected an AuditEvent, got {type(event).__name__}")
    if not isinstance(event.occurred_at, dt.datetime):
        raise ValueError("occurred_at must be a datetime")
    actor = event.actor
    if not (
        _usable_key(event.id)
        and _usable_key(event.organization_id)
        and _usable_key(event.action)
        and _usable_key(getattr(actor, "id", None))
        and all(_usable_key(getattr(t, "type", None)) and _usable_key(getattr(t, "id", None)) for t in event.targets)
    ):
        _explain_unusable(event)  # raises, naming the field (the common case above checks without naming)
    try:
        body = event.to_json() if body is None else body
        line = csv_row(event) if with_csv else ""
    except (TypeError, ValueError) as exc:  # metadata that skipped validation: no retry will make it JSON
        raise ValueError(f"event {event.id!r} cannot be serialised as JSON: {exc}") from None
    # Positional, in the fields' order: this runs for every event stored.
    return StoredRow(
        event.id,
        event.organization_id,
        to_micros(event.occurred_at),  # a naive time is taken as UTC, as `AuditEvent.from_dict` does
        event.action,
        actor.id,
        actor.name,
        actor.type,
        search_text(event),
        body,
        line,
    )


def _explain_unusable(event: AuditEvent) -> None:
    """Raise the `ValueError` that says which of `event`'s indexed fields the store cannot take."""
    for i, target in enumerate(event.targets):
        _check_key(getattr(target, "type", None), f"targets[{i}].type")
        _check_key(getattr(target, "id", None), f"targets[{i}].id")
    _check_key(event.id, "id")
    _check_key(event.organization_id, "organization_id")
    _check_key(event.action, "action")
    _check_key(getattr(event.actor, "id", None), "actor.id")


class EventStore(ABC):
    """A queryable store of audit events, always read one organization at a time.

    Thread-safe: one instance serves the dispatcher thread, web request threads and the CLI at once.
    """

    @abstractmethod
    def append(self, events: Sequence[AuditEvent], *, bodies: Sequence[str] | None = None) -> int:
        """Store `events` in one transaction; returns how many were new. `bodies`, when given, are the events'
        `to_json()`, already made by the caller.

        Idempotent by event id: the dispatcher may deliver an event again after a crash, and a second append of an
        id already stored changes nothing (the first copy wins).
        """

    @abstractmethod
    def get(self, organization_id: str, event_id: str) -> AuditEvent | None:
        """The event `event_id` if it belongs to `organization_id`, else None."""

    @abstractmethod
    def query(self, q: EventQuery) -> EventPage:
        """One page of `q`'s matches, newest first, and the cursor of the next page."""

    @abstractmethod
    def iter_events(self, q: EventQuery) -> Iterator[AuditEvent]:
        """Every match of `q` (from its cursor on, ignoring its limit), streamed in constant memory."""

    def iter_json(self, q: EventQuery) -> Iterator[str]:
        """Like `iter_events`, each event as its JSON text (``event.to_json()``; no trailing newline)."""
        return (event.to_json() for event in self.iter_events(q))

    def iter_csv_rows(self, q: EventQuery) -> Iterator[str]:
        """Like `iter_events`, each event as its line of the CSV export (`export.csv_row`, with the CRLF)."""
        return (csv_row(event) for event in self.iter_events(q))

    @abstractmethod
    def count(self, q: EventQuery) -> int:
        """How many events match `q`'s filters (its cursor and limit are ignored)."""

    @abstractmethod
    def prune(self, organization_id: str, older_than: dt.datetime) -> int:
        """Delete `organization_id`'s events that occurred before `older_than`; returns how many."""

    @abstractmethod
    def get_retention_days(self, organization_id: str) -> int:
        """The organization's retention policy in days (`DEFAULT_RETENTION_DAYS` unless set)."""

    @abstractmethod
    def set_retention_days(self, organization_id: str, days: int) -> None:
        """Set the organization's retention policy: one of `RETENTION_CHOICES`, else `ValueError`."""

    @abstractmethod
    def organizations(self) -> list[str]:
        """Organizations that have stored events or a retention policy, sorted."""

    def index_pending(self, limit: int = 1000) -> int:
        """Index up to `limit` events whose free-text indexing was deferred (see the SQLite store); returns how many
        it covered, 0 when none was waiting. A store that indexes on insert has nothing to do."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store must not be used afterwards. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SqlEventStore(EventStore):
    """The reads both SQL backends share; a backend supplies connections, its dialect and the writes.

    Tables (same names in both backends; the ``audit_`` prefix keeps them apart from other components' tables
    when the database is shared):

    - ``audit_events``: one row per event: ``seq`` (surrogate key), ``id`` (unique: the idempotency key),
      ``organization_id``, ``occurred_at``, ``action``, ``actor_id``, ``actor_name``, ``actor_type``,
      ``search_text`` (see `search_text`), ``body`` (the full event), ``csv_row`` (its line of the CSV export,
      see `store.export`).
    - ``audit_event_targets``: one row per target (``seq``, ``position``, ``organization_id``, ``type``,
      ``target_id``), so a target filter is an index lookup instead of a JSON scan.
    - ``audit_event_actions``: the distinct (organization, action) pairs ever stored: it turns an action prefix into
      the list of actions it covers, and lists organizations without scanning events.
    - ``audit_event_actors``: the distinct (organization, actor name, actor id) triples: it turns an actor name
      into actor ids, so that ``actor_id`` is the only actor column that needs an index on the (large) event table.
    - ``audit_retention``: the per-organization retention policy.
    - ``centure_audit_schema``: applied migrations, per component.

    Side-table rows are never deleted (a pruned organization's actions and actors stay listed): a stale row costs
    an empty index lookup, while deleting one that a concurrent append still needs would hide events.
    """

    #: the expression selecting the full event's JSON text
    _body_sql: str = "e.body"

    # --- what a backend provides ---

    @abstractmethod
    def _dialect(self) -> Dialect: ...

    @abstractmethod
    def _fetchall(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _key_micros(self, value: Any) -> int:
        """The stored `occurred_at` column value as microseconds since the epoch."""

    # --- `query.Lookups`, for the query builder ---

    def actions_with_prefix(self, organization_id: str, prefix: str) -> list[str]:
        p = self._dialect().param
        rows = self._fetchall(
            f"SELECT action FROM audit_event_actions WHERE organization_id = {p} AND action >= {p}"
            f" ORDER BY action LIMIT {MAX_BRANCHES}",
            (organization_id, prefix),
        )
        # Sorted, so the matches are the rows up to the first that does not start with the prefix.
        out: list[str] = []
        for (action,) in rows:
            if not action.startswith(prefix):
                break
            out.append(action)
        return out

    def actor_ids_named(self, organization_id: str, name: str) -> list[str]:
        p = self._dialect().param
        rows = self._fetchall(
            f"SELECT actor_id FROM audit_event_actors WHERE organization_id = {p} AND actor_name = {p}"
            f" ORDER BY actor_id LIMIT {MAX_BRANCHES}",
            (organization_id, name),
        )
        return [row[0] for row in rows]

    def _select(
        self, q: EventQuery, columns: str, *, limit: int, after: SortKey | None = None
    ) -> list[tuple[Any, ...]]:
        sql, params = build_select(
            q, self._dialect(), f"e.occurred_at, e.id, {columns}", limit=limit, after=after, lookups=self
        )
        return self._fetchall(sql, params)

    # --- shared reads ---

    def get(self, organization_id: str, event_id: str) -> AuditEvent | None:
        if not _usable_key(organization_id) or not _usable_key(event_id):
            return None  # no stored event has such an id (PostgreSQL would even refuse a NUL as a parameter)
        p = self._dialect().param
        rows = self._fetchall(
            f"SELECT {self._body_sql} FROM audit_events e WHERE e.id = {p} AND e.organization_id = {p}",
            (event_id, organization_id),
        )
        return AuditEvent.from_json(rows[0][0]) if rows else None

    def query(self, q: EventQuery) -> EventPage:
        rows = self._select(q, self._body_sql, limit=q.limit + 1)
        events = [AuditEvent.from_json(row[2]) for row in rows[: q.limit]]
        next_cursor = None
        if len(rows) > q.limit:
            last = rows[q.limit - 1]
            next_cursor = encode_cursor(SortKey(self._key_micros(last[0]), last[1]), q.organization_id)
        return EventPage(events=events, next_cursor=next_cursor)

    def _stream(self, q: EventQuery, columns: str) -> Iterator[tuple[Any, ...]]:
        # Keyset chunks rather than one long-running cursor: each chunk is a short read, so an export never pins a
        # snapshot (SQLite's WAL could not be checkpointed behind it; PostgreSQL's vacuum would be held back), it
        # never holds a pooled connection between chunks, and memory stays at one chunk however long it runs.
        after = q.after
        while True:
            rows = self._select(q, columns, limit=STREAM_CHUNK, after=after)
            yield from rows
            if len(rows) < STREAM_CHUNK:
                return
            last = rows[-1]
            after = SortKey(self._key_micros(last[0]), last[1])

    def iter_events(self, q: EventQuery) -> Iterator[AuditEvent]:
        for row in self._stream(q, self._body_sql):
            yield AuditEvent.from_json(row[2])

    def iter_json(self, q: EventQuery) -> Iterator[str]:
        for row in self._stream(q, self._body_sql):
            yield row[2]

    def iter_csv_rows(self, q: EventQuery) -> Iterator[str]:
        for row in self._stream(q, f"e.csv_row, {self._body_sql}"):
            # An empty line was not made at append time (see `event_row`): made now, from the stored event.
            yield row[2] or csv_row(AuditEvent.from_json(row[3]))

    def count(self, q: EventQuery) -> int:
        sql, params = build_count(q, self._dialect(), lookups=self)
        return int(self._fetchall(sql, params)[0][0])

    def get_retention_days(self, organization_id: str) -> int:
        if not _usable_key(organization_id):
            return DEFAULT_RETENTION_DAYS
        p = self._dialect().param
        rows = self._fetchall(f"SELECT days FROM audit_retention WHERE organization_id = {p}", (organization_id,))
        return int(rows[0][0]) if rows else DEFAULT_RETENTION_DAYS

    def organizations(self) -> list[str]:
        rows = self._fetchall(
            "SELECT organization_id FROM audit_event_actions UNION SELECT organization_id FROM audit_retention", ()
        )
        return sorted(str(row[0]) for row in rows)

    def _cutoff_micros(self, older_than: dt.datetime) -> int:
        if not isinstance(older_than, dt.datetime) or older_than.utcoffset() is None:
            raise ValueError("older_than must be a timezone-aware datetime")
        return to_micros(older_than)

    @staticmethod
    def _check_organization(organization_id: object) -> str:
        if not _usable_key(organization_id):
            raise ValueError(f"invalid organization_id {organization_id!r}")
        return organization_id  # type: ignore[return-value]
