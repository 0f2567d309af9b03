"""Transactional recording: audit events written in the app's own database transaction (`audit.bind(tx)`).

With the outbox on PostgreSQL, in the app's database, an event can be committed by the very transaction that makes
the change it records: it commits if and only if the change commits, and once committed it is as durable as the
change (a crash right after the commit loses nothing). The rows are the outbox's usual ones (the event, and its
deliveries for every sink, the local store included); the senders (the app's or a relay fleet) deliver them.

`tx` may be a psycopg 3 or psycopg2 connection (any DB-API connection with PostgreSQL's placeholders), or a
SQLAlchemy `Session` or `Connection` (the rows go through the connection of the session's current transaction).
Async connections and sessions (psycopg's `AsyncConnection`, SQLAlchemy's `AsyncSession`) take `await audit.abind(tx)`:
the writes are awaited in the app's event loop.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .context import PendingEvent, RequestContext

if TYPE_CHECKING:
    from .auditor import Auditor
    from .delivery.pg_outbox import PostgresOutbox

__all__ = [
    "TransactionalRecordingError",
    "async_connection",
    "dbapi_connection",
    "still_open",
    "write_in_transaction",
    "write_in_transaction_async",
]


class TransactionalRecordingError(TypeError):
    """`audit.bind()` was given something it can't write through, or the outbox is not on PostgreSQL."""


def dbapi_connection(tx: Any) -> Any:
    """The DB-API connection under `tx`, in the transaction `tx` is in."""
    if inspect.iscoroutinefunction(getattr(tx, "commit", None)) or inspect.iscoroutinefunction(
        getattr(tx, "execute", None)
    ):
        raise TransactionalRecordingError(
            f"audit.bind() takes a synchronous connection or session, not {type(tx).__name__} "
            "(use await audit.abind() for an async one)"
        )
    get_bind = getattr(tx, "get_bind", None)
    if get_bind is not None and callable(getattr(tx, "connection", None)):  # a SQLAlchemy Session
        tx = tx.connection()  # begins the session's transaction if it has none yet
    pooled = getattr(tx, "connection", None)  # a SQLAlchemy Connection: its pooled DB-API connection
    driver = getattr(pooled, "driver_connection", None)
    if driver is not None:
        return driver
    if callable(getattr(tx, "cursor", None)):
        return tx
    raise TransactionalRecordingError(
        f"audit.bind() takes a psycopg connection or a SQLAlchemy Session/Connection, not {type(tx).__name__}"
    )


#: psycopg's (3 and 2) `info.transaction_status` values of a connection inside a transaction: active, in one, failed
_IN_TRANSACTION = frozenset({1, 2, 3})


def still_open(tx: Any, connection: Any) -> bool:
    """Whether the transaction `tx` was in when it was bound is still open, so that a later `audit.record()` may be
    written through `connection` (from `dbapi_connection(tx)`). Once it ended the connection may be back in a pool,
    idle or in another request's transaction: never written to then."""
    in_transaction = getattr(tx, "in_transaction", None)  # a SQLAlchemy Session or Connection
    if callable(in_transaction):
        return bool(in_transaction())
    status = getattr(getattr(connection, "info", None), "transaction_status", None)  # psycopg 3, psycopg2 >= 2.8
    return status is None or int(status) in _IN_TRANSACTION  # (a connection that can't tell: taken at its word)


def _prepared(
    auditor: Auditor, items: Sequence[RequestContext | PendingEvent]
) -> tuple[PostgresOutbox, list[tuple[str, float, str]], list[str], bool]:
    """The outbox, and `items` built (or captured, in relay mode) as its rows, with the sinks they are owed to."""
    from .delivery.pg_outbox import PostgresOutbox

    dispatcher = auditor.dispatcher
    outbox = dispatcher.outbox
    if not isinstance(outbox, PostgresOutbox):
        raise TransactionalRecordingError(
            "transactional recording needs the outbox on PostgreSQL, in the app's database "
            "(Auditor(outbox='postgresql://...') or CENTURE_AUDIT_OUTBOX)"
        )
    captured = dispatcher.config.delivery == "relay"
    now = time.time()
    rows: list[tuple[str, float, str]] = []
    for item in items:
        if captured:  # the relay completes it, as any event an app in relay mode commits
            event_id, body = dispatcher.builder.capture(item)
        else:
            event = dispatcher.builder.build(item)
            event_id, body = event.id, event.to_json()
        rows.append((event_id, now, body))
    # Every sink's delivery, the inline ones (the store) too: the committer never sees these events.
    return outbox, rows, [] if captured else [sink.name for sink in dispatcher.sinks], captured


def write_in_transaction(auditor: Auditor, connection: Any, items: Sequence[RequestContext | PendingEvent]) -> None:
    """Build `items` here and write them through `connection` (from `dbapi_connection`). Raises what building
    raises (an `EventError`: no organization, a validator's refusal), so that the app can roll back rather than act
    unaudited."""
    outbox, rows, sinks, captured = _prepared(auditor, items)
    if rows:
        outbox.add_in(connection, rows, sinks, captured)
        auditor.dispatcher.start()  # this process's senders (or another's) deliver them once the transaction commits


async def async_connection(tx: Any) -> Any:
    """The async driver connection under `tx` (a psycopg `AsyncConnection`, a SQLAlchemy `AsyncSession` or
    `AsyncConnection`), in the transaction `tx` is in."""
    if callable(getattr(tx, "get_bind", None)) and inspect.iscoroutinefunction(getattr(tx, "connection", None)):
        tx = await tx.connection()  # an AsyncSession: its connection (beginning its transaction if need be)
    get_raw = getattr(tx, "get_raw_connection", None)
    if inspect.iscoroutinefunction(get_raw):  # a SQLAlchemy AsyncConnection
        raw = await get_raw()
        return raw.driver_connection
    if callable(getattr(tx, "cursor", None)) and inspect.iscoroutinefunction(getattr(tx, "execute", None)):
        return tx
    raise TransactionalRecordingError(
        "await audit.abind() takes a psycopg AsyncConnection or a SQLAlchemy AsyncSession/AsyncConnection, "
        f"not {type(tx).__name__} (use audit.bind() for a synchronous one)"
    )


async def write_in_transaction_async(
    auditor: Auditor, connection: Any, items: Sequence[RequestContext | PendingEvent]
) -> None:
    """`write_in_transaction` through an async connection (from `async_connection`)."""
    outbox, rows, sinks, captured = _prepared(auditor, items)
    if rows:
        await outbox.add_in_async(connection, rows, sinks, captured)
        auditor.dispatcher.start()
