"""Schema migrations for the PostgreSQL parts (the event store, the outbox), shared so that they run the same way.

Each part is a *component* with numbered migrations; the versions applied are rows of ``centure_audit_schema``. A
migration runs in one transaction holding one advisory lock, the same key for every component: hosts starting
together apply each migration once, and the store's and the outbox's migrations never interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg

__all__ = ["MIGRATION_LOCK", "Migrations", "SchemaTooNew", "apply_migrations"]

#: pg_advisory_xact_lock key for schema migrations ("centure" in ASCII); the same for every component and schema,
#: which only means that unrelated migrations wait for each other at startup.
MIGRATION_LOCK: Final = 0x63656E74757265

#: (version, statements) in increasing version order
Migrations = Sequence[tuple[int, Sequence[str]]]


class SchemaTooNew(Exception):
    """The database was migrated by a newer version of the library than this one."""


def apply_migrations(
    conn: psycopg.Connection[Any],
    component: str,
    migrations: Migrations,
    *,
    before: Callable[[psycopg.Connection[Any]], None] | None = None,
    after_each: Callable[[psycopg.Connection[Any], int], None] | None = None,
) -> None:
    """Bring `component` to its newest version on `conn` (in one transaction, under the migration lock).
    `before` runs first under the lock (e.g. CREATE SCHEMA); `after_each(conn, version)` after each migration."""
    newest = migrations[-1][0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        if before is not None:
            before(conn)
        conn.execute(
            """CREATE TABLE IF NOT EXISTS centure_audit_schema (
                component text NOT NULL,
                version integer NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )"""
        )
        row = conn.execute(
            "SELECT coalesce(max(version), 0) FROM centure_audit_schema WHERE component = %s", (component,)
        ).fetchone()
        current = int(row[0]) if row else 0
        if current > newest:
            raise SchemaTooNew(f"{component} schema v{current} is newer than this library's v{newest}")
        for version, statements in migrations:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            if after_each is not None:
                after_each(conn, version)
            conn.execute("INSERT INTO centure_audit_schema (component, version) VALUES (%s, %s)", (component, version))
