"""The event store in PostgreSQL, for apps that run on many hosts (psycopg 3 and a psycopg_pool connection pool).

Schema: the same tables as the SQLite backend (see `SqlEventStore`), the full event as JSONB, every key column in
the ``"C"`` collation (byte order: the keyset order and the action-prefix ranges then match SQLite's exactly, and
``>=``/``<`` ranges can use the btree indexes whatever the database's locale).

Migrations run at open, in one transaction holding an advisory lock, so hosts starting together apply each one
once; their versions are rows of ``centure_audit_schema`` (component ``store``).

Free text: ``search_text LIKE '%needle%'`` over a column the library fills (the same case folding as SQLite's), with
a ``pg_trgm`` GIN index when the extension can be created (it is a trusted extension: the database owner may).
Chosen over ``to_tsvector`` because audit searches are fragments of emails, ids, IP addresses and names, which
full-text search's word stemming would not find ("alice@exa", "proj_12"), and because substring semantics are
what the SQLite backend gives, so both answer the same. Without ``pg_trgm`` the search still works, by scanning.

PostgreSQL text cannot hold NUL characters (nor JSONB ``\\u0000``): the store replaces NUL with U+FFFD in what it
writes, the one lossy change it makes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ..events import AuditEvent
from ..pg_schema import SchemaTooNew, apply_migrations
from .base import SqlEventStore, StoredRow, StoreError, StoreUnavailable, check_retention_days, event_row
from .query import Dialect, EventQuery, TextCondition, escape_like, from_micros, to_micros

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

COMPONENT: Final = "store"
PRUNE_BATCH: Final = 5000

_V1: Final = (
    """CREATE TABLE audit_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text COLLATE "C" NOT NULL UNIQUE,
        organization_id text COLLATE "C" NOT NULL,
        occurred_at timestamptz NOT NULL,
        action text COLLATE "C" NOT NULL,
        actor_id text COLLATE "C" NOT NULL,
        actor_name text COLLATE "C",
        actor_type text NOT NULL,
        search_text text NOT NULL,
        body jsonb NOT NULL,
        csv_row text NOT NULL
    )""",
    "CREATE INDEX audit_events_org_time ON audit_events (organization_id, occurred_at DESC, id DESC)",
    "CREATE INDEX audit_events_org_action ON audit_events (organization_id, action, occurred_at DESC, id DESC)",
    "CREATE INDEX audit_events_org_actor_id ON audit_events (organization_id, actor_id, occurred_at DESC, id DESC)",
    """CREATE TABLE audit_event_targets (
        seq bigint NOT NULL REFERENCES audit_events (seq) ON DELETE CASCADE,
        position integer NOT NULL,
        organization_id text COLLATE "C" NOT NULL,
        type text COLLATE "C" NOT NULL,
        target_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (seq, position)
    )""",
    "CREATE INDEX audit_event_targets_id ON audit_event_targets (organization_id, target_id, type, seq)",
    """CREATE TABLE audit_event_actions (
        organization_id text COLLATE "C" NOT NULL,
        action text COLLATE "C" NOT NULL,
        PRIMARY KEY (organization_id, action)
    )""",
    """CREATE TABLE audit_event_actors (
        organization_id text COLLATE "C" NOT NULL,
        actor_name text COLLATE "C" NOT NULL,
        actor_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (organization_id, actor_name, actor_id)
    )""",
    """CREATE TABLE audit_retention (
        organization_id text COLLATE "C" PRIMARY KEY,
        days integer NOT NULL CHECK (days > 0),
        updated_at timestamptz NOT NULL
    )""",
)

MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = ((1, _V1),)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


class _PostgresDialect(Dialect):
    param = "%s"

    def time_value(self, micros: int) -> object:
        return from_micros(micros)

    def text_condition(self, q: EventQuery, needle: str) -> TextCondition:
        # With the trigram index, the planner may collect the matches and sort them: say so.
        return TextCondition("e.search_text LIKE %s ESCAPE '\\'", ["%" + escape_like(needle) + "%"], True)


_DIALECT: Final = _PostgresDialect()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _pg_safe(row: StoredRow) -> StoredRow:
    text = (row.actor_name or "") + row.actor_type + row.search_text + row.csv_row
    if "\\u0000" not in row.body and "\x00" not in text:
        return row  # the usual case: two substring tests per row
    body = json.dumps(_without_nul(json.loads(row.body)), separators=(",", ":"), ensure_ascii=False)
    return row._replace(
        actor_name=_without_nul(row.actor_name),
        actor_type=_without_nul(row.actor_type),
        search_text=_without_nul(row.search_text),
        body=body,
        csv_row=_without_nul(row.csv_row),
    )


def _rows(
    events: Sequence[AuditEvent], bodies: Sequence[str] | None
) -> tuple[dict[str, StoredRow], dict[str, list[tuple[int, str, str]]]]:
    """Each distinct event's store row and its targets (position, type, id), NUL-free."""
    rows: dict[str, StoredRow] = {}
    targets: dict[str, list[tuple[int, str, str]]] = {}
    for i, event in enumerate(events):
        # The CSV line is made here, unlike SQLite's: JSONB reorders the keys of the stored body, so a line made at
        # export from it would not be the event's own (test_csv_rows_are_stored_ready_made).
        row = _pg_safe(event_row(event, None if bodies is None else bodies[i]))
        if row.id in rows:
            continue
        rows[row.id] = row
        targets[row.id] = [(i, _without_nul(t.type), _without_nul(t.id)) for i, t in enumerate(event.targets)]
    return rows, targets


def _configure_connection(conn: psycopg.Connection[Any]) -> None:
    # The staging table of `append`: per session (temporary), emptied by every commit.
    conn.execute(
        """CREATE TEMPORARY TABLE IF NOT EXISTS audit_events_incoming (
            id text, organization_id text, occurred_at timestamptz, action text, actor_id text, actor_name text,
            actor_type text, search_text text, body text, csv_row text
        ) ON COMMIT DELETE ROWS"""
    )


def _check_schema_name(schema: str) -> str:
    if not schema or len(schema) > 63 or "\x00" in schema:
        raise ValueError(f"invalid PostgreSQL schema name {schema!r}")
    return schema


class PostgresStore(SqlEventStore):
    """The event store in a PostgreSQL database. `conninfo` is a libpq DSN or ``postgresql://`` URL.

    `schema` puts the tables in that schema (created if missing) instead of the role's default search path.
    Opening fails with `StoreUnavailable` if the server cannot be reached within `timeout` seconds.
    """

    _body_sql = "e.body::text"

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 10.0,
    ) -> None:
        self.schema = _check_schema_name(schema) if schema is not None else None
        self.conninfo = conninfo
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema is not None:
            # Quoted as an identifier inside the libpq `options` value (itself a command-line style string).
            quoted = '"' + self.schema.replace('"', '""') + '"'
            kwargs["options"] = "-c search_path=" + quoted.replace("\\", "\\\\").replace(" ", "\\ ")
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            name="centure-audit-store",
            timeout=timeout,
            # A host whose database restarted must not hand out dead connections to the next request.
            check=ConnectionPool.check_connection,
            configure=_configure_connection,
        )
        self._closed = False
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._migrate()
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(f"PostgreSQL: cannot connect within {timeout} s: {exc}") from exc
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    # --- schema ---

    def _migrate(self) -> None:
        def create_schema(conn: psycopg.Connection[Any]) -> None:
            if self.schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))

        def after_each(conn: psycopg.Connection[Any], version: int) -> None:
            if version == 1:
                self._create_trigram_index(conn)

        with self._pool.connection() as conn:
            try:
                apply_migrations(conn, COMPONENT, MIGRATIONS, before=create_schema, after_each=after_each)
            except SchemaTooNew as exc:
                raise StoreError(f"event store: {exc}") from None

    @staticmethod
    def _create_trigram_index(conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():  # a savepoint: without pg_trgm the migration goes on, searches just scan
                row = conn.execute(
                    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
                ).fetchone()
                if row is None:
                    # In `public`, not in the first schema of the search path: a per-app (or per-test) schema may
                    # be dropped, and the extension is database-wide.
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                    namespace = "public"
                else:
                    namespace = str(row[0]).strip('"')
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX audit_events_search_trgm ON audit_events USING gin (search_text {}.{})"
                    ).format(sql.Identifier(namespace), sql.Identifier("gin_trgm_ops"))
                )
        except psycopg.Error as exc:
            logger.warning("pg_trgm unavailable (%s); free-text search will scan instead of using an index", exc)

    # --- SqlEventStore primitives ---

    def _dialect(self) -> Dialect:
        return _DIALECT

    def _fetchall(self, query: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        if self._closed:
            raise StoreError("the event store is closed")
        try:
            with self._pool.connection() as conn:
                return conn.execute(query, params).fetchall()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def _key_micros(self, value: Any) -> int:
        return to_micros(value)

    # --- writes ---

    def append(self, events: Sequence[AuditEvent], *, bodies: Sequence[str] | None = None) -> int:
        rows, targets = _rows(events, bodies)
        if not rows:
            return 0
        if self._closed:
            raise StoreError("the event store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                return self._insert(conn, rows, targets)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def same_database(self, conninfo: str) -> bool:
        """Whether `conninfo` (an outbox's) reaches this store's tables: the same DSN, no schema of the store's own."""
        return self.schema is None and conninfo == self.conninfo

    def append_in(self, conn: psycopg.Connection[Any], events: Sequence[AuditEvent], bodies: Sequence[str]) -> None:
        """`append` through `conn`, inside the transaction it is in (the outbox's group commit): the store rows
        commit with the outbox rows, or not at all."""
        rows, targets = _rows(events, bodies)
        if rows:
            _configure_connection(conn)  # the staging table, on a connection the store's pool did not make
            self._insert(conn, rows, targets)

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        rows: dict[str, StoredRow],
        targets: dict[str, list[tuple[int, str, str]]],
    ) -> int:
        values = list(rows.values())
        # COPY into a per-connection staging table, then one INSERT ... ON CONFLICT: COPY is ten times
        # faster than passing the batch as arrays, and ON CONFLICT keeps the append idempotent.
        with conn.cursor().copy(
            "COPY pg_temp.audit_events_incoming (id, organization_id, occurred_at, action, actor_id,"
            " actor_name, actor_type, search_text, body, csv_row) FROM STDIN"
        ) as copy:
            for r in values:
                copy.write_row(
                    (
                        r.id,
                        r.organization_id,
                        from_micros(r.occurred_at_us),
                        r.action,
                        r.actor_id,
                        r.actor_name,
                        r.actor_type,
                        r.search_text,
                        r.body,
                        r.csv_row,
                    )
                )
        inserted = conn.execute(
            """INSERT INTO audit_events (id, organization_id, occurred_at, action, actor_id, actor_name,
                                         actor_type, search_text, body, csv_row)
            SELECT id, organization_id, occurred_at, action, actor_id, actor_name, actor_type, search_text,
                   body::jsonb, csv_row
            FROM pg_temp.audit_events_incoming
            ON CONFLICT (id) DO NOTHING
            RETURNING seq, id"""
        ).fetchall()
        if not inserted:
            return 0
        pairs: set[tuple[str, str]] = set()
        actors: set[tuple[str, str, str]] = set()
        with conn.cursor().copy(
            "COPY audit_event_targets (seq, position, organization_id, type, target_id) FROM STDIN"
        ) as copy:
            for seq, event_id in inserted:
                row = rows[event_id]
                pairs.add((row.organization_id, row.action))
                if row.actor_name:
                    actors.add((row.organization_id, row.actor_name, row.actor_id))
                for position, target_type, target_id in targets[event_id]:
                    copy.write_row((seq, position, row.organization_id, target_type, target_id))
        # Sorted: concurrent appends then lock these rows in one order and cannot deadlock on each other.
        ordered = sorted(pairs)
        conn.execute(
            "INSERT INTO audit_event_actions (organization_id, action)"
            " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
            ([o for o, _ in ordered], [a for _, a in ordered]),
        )
        if actors:
            by_key = sorted(actors)
            conn.execute(
                "INSERT INTO audit_event_actors (organization_id, actor_name, actor_id)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                ([o for o, _, _ in by_key], [n for _, n, _ in by_key], [i for _, _, i in by_key]),
            )
        return len(inserted)

    def _execute(self, query: str, params: Sequence[object]) -> int:
        if self._closed:
            raise StoreError("the event store is closed")
        try:
            with self._pool.connection() as conn:
                return conn.execute(query, params).rowcount
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def prune(self, organization_id: str, older_than: dt.datetime) -> int:
        organization_id = self._check_organization(organization_id)
        cutoff = from_micros(self._cutoff_micros(older_than))
        total = 0
        while True:
            # Batches, each its own transaction: short locks, and the dispatcher's appends go on meanwhile.
            deleted = self._execute(
                "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events"
                " WHERE organization_id = %s AND occurred_at < %s ORDER BY occurred_at LIMIT %s)",
                (organization_id, cutoff, PRUNE_BATCH),
            )
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    def analyze(self) -> None:
        """Refresh the query planner's statistics (autovacuum does it too, later); worth running after a bulk load."""
        self._execute("ANALYZE audit_events, audit_event_targets, audit_event_actions", ())

    def set_retention_days(self, organization_id: str, days: int) -> None:
        organization_id = self._check_organization(organization_id)
        check_retention_days(days)
        self._execute(
            "INSERT INTO audit_retention (organization_id, days, updated_at) VALUES (%s, %s, now())"
            " ON CONFLICT (organization_id) DO UPDATE SET days = excluded.days, updated_at = now()",
            (organization_id, days),
        )
