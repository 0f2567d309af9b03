"""The queryable event store: search, filter, export and retention of each organization's audit events.

``open_store(None)`` is the embedded SQLite store in ``./audit.db``; ``open_store("postgresql://...")`` shares one
PostgreSQL database between the app's hosts::

    from centure_audit_middleware.store import EventQuery, open_store

    with open_store("audit.db") as store:
        page = store.query(EventQuery("org_123", action="mcp_proxy.*", limit=20))
        more = store.query(EventQuery("org_123", action="mcp_proxy.*", limit=20, cursor=page.next_cursor))
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from .base import (
    DEFAULT_RETENTION_DAYS,
    EXTENDED_RETENTION_DAYS,
    RETENTION_CHOICES,
    EventStore,
    StoreError,
    StoreUnavailable,
)
from .export import EXPORT_COLUMNS
from .query import MAX_LIMIT, EventPage, EventQuery

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .sqlite import SqliteStore

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_STORE",
    "EXPORT_COLUMNS",
    "EXTENDED_RETENTION_DAYS",
    "MAX_LIMIT",
    "RETENTION_CHOICES",
    "STORE_ENV",
    "EventPage",
    "EventQuery",
    "EventStore",
    "PostgresStore",
    "SqliteStore",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "store_url_from_env",
]

DEFAULT_STORE: Final = "audit.db"
#: Where the CLI finds the store when `--store` is not given (a path, ``sqlite:///path`` or ``postgresql://``).
STORE_ENV: Final = "CENTURE_AUDIT_STORE"

_SQLITE_PREFIX: Final = "sqlite:///"
_POSTGRES_PREFIXES: Final = ("postgresql://", "postgres://")


def store_url_from_env(explicit: str | None = None) -> str | None:
    """`explicit` if given, else ``$CENTURE_AUDIT_STORE`` if set, else None (the default store).

    ``CENTURE_AUDIT_STORE=off`` (which turns the Auditor's local store off) also means the default here: tools
    that read a store then look for ``./audit.db`` rather than for a file named "off".
    """
    if explicit:
        return explicit
    value = os.environ.get(STORE_ENV, "").strip()
    return value if value and value.lower() != "off" else None


def open_store(url_or_path: str | os.PathLike[str] | None = None, *, create: bool = True) -> EventStore:
    """Open (creating and migrating as needed) the event store at `url_or_path`.

    - None: SQLite in ``./audit.db``;
    - a path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``, or ``:memory:``: SQLite;
    - ``postgresql://...`` (or ``postgres://``): PostgreSQL (needs the ``postgres`` extra: psycopg, psycopg-pool).

    `create=False` refuses to create a missing SQLite file (`StoreError`) instead of creating an empty store.
    """
    target = DEFAULT_STORE if url_or_path is None else os.fspath(url_or_path)
    if target.startswith(_POSTGRES_PREFIXES):
        from .postgres import PostgresStore

        return PostgresStore(target)
    if target.startswith(_SQLITE_PREFIX):
        target = target[len(_SQLITE_PREFIX) :]
    elif "://" in target:
        raise ValueError(f"unsupported event store URL {target!r}: use a path, sqlite:///path or postgresql://...")
    if not target:
        raise ValueError("empty event store path")
    from .sqlite import SqliteStore

    return SqliteStore(target, create=create)


def __getattr__(name: str) -> Any:
    # The backends are imported on first use: the PostgreSQL one needs psycopg, which SQLite users may not have.
    if name == "SqliteStore":
        from .sqlite import SqliteStore

        return SqliteStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
