"""Fixtures and factories for the event store tests: the same tests run on SQLite and, when
``CENTURE_AUDIT_TEST_POSTGRES_DSN`` is set, on PostgreSQL (``scripts/postgres-test-server.sh`` prints one).

PostgreSQL tests share one schema per test session (``centure_test_<random>``, dropped at the end); every test
starts from empty tables (TRUNCATE), so they never see each other's rows nor the database's other users' tables.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from centure_audit_middleware.events import (
    Actor,
    AuditEvent,
    EventContext,
    GeoInfo,
    RequestInfo,
    Target,
    UserAgentInfo,
    new_event_id,
)
from centure_audit_middleware.store import EventStore

from .requirements import missing

POSTGRES_ENV = "CENTURE_AUDIT_TEST_POSTGRES_DSN"
POSTGRES_DSN = os.environ.get(POSTGRES_ENV) or None
# A skip on a developer's machine, a failure under CI=true (tests/requirements.py).
POSTGRES_MISSING = f"PostgreSQL tests need {POSTGRES_ENV} (see scripts/postgres-test-server.sh)"

ORG_A = "org_01ALPHA"
ORG_B = "org_01BRAVO"
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)

ALICE = Actor("user_alice", name="Alice Example", metadata={"email": "alice@example.com", "first_name": "Alice"})
BOB = Actor("user_bob", name="Bob Builder", metadata={"email": "bob@builder.test"})
KEY = Actor("key_ci", type="api_key", name=None)

_TABLES = "audit_events, audit_event_targets, audit_event_actions, audit_event_actors, audit_retention"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def make_event(
    org: str = ORG_A,
    *,
    action: str = "project.create",
    when: dt.datetime | None = None,
    seconds: float = 0,
    actor: Actor = ALICE,
    targets: Sequence[Target] = (),
    metadata: dict[str, Any] | None = None,
    location: str = "203.0.113.7",
    user_agent: str | None = "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
    event_id: str | None = None,
    enriched: bool = False,
) -> AuditEvent:
    """An event at `when` (default `T0`) plus `seconds`."""
    occurred = (when or T0) + dt.timedelta(seconds=seconds)
    return AuditEvent(
        id=event_id or new_event_id(occurred.timestamp()),
        organization_id=org,
        action=action,
        occurred_at=occurred,
        actor=actor,
        targets=tuple(targets),
        context=EventContext(location=location, user_agent=user_agent),
        metadata=metadata if metadata is not None else {"source": "/dashboard"},
        version=1,
        geo=GeoInfo(country_code="DE", country="Germany", city="Berlin", latitude=52.52, asn=3320)
        if enriched
        else None,
        user_agent=UserAgentInfo(browser_family="Firefox", browser_version="125", device_class="desktop")
        if enriched
        else None,
        request=RequestInfo(method="POST", path="/projects", route="/projects", status=201, peer="10.0.0.1")
        if enriched
        else None,
    )


def postgres_url(dsn: str, schema: str) -> str:
    """`dsn` (a postgresql:// URL) with its search path set to `schema`, for the CLI's --store."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema for this test session, dropped at the end."""
    if POSTGRES_DSN is None:
        missing(POSTGRES_MISSING)
    import psycopg
    from psycopg import sql

    schema = f"centure_test_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _truncate(schema: str) -> None:
    """Empty the store's tables in `schema` (creating the schema if needed: the CLI opens it by URL)."""
    import psycopg
    from psycopg import sql

    assert POSTGRES_DSN is not None
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.audit_events",)).fetchone()
        if exists and exists[0] is not None:
            conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL(f"TRUNCATE {_TABLES} RESTART IDENTITY"))  # constant table names


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgres" and POSTGRES_DSN is None:
        missing(POSTGRES_MISSING)
    return name


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL for `open_store` / the CLI's ``--store``, empty at the start of the test."""
    if backend == "sqlite":
        return str(tmp_path / "audit.db")
    schema: str = request.getfixturevalue("pg_schema")
    _truncate(schema)
    assert POSTGRES_DSN is not None
    return postgres_url(POSTGRES_DSN, schema)


@pytest.fixture
def open_same(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], EventStore]]:
    """Opens (another) store on this test's database; every store it opened is closed at the end."""
    opened: list[EventStore] = []
    schema: str | None = request.getfixturevalue("pg_schema") if backend == "postgres" else None
    if schema is not None:
        _truncate(schema)

    def open_() -> EventStore:
        store: EventStore
        if backend == "sqlite":
            from centure_audit_middleware.store.sqlite import SqliteStore

            store = SqliteStore(tmp_path / "audit.db")
        else:
            from centure_audit_middleware.store.postgres import PostgresStore

            assert POSTGRES_DSN is not None
            store = PostgresStore(POSTGRES_DSN, schema=schema, max_size=4)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_same: Callable[[], EventStore]) -> EventStore:
    """An empty event store on each backend."""
    return open_same()
