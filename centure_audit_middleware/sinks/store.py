"""`StoreSink`: delivers events into the queryable event store (SQLite by default, or PostgreSQL)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..delivery.location import is_postgres_url
from ..events import AuditEvent
from ..store import DEFAULT_STORE, EventStore, StoreUnavailable, open_store
from .base import RejectEvent, RetryLater, Sink

__all__ = ["StoreSink"]

#: Events indexed per idle round (~10 µs each, a third of their cost in small groups), and how many must be
#: waiting before a busy committer spends a round on them.
INDEX_BATCH: Final = 2000
#: Once no event has come for this long, whatever is waiting is indexed, however few.
INDEX_QUIET: Final = 1.0


class StoreSink(Sink):
    """Appends delivered events to an `EventStore`.

    `store` is a store instance (the caller keeps it, e.g. to serve the admin page from it, and closes it), or a
    path / URL for `open_store` (None: ``./audit.db``), which the sink opens and closes itself.

    Appends are idempotent by event id, so the dispatcher's redeliveries after a crash are harmless. A batch is one
    transaction; an event the store can never take (e.g. no organization) is rejected alone, the rest stored.
    """

    name = "store"
    inline = True

    def __init__(self, store: EventStore | str | os.PathLike[str] | None = None, *, name: str = "store") -> None:
        self.name = name
        self._store: EventStore | None = store if isinstance(store, EventStore) else None
        location = None if isinstance(store, EventStore) else os.fspath(store or DEFAULT_STORE)
        if location is not None and "://" not in location:
            location = os.path.abspath(location)  # opened later: a chdir meanwhile must not move the store
        self._location = location
        self._owns_store = not isinstance(store, EventStore)
        self._lock = threading.Lock()
        # Events appended since the index last caught up (an estimate: other processes append too). Starts as
        # "some", so that what an earlier run left unindexed is indexed at the first quiet moment.
        self._unindexed = 1
        self._last_append = time.monotonic()

    @property
    def store(self) -> EventStore:
        """The store; a path or URL is opened on first use, so that an app that records nothing (an import, a test
        whose Auditor records into `audit_log`) never creates the database file."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self._location)
        return self._store

    def send(self, event: AuditEvent) -> None:
        outcome = self.send_many([event])[0]
        if outcome is not None:
            raise outcome

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        return self.send_encoded(events, None)

    def send_encoded(self, events: Sequence[AuditEvent], bodies: Sequence[str] | None) -> list[BaseException | None]:
        if not events:
            return []
        self._last_append = time.monotonic()
        try:
            self._unindexed += self.store.append(events, bodies=bodies)
        except StoreUnavailable as exc:
            # Locked, disk full, connection lost: the whole batch waits for the retry.
            retry = RetryLater(str(exc))
            return [retry for _ in events]
        except Exception:
            # Perhaps one event the store cannot take (ValueError): find it, so that it alone is dead-lettered.
            return [self._append_one(event) for event in events]
        return [None for _ in events]

    def joined_writer(self, outbox: object) -> Callable[[Any, Sequence[AuditEvent], Sequence[str]], None] | None:
        """The store's append through the outbox's connection when both are the same PostgreSQL database (and the
        store's tables are in the outbox's search path): the event's store row and outbox rows then commit in one
        transaction."""
        conninfo = getattr(outbox, "conninfo", None)
        if conninfo is None or (self._store is None and not is_postgres_url(self._location or "")):
            return None  # a SQLite store is never the outbox's database (and need not be opened to say so)
        store = self.store
        same = getattr(store, "same_database", None)
        if same is None or not same(conninfo):
            return None
        append_in: Callable[[Any, Sequence[AuditEvent], Sequence[str]], None] = store.append_in  # type: ignore[attr-defined]
        return append_in

    def idle(self) -> None:
        """Index a batch of the events appended since the store's free-text index last caught up: when a full
        batch waits, or once events have stopped coming. Never opens the store for it."""
        if self._store is None or not self._unindexed:
            return
        if self._unindexed < INDEX_BATCH and time.monotonic() - self._last_append < INDEX_QUIET:
            return
        try:
            covered = self._store.index_pending(INDEX_BATCH)
        except Exception:  # busy or read-only: a search indexes them (or reads them row by row) meanwhile
            return
        self._unindexed = 0 if covered < INDEX_BATCH else max(1, self._unindexed - covered)

    def _append_one(self, event: AuditEvent) -> BaseException | None:
        try:
            self._unindexed += self.store.append([event])
        except StoreUnavailable as exc:
            return RetryLater(str(exc))
        except ValueError as exc:
            return RejectEvent(f"event store: {exc}")
        except Exception as exc:  # the dispatcher classifies anything else as transient
            return exc
        return None

    def close(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
