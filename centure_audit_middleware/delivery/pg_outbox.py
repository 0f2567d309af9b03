"""The outbox in PostgreSQL: for apps on many hosts, where no event may depend on one host's disk.

`Auditor(outbox="postgresql://...")` or ``CENTURE_AUDIT_OUTBOX=postgresql://...``. The same rows and methods as the
SQLite `Outbox` (events, per-sink deliveries with leases, dead letters, replay), with what a fleet adds:

- **Concurrent senders.** Any number of processes, on any hosts (app processes, `centure-audit relay`s), claim due
  rows with ``FOR UPDATE SKIP LOCKED``: each row is leased to one of them, and a slow one never holds rows another
  could send. There is no sender lock as with SQLite.
- **Heartbeats.** Every sender upserts a row of ``centure_audit_outbox_senders`` every `beat_interval` (a thread of
  its own, so a slow send does not stop it). A sender not seen for `dead_after` seconds is gone: any sender hands
  its leases back within a second of noticing, so its rows are resent within seconds, not when the lease expires.
  Liveness uses the database's clock, so hosts' clocks need not agree.
- **A shared rate limit** (`PostgresRateLimiter`): WorkOS limits per API key and address, not per process, so the
  fleet shares one token bucket per sink, a row updated by every send.
- **Transactional writes** (`add_in`): the rows of an event written through the app's own connection, inside its
  business transaction (see `centure_audit_middleware.transactional`).

Events are committed in groups with one statement per table (``unnest`` over arrays). Migrations run under the
advisory lock the event store uses (`pg_schema`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool

from ..pg_schema import SchemaTooNew, apply_migrations
from .location import redact_dsn
from .outbox import Claim, DeadLetter, OutboxStats, SenderInfo, due_at, new_owner

__all__ = ["PostgresOutbox", "PostgresRateLimiter"]

COMPONENT: Final = "outbox"
#: the database's clock, in epoch seconds (liveness and the shared rate limit use it: hosts' clocks may differ)
_DB_NOW: Final = "extract(epoch from clock_timestamp())"

_V1: Final = (
    """CREATE TABLE centure_audit_outbox_events (
        id text COLLATE "C" PRIMARY KEY,
        recorded_at double precision NOT NULL,
        body text NOT NULL,
        captured boolean NOT NULL DEFAULT false,
        capture_until double precision NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX centure_audit_outbox_events_captured ON centure_audit_outbox_events (id) WHERE captured",
    """CREATE TABLE centure_audit_outbox_deliveries (
        sink text COLLATE "C" NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        lease_owner text,
        lease_until double precision NOT NULL DEFAULT 0,
        last_error text,
        dead_at double precision,
        PRIMARY KEY (sink, event_id)
    )""",
    """CREATE INDEX centure_audit_outbox_due ON centure_audit_outbox_deliveries (sink, next_attempt_at, event_id)
        WHERE state = 'pending'""",
    "CREATE INDEX centure_audit_outbox_event ON centure_audit_outbox_deliveries (event_id)",
    """CREATE INDEX centure_audit_outbox_leased ON centure_audit_outbox_deliveries (lease_owner)
        WHERE lease_owner IS NOT NULL""",
    """CREATE TABLE centure_audit_outbox_senders (
        owner text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        role text NOT NULL,
        started_at double precision NOT NULL,
        last_beat double precision NOT NULL
    )""",
    """CREATE TABLE centure_audit_outbox_rate (
        sink text PRIMARY KEY,
        tokens double precision NOT NULL,
        updated double precision NOT NULL
    )""",
)
MIGRATIONS: Final = ((1, _V1),)

_EVENTS: Final = "centure_audit_outbox_events"
#: how long a relay holds the captured events it took to complete (completing 500 takes well under a second)
_CAPTURE_LEASE: Final = 10.0
_DELIVERIES: Final = "centure_audit_outbox_deliveries"

# One statement per table for a whole group: arrays in, unnest out.
_ADD_EVENTS: Final = (
    f"INSERT INTO {_EVENTS} (id, recorded_at, body, captured)"
    " SELECT id, r, b, %s FROM unnest(%s::text[], %s::float8[], %s::text[]) AS v(id, r, b)"
    " ON CONFLICT (id) DO NOTHING"
)
_ADD_PENDING: Final = (
    f"INSERT INTO {_DELIVERIES} (sink, event_id, next_attempt_at)"
    " SELECT s, id, due FROM unnest(%s::text[], %s::text[], %s::float8[]) AS v(s, id, due)"
    " ON CONFLICT (sink, event_id) DO NOTHING"
)
_ADD_DEAD: Final = (
    f"INSERT INTO {_DELIVERIES} (sink, event_id, state, next_attempt_at, last_error, dead_at)"
    " SELECT s, id, 'dead', %s, why, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(s, id, why)"
    " ON CONFLICT (sink, event_id) DO UPDATE SET state = 'dead', last_error = excluded.last_error,"
    " dead_at = excluded.dead_at, lease_owner = NULL, lease_until = 0"
)


def _pg_text(text: str) -> str:
    """PostgreSQL text holds no NUL: it becomes U+FFFD (the store does the same)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _split(rows: Sequence[tuple[str, float, str]]) -> tuple[list[str], list[float], list[str]]:
    return [r[0] for r in rows], [r[1] for r in rows], [_pg_text(r[2]) for r in rows]


def _group_statements(
    events: Sequence[tuple[str, float, str]], sinks: Sequence[str], captured: bool
) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (SQL, parameters) inserting events pending for `sinks`, with PostgreSQL's placeholders: what
    any DB-API driver for it (psycopg 3, psycopg2), sync or async, can run on the app's own connection."""
    now = time.time()
    ids, recorded, bodies = _split(events)
    statements: list[tuple[str, tuple[Any, ...]]] = [(_ADD_EVENTS, (captured, ids, recorded, bodies))]
    if sinks and ids:
        pairs = [(sink, event_id) for event_id in ids for sink in sinks]
        dues = [due_at(i, now) for _, i in pairs]
        statements.append((_ADD_PENDING, ([s for s, _ in pairs], [i for _, i in pairs], dues)))
    return statements


def _group(conn: Any, events: Sequence[tuple[str, float, str]], sinks: Sequence[str], captured: bool) -> None:
    """Insert events pending for `sinks` through `conn` (a psycopg connection, or any DB-API cursor's owner)."""
    cur = conn.cursor()
    for statement, params in _group_statements(events, sinks, captured):
        cur.execute(statement, params)


_INCOMING: Final = "pg_temp.centure_audit_outbox_incoming"


def _configure(conn: psycopg.Connection[Any]) -> None:
    # The staging table of `_copy_group`: per session (temporary), emptied by every commit.
    conn.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS centure_audit_outbox_incoming"
        " (id text, recorded_at float8, body text, due float8) ON COMMIT DELETE ROWS"
    )


def _copy_group(
    conn: psycopg.Connection[Any], events: Sequence[tuple[str, float, str]], sinks: Sequence[str], captured: bool
) -> None:
    """`_group` for the outbox's own connections: COPY into a staging table, then two INSERT ... SELECT. Passing a
    group as text arrays costs ~50 µs of CPU per event (psycopg escapes each element with a regex); COPY ~5."""
    now = time.time()
    with conn.cursor().copy(f"COPY {_INCOMING} (id, recorded_at, body, due) FROM STDIN") as copy:
        for event_id, recorded_at, body in events:
            copy.write_row((event_id, recorded_at, _pg_text(body), due_at(event_id, now)))
    conn.execute(
        f"INSERT INTO {_EVENTS} (id, recorded_at, body, captured) SELECT id, recorded_at, body, %s FROM {_INCOMING}"
        " ON CONFLICT (id) DO NOTHING",
        (captured,),
    )
    if sinks:
        conn.execute(
            f"INSERT INTO {_DELIVERIES} (sink, event_id, next_attempt_at)"
            f" SELECT s.sink, i.id, i.due FROM {_INCOMING} i CROSS JOIN unnest(%s::text[]) AS s(sink)"
            " ON CONFLICT (sink, event_id) DO NOTHING",
            (list(sinks),),
        )


class PostgresOutbox:
    """The outbox in a PostgreSQL database (`conninfo`: a libpq DSN or ``postgresql://`` URL)."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_size: int = 16,
        timeout: float = 5.0,
        beat_interval: float = 1.0,
        dead_after: float = 5.0,
        role: str = "app",
    ) -> None:
        self.conninfo = conninfo
        self.path = redact_dsn(conninfo)
        self.owner = new_owner()
        self.role = role
        self.beat_interval = beat_interval
        self.dead_after = dead_after
        self._max_size = max_size
        self._timeout = timeout
        self._opening = threading.Lock()
        self._pool_or_none: ConnectionPool[psycopg.Connection[Any]] | None = self._open_pool()
        self._beating: threading.Thread | None = None
        self._stop_beating = threading.Event()
        self._last_reap = 0.0
        self._last_sweep = 0.0
        self._housekeeping = threading.Lock()  # one thread of this process reaps at a time
        self._started_at = time.time()

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self._max_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(self._timeout))},
            open=False,
            name="centure-audit-outbox",
            timeout=self._timeout,
            check=ConnectionPool.check_connection,
            configure=_configure,
        )
        try:
            pool.open(wait=True, timeout=self._timeout)
            with pool.connection() as conn:
                apply_migrations(conn, COMPONENT, MIGRATIONS)
        except SchemaTooNew as exc:
            pool.close()
            raise RuntimeError(f"audit outbox: {exc}") from None
        except BaseException:
            pool.close()
            raise
        return pool

    # -- connections -------------------------------------------------------------------------------------------
    @property
    def _pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool_or_none
        if pool is None:
            with self._opening:
                pool = self._pool_or_none
                if pool is None:
                    pool = self._pool_or_none = self._open_pool()
        return pool

    def forget_connections(self) -> None:
        """After fork: the child must not use the parent's connections, nor close them (psycopg leaves a connection
        made by another process alone when it is collected). A pool of its own is opened on first use, not here in
        the fork hook: a forking server would wait for every child to connect."""
        self._pool_or_none = None
        self._opening = threading.Lock()
        self._beating = None
        self._stop_beating = threading.Event()
        self._housekeeping = threading.Lock()  # (a parent's thread may have held it at the fork: never released here)
        self._started_at = time.time()  # this process's start, in its heartbeat row
        self.owner = new_owner()

    def close(self) -> None:
        self._stop_beating.set()
        beating = self._beating
        if beating is not None and beating is not threading.current_thread():
            beating.join(timeout=2)
        self._beating = None
        pool, self._pool_or_none = self._pool_or_none, None
        if pool is None:  # never opened (a forked child that did nothing): nothing to close
            return
        with contextlib.suppress(Exception), pool.connection() as conn:  # (if not, the row simply ages out)
            conn.execute("DELETE FROM centure_audit_outbox_senders WHERE owner = %s", (self.owner,))
        pool.close()

    def _fetch(self, query: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(query, args).fetchall()

    # -- liveness ----------------------------------------------------------------------------------------------
    def _ensure_beating(self) -> None:
        if self._beating is None or not self._beating.is_alive():
            self.beat()  # before the first claim: a sender is never without a heartbeat while it holds leases
            self._stop_beating = threading.Event()
            self._beating = threading.Thread(target=self._beat_loop, name="centure-audit-heartbeat", daemon=True)
            self._beating.start()

    def _beat_loop(self) -> None:
        stop = self._stop_beating
        while not stop.wait(self.beat_interval):
            # The database is away: the next beat tries again (leases still expire at worst).
            with contextlib.suppress(Exception):
                self.beat()

    def beat(self) -> None:
        """Say this sender is alive (host, pid, role), on the database's clock."""
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO centure_audit_outbox_senders (owner, host, pid, role, started_at, last_beat)"
                f" VALUES (%s, %s, %s, %s, %s, {_DB_NOW})"
                " ON CONFLICT (owner) DO UPDATE SET last_beat = excluded.last_beat",
                (self.owner, socket.gethostname(), os.getpid(), self.role, self._started_at),
            )

    def reap(self) -> int:
        """Hand back the leases of senders whose heartbeat stopped (killed, host gone); how many were."""
        with self._pool.connection() as conn:
            return conn.execute(
                f"UPDATE {_DELIVERIES} SET lease_owner = NULL, lease_until = 0"
                " WHERE lease_owner IS NOT NULL AND lease_owner NOT IN"
                f" (SELECT owner FROM centure_audit_outbox_senders WHERE last_beat > {_DB_NOW} - %s)",
                (self.dead_after,),
            ).rowcount

    def sweep(self) -> None:
        """Collect leftovers (a whole-table anti-join: run once a minute, not with every reap): two senders settling
        the same event's last two deliveries at once may each still see the other's row and neither delete the
        event; and forget senders silent for a day."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(f"DELETE FROM centure_audit_outbox_senders WHERE last_beat < {_DB_NOW} - 86400")
            conn.execute(
                f"DELETE FROM {_EVENTS} e WHERE NOT e.captured AND e.recorded_at < %s"
                f" AND NOT EXISTS (SELECT 1 FROM {_DELIVERIES} d WHERE d.event_id = e.id)",
                (time.time() - 60,),
            )

    def release_foreign_leases(self) -> int:
        """With concurrent senders, another owner's lease may be live: only the dead ones' are handed back."""
        return self.reap()

    def release_leases(self) -> int:
        with self._pool.connection() as conn:
            return conn.execute(
                f"UPDATE {_DELIVERIES} SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = %s", (self.owner,)
            ).rowcount

    # -- writing -----------------------------------------------------------------------------------------------
    def add(
        self,
        events: Sequence[tuple[str, float, str]],
        sinks: Sequence[str],
        dead: Sequence[tuple[str, float, str, str]] = (),
        *,
        captured: bool = False,
        also: Sequence[Callable[[psycopg.Connection[Any]], None]] = (),
    ) -> None:
        """Commit the group (see `Outbox.add`). `also`: writes of the inline sinks whose storage is this database
        (the event store), run in the same transaction, so that their rows and the outbox's commit together."""
        with self._pool.connection() as conn, conn.transaction():
            if events and (sinks or captured):  # (events owed to no sink here are only the joined writes')
                _copy_group(conn, events, sinks, captured)
            if dead:
                self._add_dead(conn, dead, sinks)
            for write in also:
                write(conn)

    def add_in(self, conn: Any, events: Sequence[tuple[str, float, str]], sinks: Sequence[str], captured: bool) -> None:
        """Write events through the app's own connection (a DB-API connection in a transaction): they commit or roll
        back with it."""
        _group(conn, events, sinks, captured)

    async def add_in_async(
        self, conn: Any, events: Sequence[tuple[str, float, str]], sinks: Sequence[str], captured: bool
    ) -> None:
        """`add_in` through an async connection (psycopg's `AsyncConnection`), awaited in the app's event loop."""
        cur = conn.cursor()
        for statement, params in _group_statements(events, sinks, captured):
            await cur.execute(statement, params)

    @staticmethod
    def _add_dead(
        conn: psycopg.Connection[Any], dead: Sequence[tuple[str, float, str, str]], sinks: Sequence[str]
    ) -> None:
        now = time.time()
        _group(conn, [(i, r, b) for i, r, b, _ in dead], (), False)
        pairs = [(sink, i, reason) for i, _, _, reason in dead for sink in sinks]
        conn.execute(
            _ADD_DEAD,
            (now, now, [p[0] for p in pairs], [p[1] for p in pairs], [_pg_text(p[2]) for p in pairs]),
        )

    def captured(self, limit: int = 500) -> list[tuple[str, str]]:
        """Captured events to complete, each taken by one sender for `_CAPTURE_LEASE` seconds (several relays complete
        at once; one killed while completing leaves them to the others that long)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"UPDATE {_EVENTS} e SET capture_until = %s FROM"
                f" (SELECT id FROM {_EVENTS} WHERE captured AND capture_until < %s LIMIT %s FOR UPDATE SKIP LOCKED) t"
                " WHERE e.id = t.id RETURNING e.id, e.body",
                (time.time() + _CAPTURE_LEASE, time.time(), limit),
            ).fetchall()
        return [(str(i), str(b)) for i, b in rows]

    def complete(
        self, done: Sequence[tuple[str, str]], dead: Sequence[tuple[str, str, str]], sinks: Sequence[str]
    ) -> None:
        now = time.time()
        with self._pool.connection() as conn, conn.transaction():
            # Only events still captured: another relay that completed (and maybe delivered and deleted) one first
            # must not see it come back.
            finished = conn.execute(
                f"UPDATE {_EVENTS} e SET body = v.b, captured = false, capture_until = 0"
                " FROM unnest(%s::text[], %s::text[]) AS v(id, b) WHERE e.id = v.id AND e.captured RETURNING e.id",
                ([i for i, _ in done], [_pg_text(b) for _, b in done]),
            ).fetchall()
            ids = [str(row[0]) for row in finished]
            pairs = [(sink, i) for i in ids for sink in sinks]
            if pairs:
                conn.execute(
                    _ADD_PENDING,
                    ([s for s, _ in pairs], [i for _, i in pairs], [due_at(i, now) for _, i in pairs]),
                )
            if dead:
                gone = conn.execute(
                    f"UPDATE {_EVENTS} e SET body = v.b, captured = false, capture_until = 0"
                    " FROM unnest(%s::text[], %s::text[]) AS v(id, b) WHERE e.id = v.id AND e.captured"
                    " RETURNING e.id",
                    ([i for i, _, _ in dead], [_pg_text(b) for _, b, _ in dead]),
                ).fetchall()
                kept = {str(row[0]) for row in gone}
                reasons = [(sink, i, why) for i, _, why in dead if i in kept for sink in sinks]
                if reasons:
                    conn.execute(
                        _ADD_DEAD,
                        (now, now, [r[0] for r in reasons], [r[1] for r in reasons], [_pg_text(r[2]) for r in reasons]),
                    )

    def claim(self, sink: str, limit: int, lease: float, now: float | None = None) -> list[Claim]:
        """Lease up to `limit` due deliveries for `sink`, oldest first, skipping rows another sender is claiming."""
        now = time.time() if now is None else now
        self._ensure_beating()
        if now - self._last_reap >= 1.0 and self._housekeeping.acquire(blocking=False):
            try:
                self._last_reap = now
                self.reap()
                if now - self._last_sweep >= 60.0:
                    self._last_sweep = now
                    self.sweep()
            finally:
                self._housekeeping.release()
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"WITH due AS (SELECT sink, event_id FROM {_DELIVERIES}"
                " WHERE sink = %s AND state = 'pending' AND next_attempt_at <= %s AND lease_until <= %s"
                " ORDER BY next_attempt_at, event_id LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" UPDATE {_DELIVERIES} d SET lease_owner = %s, lease_until = %s"
                f" FROM due, {_EVENTS} e"
                " WHERE d.sink = due.sink AND d.event_id = due.event_id AND e.id = d.event_id"
                " RETURNING d.event_id, e.body, d.attempts, e.recorded_at, d.next_attempt_at",
                (sink, now, now, limit, self.owner, now + lease),
            ).fetchall()
        rows.sort(key=lambda row: (row[4], row[0]))
        return [Claim(str(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in rows]

    def settle(
        self,
        sink: str,
        delivered: Iterable[str] = (),
        retry: Iterable[tuple[str, float, str]] = (),
        dead: Iterable[tuple[str, str]] = (),
        release: Iterable[str] = (),
    ) -> None:
        delivered, retry, dead, release = list(delivered), list(retry), list(dead), list(release)
        now = time.time()
        owner = self.owner
        with self._pool.connection() as conn, conn.transaction():
            if delivered:
                conn.execute(f"DELETE FROM {_DELIVERIES} WHERE sink = %s AND event_id = ANY(%s)", (sink, delivered))
            if retry:
                conn.execute(
                    f"UPDATE {_DELIVERIES} d SET attempts = d.attempts + 1, next_attempt_at = v.at,"
                    " last_error = v.err, lease_owner = NULL, lease_until = 0"
                    " FROM unnest(%s::text[], %s::float8[], %s::text[]) AS v(id, at, err)"
                    " WHERE d.sink = %s AND d.event_id = v.id AND d.lease_owner = %s",
                    ([r[0] for r in retry], [r[1] for r in retry], [r[2] for r in retry], sink, owner),
                )
            if dead:
                conn.execute(
                    f"UPDATE {_DELIVERIES} d SET attempts = d.attempts + 1, state = 'dead', last_error = v.why,"
                    " dead_at = %s, lease_owner = NULL, lease_until = 0"
                    " FROM unnest(%s::text[], %s::text[]) AS v(id, why)"
                    " WHERE d.sink = %s AND d.event_id = v.id AND d.lease_owner = %s",
                    (now, [d[0] for d in dead], [d[1] for d in dead], sink, owner),
                )
            if release:
                conn.execute(
                    f"UPDATE {_DELIVERIES} SET lease_owner = NULL, lease_until = 0"
                    " WHERE sink = %s AND event_id = ANY(%s) AND lease_owner = %s",
                    (sink, release, owner),
                )
            if delivered:
                conn.execute(
                    f"DELETE FROM {_EVENTS} e WHERE e.id = ANY(%s)"
                    f" AND NOT EXISTS (SELECT 1 FROM {_DELIVERIES} d WHERE d.event_id = e.id)",
                    (delivered,),
                )

    # -- reading and operating -----------------------------------------------------------------------------------
    def has_pending(self, sink: str) -> bool:
        return bool(
            self._fetch(f"SELECT 1 FROM {_DELIVERIES} WHERE sink = %s AND state = 'pending' LIMIT 1", (sink,))
            or self._fetch(f"SELECT 1 FROM {_EVENTS} WHERE captured LIMIT 1")
        )

    def next_due(self, sink: str) -> float | None:
        if self._fetch(f"SELECT 1 FROM {_EVENTS} WHERE captured AND capture_until < %s LIMIT 1", (time.time(),)):
            return time.time()
        [(due,)] = self._fetch(
            f"SELECT min(greatest(next_attempt_at, lease_until)) FROM {_DELIVERIES}"
            " WHERE sink = %s AND state = 'pending'",
            (sink,),
        )
        return None if due is None else float(due)

    def stats(self, sink: str | None = None) -> OutboxStats:
        where, args = ("WHERE d.sink = %s", (sink,)) if sink else ("", ())
        [(pending, dead, oldest)] = self._fetch(
            "SELECT count(*) FILTER (WHERE d.state = 'pending'), count(*) FILTER (WHERE d.state = 'dead'),"
            " min(e.recorded_at) FILTER (WHERE d.state = 'pending')"
            f" FROM {_DELIVERIES} d JOIN {_EVENTS} e ON e.id = d.event_id {where}",
            args,
        )
        [captured] = self._fetch(f"SELECT count(*), min(recorded_at) FROM {_EVENTS} WHERE captured")
        return OutboxStats.counted(pending, dead, oldest, captured)

    def sinks(self) -> list[str]:
        return [str(row[0]) for row in self._fetch(f"SELECT DISTINCT sink FROM {_DELIVERIES} ORDER BY 1")]

    def senders(self) -> list[SenderInfo]:
        """The senders seen (host, pid, role, seconds since their last heartbeat), most recent first."""
        rows = self._fetch(
            f"SELECT owner, host, pid, role, started_at, {_DB_NOW} - last_beat FROM centure_audit_outbox_senders"
            " ORDER BY last_beat DESC"
        )
        return [
            SenderInfo(str(o), str(h), int(p), str(r), float(s), float(a), float(a) < self.dead_after)
            for o, h, p, r, s, a in rows
        ]

    def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = ("AND d.sink = %s", (sink, limit)) if sink else ("", (limit,))
        rows = self._fetch(
            "SELECT d.sink, d.event_id, d.attempts, d.last_error, d.dead_at, e.recorded_at, e.body"
            f" FROM {_DELIVERIES} d JOIN {_EVENTS} e ON e.id = d.event_id WHERE d.state = 'dead' {where}"
            " ORDER BY d.dead_at, d.event_id LIMIT %s",
            args,
        )
        return [DeadLetter(*row) for row in rows]

    def replay(self, sink: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        clauses, args = ["state = 'dead'"], [time.time()]
        if sink:
            clauses.append("sink = %s")
            args.append(sink)  # type: ignore[arg-type]
        if event_ids:
            clauses.append("event_id = ANY(%s)")
            args.append(list(event_ids))  # type: ignore[arg-type]
        with self._pool.connection() as conn:
            return conn.execute(
                f"UPDATE {_DELIVERIES} SET state = 'pending', attempts = 0, next_attempt_at = %s, dead_at = NULL"
                f" WHERE {' AND '.join(clauses)}",
                args,
            ).rowcount

    def purge(self, sink: str | None = None, *, dead_only: bool = True) -> int:
        clauses, args = (["state = 'dead'"] if dead_only else []), []
        if sink:
            clauses.append("sink = %s")
            args.append(sink)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._pool.connection() as conn, conn.transaction():
            count = conn.execute(f"DELETE FROM {_DELIVERIES} {where}", args).rowcount
            conn.execute(
                f"DELETE FROM {_EVENTS} e WHERE NOT e.captured"
                f" AND NOT EXISTS (SELECT 1 FROM {_DELIVERIES} d WHERE d.event_id = e.id)"
            )
            return count


class PostgresRateLimiter:
    """A token bucket shared by every sender of one PostgreSQL outbox: a row per sink, on the database's clock.

    Each `acquire()` takes a token, or reserves the next free one and waits for it (so a crowd of senders is served
    in turn, never more than `requests` per `period` together, bursts up to one period's worth)."""

    def __init__(self, outbox: Callable[[], PostgresOutbox], sink: str, requests: int, period: float) -> None:
        if requests <= 0 or period <= 0:
            raise ValueError("rate limit needs requests > 0 and period > 0")
        self._outbox = outbox
        self.sink = sink
        self.rate = requests / period
        self.capacity = float(requests)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        with self._outbox()._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO centure_audit_outbox_rate AS r (sink, tokens, updated)"
                f" VALUES (%s, %s - 1, {_DB_NOW})"
                " ON CONFLICT (sink) DO UPDATE SET"
                f" tokens = least(%s, r.tokens + ({_DB_NOW} - r.updated) * %s) - 1, updated = {_DB_NOW}"
                " RETURNING tokens",
                (self.sink, self.capacity, self.capacity, self.rate),
            ).fetchone()
        tokens = float(row[0]) if row else 0.0
        if tokens >= 0:
            return True
        wait = -tokens / self.rate  # our reserved token comes free then
        if stop is not None:
            return not stop.wait(wait)
        time.sleep(wait)
        return True
