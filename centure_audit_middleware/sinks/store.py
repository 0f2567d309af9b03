"""`StoreSink`: delivers events into the queryable event store (SQLite by default, or PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..events import AuditEvent
from ..store import EventStore, StoreUnavailable, open_store
from .base import RejectEvent, RetryLater, Sink

__all__ = ["StoreSink"]


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
        if isinstance(store, EventStore):
            self.store = store
            self._owns_store = False
        else:
            self.store = open_store(store)
            self._owns_store = True

    def send(self, event: AuditEvent) -> None:
        outcome = self.send_many([event])[0]
        if outcome is not None:
            raise outcome

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        return self.send_encoded(events, None)

    def send_encoded(self, events: Sequence[AuditEvent], bodies: Sequence[str] | None) -> list[BaseException | None]:
        if not events:
            return []
        try:
            self.store.append(events, bodies=bodies)
        except StoreUnavailable as exc:
            # Locked, disk full, connection lost: the whole batch waits for the retry.
            retry = RetryLater(str(exc))
            return [retry for _ in events]
        except Exception:
            # Perhaps one event the store cannot take (ValueError): find it, so that it alone is dead-lettered.
            return [self._append_one(event) for event in events]
        return [None for _ in events]

    def _append_one(self, event: AuditEvent) -> BaseException | None:
        try:
            self.store.append([event])
        except StoreUnavailable as exc:
            return RetryLater(str(exc))
        except ValueError as exc:
            return RejectEvent(f"event store: {exc}")
        except Exception as exc:  # the dispatcher classifies anything else as transient
            return exc
        return None

    def close(self) -> None:
        if self._owns_store:
            self.store.close()
