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
import sqlite3
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
_DISTRIBUTION: Final = "centure-audit-middleware"


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
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            # psycopg is an optional extra: name the install command, not just "No module named 'psycopg'".
            if exc.name is not None and exc.name.partition(".")[0] not in ("psycopg", "psycopg_pool"):
                raise
            raise ModuleNotFoundError(
                f"a PostgreSQL event store needs the postgres extra: pip install '{_DISTRIBUTION}[postgres]' ({exc})",
                name=exc.name,
            ) from None
        return PostgresStore(target)
    if target.startswith(_SQLITE_PREFIX):
        target = target[len(_SQLITE_PREFIX) :]
    elif "://" in target:
        raise ValueError(f"unsupported event store URL {target!r}: use a path, sqlite:///path or postgresql://...")
    if not target:
        raise ValueError("empty event store path")
    if target != ":memory:" and os.path.exists(target) and not os.path.isfile(target):
        # Refused before SQLite opens it: SQLite would create its journal files next to a device or in a directory.
        raise StoreError(f"{target} is not an event store: not a regular file")
    from .sqlite import SqliteStore

    try:
        return SqliteStore(target, create=create)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot open the event store {target}: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database": some other file, e.g. a typo'd path
        raise StoreError(f"{target} is not an event store: {exc}") from None


def __getattr__(name: str) -> Any:
    # The backends are imported on first use: the PostgreSQL one needs psycopg, which SQLite users may not have.
    if name == "SqliteStore":
        from .sqlite import SqliteStore

        return SqliteStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
