"""The durable outbox: every recorded event, and its delivery state per sink, in one SQLite file.

WAL mode with `synchronous=FULL`: a commit is on disk when `add()` returns, so the only events a SIGKILL or a power
cut can take are those still in the dispatcher's memory (one group-commit interval). NORMAL would be faster but in
WAL mode it may lose the last transactions on power loss, and an audit record is a compliance record. The cost is
one fsync per group commit, not per event.

Several processes (gunicorn workers) can share one file: a sender *claims* due rows by writing a lease (owner and
expiry) in an IMMEDIATE transaction, so each row is claimed by one process at a time, and a crashed process's
leases simply expire.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pg_outbox import PostgresOutbox

__all__ = ["Claim", "DeadLetter", "Outbox", "OutboxStats", "SenderInfo", "due_at", "new_owner", "open_outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    dead_at REAL,
    PRIMARY KEY (sink, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sink, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this process holds a lease on."""

    event_id: str
    body: str
    attempts: int
    recorded_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    sink: str
    event_id: str
    attempts: int
    reason: str | None
    dead_at: float | None
    recorded_at: float
    body: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    dead: int
    oldest_pending_age: float | None

    @classmethod
    def counted(cls, pending: int, dead: int, oldest: float | None, captured: tuple[int, float | None]) -> OutboxStats:
        """From the deliveries' counts and oldest recording time, and the captured events' (count, oldest): those
        (relay mode) are owed to every sink before their deliveries exist."""
        count, oldest_captured = captured
        if oldest_captured is not None and (oldest is None or oldest_captured < oldest):
            oldest = oldest_captured
        return cls(int(pending) + int(count), int(dead), None if oldest is None else max(0.0, time.time() - oldest))


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """A sender a PostgreSQL outbox has seen (`centure-audit outbox status`)."""

    owner: str
    host: str
    pid: int
    role: str
    started_at: float
    #: seconds since its last heartbeat
    silent_for: float
    alive: bool


def open_outbox(location: str, *, role: str = "app") -> Outbox | PostgresOutbox:
    """The outbox at `location`: a ``postgresql://`` URL (the `postgres` extra), else a SQLite file. `role` is what a
    PostgreSQL outbox's heartbeats say this process is ("app", "relay", "cli")."""
    from .location import is_postgres_url

    if is_postgres_url(location):
        try:
            from .pg_outbox import PostgresOutbox
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "a PostgreSQL outbox needs psycopg: pip install 'centure-audit-middleware[postgres]'"
            ) from exc
        return PostgresOutbox(location, role=role)
    return Outbox(location)


def _add_captured_column(conn: sqlite3.Connection) -> None:
    """`events.captured`: 1 for an event an app in relay mode committed as captured (redacted, not yet fitted or
    enriched); the relay completes it once, in place, before any claim. Added to outboxes made before it existed."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "captured" not in columns:
        try:
            conn.execute("ALTER TABLE events ADD COLUMN captured INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError as exc:  # another process added it a moment ago
            if "duplicate column" not in str(exc):
                raise
    conn.execute("CREATE INDEX IF NOT EXISTS events_captured ON events (id) WHERE captured = 1")


def due_at(event_id: str, now: float) -> float:
    """When a new delivery is first due: the moment its event's UUIDv7 id was made (capped at `now`), so that claims,
    ordered by due time, send the oldest events first whatever order their rows were committed in (a burst's spill
    is committed after events handed off later). Any other id is due now."""
    if len(event_id) == 36 and event_id[14] == "7":
        try:
            return min(now, int(event_id[:8] + event_id[9:13], 16) / 1000)
        except ValueError:
            pass
    return now


def new_owner() -> str:
    """A lease owner: which host and process hold a lease (what `outbox status` shows), unique per outbox opened."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


_live: weakref.WeakSet[Outbox] = weakref.WeakSet()
_held: list[Outbox] = []


def _before_fork() -> None:
    # Wait for, then hold, every outbox's write lock across fork(): see Outbox._writing.
    _held[:] = list(_live)
    for outbox in _held:
        outbox._writing.acquire()


def _after_fork_in_parent() -> None:
    for outbox in _held:
        outbox._writing.release()
    _held.clear()


def _after_fork_in_child() -> None:
    for outbox in _held:
        outbox._writing = threading.RLock()
    _held.clear()


# Registered once per process, not per Outbox: hooks can't be unregistered, and outboxes come and go.
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


class Outbox:
    """One per process; each thread gets its own connection (sqlite3 connections are not shared across threads)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = new_owner()
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Held for every write transaction, and by fork() (below): SQLite keeps its lock bookkeeping in process
        # memory, so a child forked while another thread is inside a transaction inherits a write lock that no thread
        # of its own will ever release ("database is locked" for every later write of the child).
        self._writing = threading.RLock()
        # executescript manages its own transaction; CREATE ... IF NOT EXISTS makes it safe for concurrent openers.
        with self._writing:
            conn = self._conn()
            conn.executescript(_SCHEMA)
            _add_captured_column(conn)
        _live.add(self)  # only once usable: a failed open (disk full, retried every commit) leaves nothing behind

    # -- connections -------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes claiming at once serialise instead of both
        # reading the same due rows and then failing to upgrade.
        with self._writing:  # the connection too is made under it: opening one reads the file and takes locks
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A COMMIT that fails (disk full, "statements in progress") must not leave the write lock held:
                # every other writer of the file would then wait for it for ever.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def forget_connections(self) -> None:
        """After fork: a child must never use the parent's SQLite connections, nor close them (that would release
        locks the parent holds). Drop the references and start afresh."""
        self._local = threading.local()
        self._connections = []
        self._lock = threading.Lock()
        self.owner = new_owner()

    def release_foreign_leases(self) -> int:
        """Hand back every lease held by another owner. Only for the holder of the outbox's sender lock: since only
        a holder ever claims, a lease it finds held by someone else was left by a sender that is gone (killed, or
        closed without handing back), and its rows must not wait for the lease to expire."""
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = 0"
                " WHERE lease_owner IS NOT NULL AND lease_owner != ?",
                (self.owner,),
            ).rowcount

    def release_leases(self) -> int:
        """Hand back every lease this process holds (on close), so a restart need not wait for them to expire."""
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?", (self.owner,)
            ).rowcount

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # -- writing -----------------------------------------------------------------------------------------------
    def add(
        self,
        events: Sequence[tuple[str, float, str]],
        sinks: Sequence[str],
        dead: Sequence[tuple[str, float, str, str]] = (),
        *,
        captured: bool = False,
    ) -> None:
        """Commit (id, recorded_at, body) rows pending for every sink, and already-dead rows with their reason,
        in one transaction (the group commit). `captured`: the bodies are captured events, for a relay to complete."""
        now = time.time()
        insert = (
            "INSERT OR IGNORE INTO events (id, recorded_at, body, captured) VALUES (?, ?, ?, 1)"
            if captured
            else "INSERT OR IGNORE INTO events (id, recorded_at, body) VALUES (?, ?, ?)"
        )
        with self._transaction() as conn:
            conn.executemany(insert, events)
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (sink, event_id, next_attempt_at) VALUES (?, ?, ?)",
                [(sink, event_id, due_at(event_id, now)) for event_id, _, _ in events for sink in sinks],
            )
            if dead:
                conn.executemany(
                    "INSERT OR IGNORE INTO events (id, recorded_at, body) VALUES (?, ?, ?)",
                    [(i, r, b) for i, r, b, _ in dead],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO deliveries (sink, event_id, state, next_attempt_at, last_error, dead_at)"
                    " VALUES (?, ?, 'dead', ?, ?, ?)",
                    [(sink, i, now, reason, now) for i, _, _, reason in dead for sink in sinks],
                )

    def captured(self, limit: int = 500) -> list[tuple[str, str]]:
        """(id, body) of events committed as captured, to complete before they can be claimed."""
        return self._query("SELECT id, body FROM events WHERE captured = 1 LIMIT ?", (limit,))

    def complete(
        self, done: Sequence[tuple[str, str]], dead: Sequence[tuple[str, str, str]], sinks: Sequence[str]
    ) -> None:
        """Replace captured bodies by the completed events' (id, body), now pending for every one of `sinks`;
        (id, body, reason) could not be completed: dead-lettered for every sink, the whole capture kept."""
        now = time.time()
        with self._transaction() as conn:
            conn.executemany("UPDATE events SET body = ?, captured = 0 WHERE id = ?", [(b, i) for i, b in done])
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (sink, event_id, next_attempt_at) VALUES (?, ?, ?)",
                [(sink, i, due_at(i, now)) for i, _ in done for sink in sinks],
            )
            conn.executemany("UPDATE events SET body = ?, captured = 0 WHERE id = ?", [(b, i) for i, b, _ in dead])
            conn.executemany(
                "INSERT OR REPLACE INTO deliveries (sink, event_id, state, next_attempt_at, last_error, dead_at)"
                " VALUES (?, ?, 'dead', ?, ?, ?)",
                [(sink, i, now, reason, now) for i, _, reason in dead for sink in sinks],
            )

    def claim(self, sink: str, limit: int, lease: float, now: float | None = None) -> list[Claim]:
        """Lease up to `limit` due deliveries for `sink`, oldest first."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT d.event_id, e.body, d.attempts, e.recorded_at"
                " FROM deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.sink = ? AND d.state = 'pending' AND d.next_attempt_at <= ? AND d.lease_until <= ?"
                " AND e.captured = 0"
                " ORDER BY d.next_attempt_at, d.event_id LIMIT ?",
                (sink, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE sink = ? AND event_id = ?",
                [(self.owner, now + lease, sink, row[0]) for row in rows],
            )
        return [Claim(*row) for row in rows]

    def settle(
        self,
        sink: str,
        delivered: Iterable[str] = (),
        retry: Iterable[tuple[str, float, str]] = (),
        dead: Iterable[tuple[str, str]] = (),
        release: Iterable[str] = (),
    ) -> None:
        """Record outcomes for claimed rows in one transaction: delivered ids, (id, next_attempt_at, error) retries,
        (id, reason) dead letters, and ids handed back untried (pause, shutdown).

        A delivered row goes whoever holds it now (it *is* delivered); the other outcomes apply only while this
        process still owns the lease, so a process whose lease expired can't undo another's fresh claim."""
        delivered = list(delivered)
        now = time.time()
        owner = self.owner
        with self._transaction() as conn:
            conn.executemany("DELETE FROM deliveries WHERE sink = ? AND event_id = ?", [(sink, i) for i in delivered])
            conn.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
                " lease_owner = NULL, lease_until = 0 WHERE sink = ? AND event_id = ? AND lease_owner = ?",
                [(at, err, sink, i, owner) for i, at, err in retry],
            )
            conn.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, state = 'dead', last_error = ?, dead_at = ?,"
                " lease_owner = NULL, lease_until = 0 WHERE sink = ? AND event_id = ? AND lease_owner = ?",
                [(reason, now, sink, i, owner) for i, reason in dead],
            )
            conn.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = 0"
                " WHERE sink = ? AND event_id = ? AND lease_owner = ?",
                [(sink, i, owner) for i in release],
            )
            # An event is kept while any sink still owes it (pending or dead); then it goes.
            conn.executemany(
                "DELETE FROM events WHERE id = ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?)",
                [(i, i) for i in delivered],
            )

    # -- reading and operating -----------------------------------------------------------------------------------
    def sinks(self) -> list[str]:
        """The sinks that have deliveries (pending or dead) in this outbox."""
        return [row[0] for row in self._query("SELECT DISTINCT sink FROM deliveries ORDER BY sink")]

    def senders(self) -> list[SenderInfo]:
        """Senders are not tracked in a file outbox: its sender lock admits one, on this host."""
        return []

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Rows of one read, run to its end under the same lock as writes: a fork (see `_before_fork`) must never
        land in the middle of a statement either, or the child inherits SQLite's bookkeeping of a lock that no
        thread of its own will release ("database is locked" for every later write of the child)."""
        with self._writing:
            return self._conn().execute(sql, args).fetchall()

    def has_pending(self, sink: str) -> bool:
        """Whether `sink` still owes any delivery. One probe of the `deliveries_due` index, whatever the backlog:
        `flush()` polls this every few milliseconds, and `stats()` (a full aggregate) costs ~15 ms per 10,000 rows."""
        # A captured event (relay mode) is owed to every sink, before its deliveries exist.
        return bool(
            self._query("SELECT 1 FROM deliveries WHERE sink = ? AND state = 'pending' LIMIT 1", (sink,))
            or self._query("SELECT 1 FROM events WHERE captured = 1 LIMIT 1")
        )

    def next_due(self, sink: str) -> float | None:
        if self._query("SELECT 1 FROM events WHERE captured = 1 LIMIT 1"):
            return time.time()  # captured events to complete: at once
        [(due,)] = self._query(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) FROM deliveries WHERE sink = ? AND state = 'pending'",
            (sink,),
        )
        return None if due is None else float(due)

    def stats(self, sink: str | None = None) -> OutboxStats:
        where, args = ("WHERE d.sink = ?", (sink,)) if sink else ("", ())
        [(pending, dead, oldest)] = self._query(
            "SELECT COALESCE(SUM(d.state = 'pending'), 0), COALESCE(SUM(d.state = 'dead'), 0),"
            " MIN(CASE WHEN d.state = 'pending' THEN e.recorded_at END)"
            f" FROM deliveries d JOIN events e ON e.id = d.event_id {where}",
            args,
        )
        [captured] = self._query("SELECT count(*), min(recorded_at) FROM events WHERE captured = 1")
        return OutboxStats.counted(pending, dead, oldest, captured)

    def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = ("AND d.sink = ?", (sink, limit)) if sink else ("", (limit,))
        rows = self._query(
            "SELECT d.sink, d.event_id, d.attempts, d.last_error, d.dead_at, e.recorded_at, e.body"
            f" FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.state = 'dead' {where}"
            " ORDER BY d.dead_at, d.event_id LIMIT ?",
            args,
        )
        return [DeadLetter(*row) for row in rows]

    def replay(self, sink: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back in the queue (an operator's decision, e.g. after fixing an organization id)."""
        clauses, args = ["state = 'dead'"], []
        if sink:
            clauses.append("sink = ?")
            args.append(sink)
        if event_ids:
            clauses.append(f"event_id IN ({','.join('?' * len(event_ids))})")
            args.extend(event_ids)
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, dead_at = NULL"
                f" WHERE {' AND '.join(clauses)}",
                [time.time(), *args],
            )
            return cur.rowcount

    def purge(self, sink: str | None = None, *, dead_only: bool = True) -> int:
        """Delete dead letters (or, with dead_only=False, everything) for one sink or all."""
        clauses, args = ([] if not dead_only else ["state = 'dead'"]), []
        if sink:
            clauses.append("sink = ?")
            args.append(sink)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction() as conn:
            count = conn.execute(f"DELETE FROM deliveries {where}", args).rowcount
            conn.execute("DELETE FROM events WHERE id NOT IN (SELECT event_id FROM deliveries)")
            return count
