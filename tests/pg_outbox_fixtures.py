"""A PostgreSQL outbox of its own per test: a fresh schema, named in the URL's search path, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .requirements import missing
from .store_fixtures import POSTGRES_DSN, POSTGRES_MISSING, postgres_url

__all__ = ["pg_outbox_url"]


@pytest.fixture
def pg_outbox_url() -> Iterator[str]:
    """A ``postgresql://`` URL whose tables land in a schema of this test's own."""
    if POSTGRES_DSN is None:
        missing(POSTGRES_MISSING)  # a failure under CI=true, whatever the test's markers
    import psycopg
    from psycopg import sql

    schema = f"outbox_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield postgres_url(POSTGRES_DSN, schema)
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")  # a process the test started may still be closing
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
