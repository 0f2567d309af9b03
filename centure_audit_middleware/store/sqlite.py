"""The embedded event store: one SQLite file (``./audit.db`` by default), for apps that run on one host.

Concurrency: the dispatcher thread writes while web request threads and the CLI read. The file is in WAL mode, so
readers never block the writer nor each other; writers take the lock up front (``BEGIN IMMEDIATE``) and wait for
it up to `busy_timeout`. Connections come from a small pool (an sqlite3 connection must not be used by two threads
at once), so a thread never waits for another thread's read.

Free text is substring search (the same answers as PostgreSQL's ``LIKE '%...%'``) through an FTS5 index with the
trigram tokenizer over `search_text`, when the SQLite library has FTS5 (``sqlite3`` in CPython 3.11 on Debian
does). Each organization's events have their own range of rowids (``seq``), so a search reads only its own
organization's part of the index.

The index is written off the hot insert: `append` writes the event rows only, and the newest events of each
organization, those past its ``indexed_seq`` watermark, are indexed later in large batches (`index_pending`: by
`StoreSink` when the dispatcher is idle, and by a search for its organization before it reads the index), where
trigram indexing costs a third of what it costs in small groups. A search also reads whatever is still past the
watermark row by row, in the same statement (one snapshot), so it never misses an event however far behind the
index is. Seqs only grow (``last_seq``), so an event past the watermark was never indexed; deletes take the index
rows of indexed events only. It counts, in that part, how many events hold each of the needle's trigrams
(cached for five minutes), and either collects the candidates of the three rarest (re-checked with ``instr``), or,
when the needle is common in the organization, walks its newest events checking each with ``instr``, whichever
reads fewer rows. Needles shorter than three characters have no trigram and always walk (slow in a very large
organization when rare); so does everything when FTS5 is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from ..events import AuditEvent
from .base import (
    SqlEventStore,
    StoredRow,
    StoreError,
    StoreUnavailable,
    check_retention_days,
    event_row,
)
from .query import Dialect, EventQuery, TextCondition

__all__ = ["DEFAULT_PATH", "SCHEMA_VERSION", "SqliteStore"]

DEFAULT_PATH: Final = "audit.db"
COMPONENT: Final = "store"
#: Rows deleted per transaction by `prune`, so the dispatcher's appends interleave with a big retention run.
PRUNE_BATCH: Final = 5000
#: seq = organization number << ORG_SHIFT | counter: room for 2**40 events per organization, 2**23 organizations.
ORG_SHIFT: Final = 40
#: How many of a search's rarest trigrams are looked up in the full-text index.
FTS_TRIGRAMS: Final = 3
#: Trigrams are counted (in the organization) up to here; a search whose rarest trigram is in more of the
#: organization's events than this is common there, and walking its newest events fills a page sooner.
TRIGRAM_COUNT_CAP: Final = 20_000
#: A trigram in at most this many of the organization's events ends the counting (see `_trigram_counts`).
SELECTIVE_ENOUGH: Final = 200
#: How long an organization's event count (for the plan choice) is reused.
ORG_COUNT_TTL: Final = 300.0
#: At most this many of a long search's trigrams are counted (spread over it).
MAX_TRIGRAMS: Final = 12
#: How long a trigram's count is reused (the counts move slowly; counting costs a doclist read).
TRIGRAM_COUNT_TTL: Final = 300.0
_STATS_CACHE_SIZE: Final = 4096
#: Ids checked per statement when an append looks for the ones already stored.
_ID_CHUNK: Final = 500
#: At most this many events are indexed by a search before it reads the index (the rest it reads row by row).
SEARCH_CATCH_UP: Final = 20_000

# Primary result codes that mean "the database is busy or the disk is unhappy", not "the SQL is wrong".
_TRANSIENT_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)

_SCHEMA_TABLE: Final = """
CREATE TABLE IF NOT EXISTS centure_audit_schema (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (component, version)
)"""

_V1: Final = (
    # seq (the rowid) is the organization's number << ORG_SHIFT plus a counter: each organization's rows are
    # clustered in the table and in the full-text index, and a search reads only its own organization's range.
    """CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        organization_id TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        actor_name TEXT,
        actor_type TEXT NOT NULL,
        search_text TEXT NOT NULL,
        body TEXT NOT NULL,
        csv_row TEXT NOT NULL
    )""",
    # One index per filter, each ending in the sort key: a filtered page is a walk down one index that stops once
    # the page is full.
    "CREATE INDEX audit_events_org_time ON audit_events (organization_id, occurred_at DESC, id DESC)",
    "CREATE INDEX audit_events_org_action ON audit_events (organization_id, action, occurred_at DESC, id DESC)",
    "CREATE INDEX audit_events_org_actor_id ON audit_events (organization_id, actor_id, occurred_at DESC, id DESC)",
    """CREATE TABLE audit_event_targets (
        seq INTEGER NOT NULL,
        position INTEGER NOT NULL,
        organization_id TEXT NOT NULL,
        type TEXT NOT NULL,
        target_id TEXT NOT NULL,
        PRIMARY KEY (seq, position)
    ) WITHOUT ROWID""",
    # Target ids are looked up through this index; a target type alone is checked per event by primary key (see
    # `query.build_select`), which spares the writes of a second index with random keys.
    "CREATE INDEX audit_event_targets_id ON audit_event_targets (organization_id, target_id, type)",
    """CREATE TABLE audit_event_actions (
        organization_id TEXT NOT NULL,
        action TEXT NOT NULL,
        PRIMARY KEY (organization_id, action)
    ) WITHOUT ROWID""",
    """CREATE TABLE audit_event_actors (
        organization_id TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        PRIMARY KEY (organization_id, actor_name, actor_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE audit_orgs (
        organization_id TEXT PRIMARY KEY,
        num INTEGER NOT NULL UNIQUE
    )""",
    """CREATE TABLE audit_retention (
        organization_id TEXT PRIMARY KEY,
        days INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # The side tables are filled by `append` (it knows which rows are new and has the targets at hand, where a
    # trigger would re-parse each event's JSON); deletes cascade by trigger, so a prune is one statement.
    """CREATE TRIGGER audit_events_after_delete AFTER DELETE ON audit_events BEGIN
        DELETE FROM audit_event_targets WHERE seq = old.seq;
    END""",
)

_V1_FTS: Final = (
    # External content: the text lives once, in audit_events.search_text. case_sensitive 1 because the stored
    # text and the searched text are both folded in Python (as for PostgreSQL). detail=none: no positions, so a
    # search is an AND of the needle's trigrams (a superset, re-checked with instr) instead of a phrase query;
    # it makes the index about 4x smaller and 3x cheaper to write than detail=full, for the same answers.
    # Rows are added in batches, never by an AFTER INSERT trigger: through one, FTS5 flushes its pending terms at
    # every row's statement boundary, which made inserts five times slower (and since v2, not by `append` either).
    """CREATE VIRTUAL TABLE audit_events_fts USING fts5(
        search_text, content='audit_events', content_rowid='seq', tokenize='trigram case_sensitive 1', detail=none
    )""",
    """CREATE TRIGGER audit_events_fts_after_delete AFTER DELETE ON audit_events BEGIN
        INSERT INTO audit_events_fts (audit_events_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    END""",
)

_V2: Final = (
    # The free-text index is written after the insert, in batches (see the module's docstring). Per organization:
    # last_seq, the highest seq ever given (prunes never lower it, so a seq is never given twice), and indexed_seq,
    # the watermark: its events up to there are in the index, none after. A store of v1 was indexed on insert.
    "ALTER TABLE audit_orgs ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE audit_orgs ADD COLUMN indexed_seq INTEGER NOT NULL DEFAULT 0",
    f"""UPDATE audit_orgs SET last_seq = coalesce(
        (SELECT max(seq) FROM audit_events WHERE seq >= num << {ORG_SHIFT} AND seq < (num + 1) << {ORG_SHIFT}),
        num << {ORG_SHIFT}
    )""",
    "UPDATE audit_orgs SET indexed_seq = last_seq",
)

_V2_FTS: Final = (
    "DROP TRIGGER audit_events_fts_after_delete",
    # A new name, so that a process still running an older version of the library, which indexes on insert, fails
    # its appends (the dispatcher keeps and retries them) instead of indexing rows the batches will index again.
    "ALTER TABLE audit_events_fts RENAME TO audit_events_search",
    # Only events at or below the watermark are in the index: deleting an unindexed one from an external-content
    # index would corrupt it.
    f"""CREATE TRIGGER audit_events_search_after_delete AFTER DELETE ON audit_events
    WHEN old.seq <= (SELECT indexed_seq FROM audit_orgs WHERE num = old.seq >> {ORG_SHIFT}) BEGIN
        INSERT INTO audit_events_search (audit_events_search, rowid, search_text)
        VALUES ('delete', old.seq, old.search_text);
    END""",
)

#: (version, statements); a migration runs once, in the same transaction as its row in centure_audit_schema.
MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = ((1, _V1), (2, _V2))
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def _fts5_available() -> bool:
    try:
        conn = sqlite3.connect(":memory:")
    except sqlite3.Error:  # pragma: no cover
        return False
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return True


# English letters from most to least frequent, then space: a trigram of rarer characters (digits, punctuation,
# rare letters) is likelier to be rare in the index, so it is counted first.
_COMMON_CHARACTERS: Final = {c: i for i, c in enumerate(" etaoinshrdlcumwfgypbvkjxqz")}


def _guessed_rarity(gram: str) -> int:
    return sum(_COMMON_CHARACTERS.get(c, 40) for c in gram)


def _trigrams(needle: str) -> list[str]:
    """The needle's distinct trigrams (at most `MAX_TRIGRAMS`, spread over it), likeliest-rare first."""
    grams = list(dict.fromkeys(needle[i : i + 3] for i in range(len(needle) - 2)))
    if len(grams) > MAX_TRIGRAMS:
        step = len(grams) / MAX_TRIGRAMS
        grams = [grams[int(i * step)] for i in range(MAX_TRIGRAMS)]
    return sorted(grams, key=_guessed_rarity, reverse=True)


def _fts_query(grams: Sequence[str]) -> str:
    """An FTS5 query for rows containing every one of `grams` (each quoted: no FTS5 syntax applies)."""
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone())


def _is_transient(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _TRANSIENT_CODES


class _SqliteDialect(Dialect):
    param = "?"

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def text_condition(self, q: EventQuery, needle: str) -> TextCondition:
        scan = TextCondition("instr(e.search_text, ?) > 0", [needle], False)
        if not self._store.has_fts or len(needle) < 3:
            return scan
        num = self._store._org_number(q.organization_id)
        if num is None:
            return TextCondition("1 = 0", [], False)  # an organization without events
        self._store._catch_up(num)
        counts = self._store._trigram_counts(num, _trigrams(needle))
        rarest = min(counts.values())
        # The rarest few trigrams select almost exactly what all of them would, for a fraction of the index reads.
        pick = [
            gram for gram, n in sorted(counts.items(), key=lambda item: item[1])[:FTS_TRIGRAMS] if n < 4 * rarest + 1
        ]
        if rarest > 0:
            # Collecting the candidates costs about one row each; walking the newest events until the page is
            # full, about limit / density rows. Pick the cheaper (the counts are upper bounds of the matches).
            walk = (q.limit + 1) * self._store._org_count(q.organization_id, num) / rarest
            if rarest >= TRIGRAM_COUNT_CAP or walk < rarest:
                return scan
        lo, hi = num << ORG_SHIFT, (num + 1) << ORG_SHIFT
        # The candidates: the index's, and every event past the watermark (not indexed yet: normally none, as the
        # search has just indexed them; more when it could not, e.g. a read-only file), read in the same snapshot.
        # `instr` re-checks them, so the answer is exactly the scan's whatever the tokenizer does.
        return TextCondition(
            "e.seq IN (SELECT rowid FROM audit_events_search WHERE audit_events_search MATCH ? AND rowid >= ?"
            " AND rowid < ? UNION ALL SELECT seq FROM audit_events WHERE seq > (SELECT indexed_seq FROM audit_orgs"
            " WHERE num = ?) AND seq < ?) AND instr(e.search_text, ?) > 0",
            [_fts_query(pick), lo, hi, num, hi, needle],
            True,
        )


class SqliteStore(SqlEventStore):
    """The event store in one SQLite file. `path` may be ``":memory:"`` (one connection, for tests).

    `create=False` refuses to create a missing file (the CLI uses it so that a typo doesn't make an empty store).
    `mmap_size` is the most of the file read through a memory map (0: none; see the PRAGMA's caveats: an I/O error
    on a mapped page is a SIGBUS instead of an error code).
    """

    _body_sql = "e.body"

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        busy_timeout: float = 10.0,
        max_connections: int = 8,
        create: bool = True,
        mmap_size: int = 1 << 30,
    ) -> None:
        self.path = os.fspath(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            if not create and not Path(self.path).exists():
                raise StoreError(f"no event store at {self.path}")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._mmap_size = max(0, int(mmap_size))
        # Every :memory: connection is a separate database: the store then has exactly one, shared in turn.
        self._slots = threading.BoundedSemaphore(1 if self._memory else max(1, max_connections))
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.has_fts = False
        self._dialect_instance = _SqliteDialect(self)
        self._stats_cache: OrderedDict[tuple[object, ...], tuple[float, int]] = OrderedDict()
        # Organization numbers are given once and never change: cached for good (new ones come via append).
        self._org_numbers: dict[str, int] = {}
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # --- connections ---

    def _new_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            # NORMAL, not FULL: in WAL mode a commit is then durable once the WAL is synced at checkpoint time, and
            # a power cut can lose only the last transactions, never corrupt the file; an application crash loses
            # nothing. The dispatcher's outbox, not this store, is what guarantees delivery, and it keeps an event
            # until the store has acknowledged it, so FULL's fsync per commit would buy little for its cost.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            # A page of a filtered query touches a few index pages; keep more of them hot than the 2 MiB default.
            conn.execute("PRAGMA cache_size = -16384")
            conn.execute("PRAGMA temp_store = MEMORY")
            # ANALYZE (from `analyze` and PRAGMA optimize) samples this many rows per index instead of reading all.
            conn.execute("PRAGMA analysis_limit = 1000")
            # Reads through a memory map instead of a read(2) per page: an export or a search that touches many
            # rows runs up to twice as fast. Only address space: the pages are the kernel's page cache, shared by
            # every connection (SQLite caps the map at its compile-time limit, 2 GiB by default).
            conn.execute(f"PRAGMA mmap_size = {self._mmap_size}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("the event store is closed")
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                try:
                    conn = self._new_connection()
                except sqlite3.Error as exc:
                    raise self._translate(exc) from exc
            try:
                yield conn
            finally:
                if conn.in_transaction:  # an exception between BEGIN and COMMIT
                    conn.rollback()
                with self._lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._idle.append(conn)
        finally:
            self._slots.release()

    @staticmethod
    def _translate(exc: sqlite3.Error) -> Exception:
        if _is_transient(exc):
            return StoreUnavailable(f"SQLite: {exc}")
        return exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        if idle:
            # What SQLite recommends before closing: refresh the planner's statistics where they have drifted
            # (bounded by analysis_limit, so quick even on a large store).
            with contextlib.suppress(sqlite3.Error):
                idle[0].execute("PRAGMA optimize")
        for conn in idle:
            conn.close()

    # --- schema ---

    def _migrate(self) -> None:
        with self._connection() as conn:
            try:
                if not self._memory:
                    # Persistent in the file; readers then never block the writer nor each other.
                    conn.execute("PRAGMA journal_mode = WAL")
                current = self._schema_version(conn)
                if current < SCHEMA_VERSION:
                    # IMMEDIATE: two processes opening a new file at once serialise here; the second then sees the
                    # first one's version and applies nothing.
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(_SCHEMA_TABLE)
                    current = self._schema_version(conn)
                    for version, statements in MIGRATIONS:
                        if version <= current:
                            continue
                        for statement in statements:
                            conn.execute(statement)
                        if version == 1 and _fts5_available():
                            for statement in _V1_FTS:
                                conn.execute(statement)
                        if version == 2 and _has_table(conn, "audit_events_fts"):
                            for statement in _V2_FTS:
                                conn.execute(statement)
                        conn.execute(
                            "INSERT INTO centure_audit_schema (component, version, applied_at) VALUES (?, ?, ?)",
                            (COMPONENT, version, dt.datetime.now(dt.UTC).isoformat()),
                        )
                    conn.execute("COMMIT")
                elif current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: event store schema v{current} is newer than this library's v{SCHEMA_VERSION}"
                    )
                self.has_fts = _has_table(conn, "audit_events_search")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'centure_audit_schema'"
        ).fetchone()
        if not exists:
            return 0
        row = conn.execute(
            "SELECT coalesce(max(version), 0) FROM centure_audit_schema WHERE component = ?", (COMPONENT,)
        ).fetchone()
        return int(row[0])

    # --- SqlEventStore primitives ---

    def _dialect(self) -> Dialect:
        return self._dialect_instance

    def _fetchall(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _key_micros(self, value: Any) -> int:
        return int(value)

    def _cached(self, key: tuple[object, ...], ttl: float, compute: Callable[[], int]) -> int:
        now = time.monotonic()
        with self._lock:
            hit = self._stats_cache.get(key)
            if hit is not None and now - hit[0] < ttl:
                self._stats_cache.move_to_end(key)
                return hit[1]
        value = compute()
        with self._lock:
            self._stats_cache[key] = (now, value)
            self._stats_cache.move_to_end(key)
            while len(self._stats_cache) > _STATS_CACHE_SIZE:
                self._stats_cache.popitem(last=False)
        return value

    def _trigram_counts(self, num: int, grams: Sequence[str]) -> dict[str, int]:
        """How many of organization `num`'s events hold each trigram (up to `TRIGRAM_COUNT_CAP`), cached a while."""
        lo = num << ORG_SHIFT

        def count(gram: str) -> Callable[[], int]:
            def run() -> int:
                rows = self._fetchall(
                    "SELECT count(*) FROM (SELECT 1 FROM audit_events_search"
                    " WHERE audit_events_search MATCH ? AND rowid >= ? AND rowid < ? LIMIT ?)",
                    (_fts_query([gram]), lo, lo + (1 << ORG_SHIFT), TRIGRAM_COUNT_CAP),
                )
                return int(rows[0][0])

            return run

        counts: dict[str, int] = {}
        for gram in grams:
            counts[gram] = self._cached(("gram", num, gram), TRIGRAM_COUNT_TTL, count(gram))
            if counts[gram] <= SELECTIVE_ENOUGH:
                # Selective enough to answer from the index at once: counting the others (each a doclist read,
                # a few milliseconds for a common one) would cost more than it could save.
                break
        return counts

    def _org_count(self, organization_id: str, num: int) -> int:
        def run() -> int:
            rows = self._fetchall("SELECT count(*) FROM audit_events WHERE organization_id = ?", (organization_id,))
            return int(rows[0][0])

        return self._cached(("events", num), ORG_COUNT_TTL, run)

    def _org_number(self, organization_id: str) -> int | None:
        """The organization's number (its range of seq values), None if it has never had an event."""
        with self._lock:
            num = self._org_numbers.get(organization_id)
        if num is None:
            rows = self._fetchall("SELECT num FROM audit_orgs WHERE organization_id = ?", (organization_id,))
            if not rows:
                return None
            num = int(rows[0][0])
            with self._lock:
                self._org_numbers[organization_id] = num  # never changes once given
        return num

    def _assign_org_numbers(self, conn: sqlite3.Connection, organizations: set[str]) -> dict[str, tuple[int, int]]:
        """(number, last seq given) of each of `organizations`, giving new ones theirs; called inside the append's
        write transaction."""
        out: dict[str, tuple[int, int]] = {}
        for org in sorted(organizations):
            row = conn.execute("SELECT num, last_seq FROM audit_orgs WHERE organization_id = ?", (org,)).fetchone()
            if row is None:
                row = conn.execute(
                    "INSERT INTO audit_orgs (organization_id, num, last_seq, indexed_seq)"
                    f" SELECT ?, n, n << {ORG_SHIFT}, n << {ORG_SHIFT}"
                    " FROM (SELECT coalesce(max(num), 0) + 1 AS n FROM audit_orgs) RETURNING num, last_seq",
                    (org,),
                ).fetchone()
                if row[0] >= 1 << (63 - ORG_SHIFT):
                    raise StoreError("too many organizations for one SQLite event store")
            out[org] = (int(row[0]), int(row[1]))
        return out

    def _write(self, sql: str, params: Sequence[object] | Sequence[Sequence[object]], *, many: bool = False) -> int:
        with self._connection() as conn:
            try:
                # IMMEDIATE: take the write lock before reading, so the busy timeout applies; a deferred
                # transaction that must upgrade its read lock fails at once when another writer got there first.
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.executemany(sql, params) if many else conn.execute(sql, params)  # type: ignore[arg-type]
                changed = cursor.rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return changed

    # --- writes ---

    def append(self, events: Sequence[AuditEvent], *, bodies: Sequence[str] | None = None) -> int:
        # ValueError before any write: the batch is all or nothing.
        if bodies is None:
            rows = [event_row(event, with_csv=False) for event in events]
        else:
            rows = [event_row(event, body, with_csv=False) for event, body in zip(events, bodies, strict=True)]
        if not rows:
            return 0
        with self._connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                # Inside the write lock, so no other writer can slip an id in between the check and the insert.
                existing: set[str] = set()
                ids = [row.id for row in rows]
                for i in range(0, len(ids), _ID_CHUNK):
                    chunk = ids[i : i + _ID_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    existing.update(
                        r[0] for r in conn.execute(f"SELECT id FROM audit_events WHERE id IN ({marks})", chunk)
                    )
                new: dict[str, tuple[StoredRow, AuditEvent]] = {}
                numbers: dict[str, int] = {}
                for row, event in zip(rows, events, strict=True):
                    if row.id not in existing and row.id not in new:
                        new[row.id] = (row, event)
                if new:
                    # Explicit seq values (each organization's next ones, in its own range), so that the targets
                    # can be written without asking for each event's rowid.
                    counters = self._assign_org_numbers(conn, {r.organization_id for r, _ in new.values()})
                    numbers = {org: num for org, (num, _) in counters.items()}
                    next_seq = {org: last + 1 for org, (_, last) in counters.items()}
                    event_rows: list[tuple[object, ...]] = []
                    target_rows: list[tuple[object, ...]] = []
                    for r, event in new.values():  # one pass: this runs for every event stored
                        org = r.organization_id
                        seq = next_seq[org]
                        next_seq[org] = seq + 1
                        event_rows.append((seq, *r))
                        for position, target in enumerate(event.targets):
                            target_rows.append((seq, position, org, target.type, target.id))
                    conn.executemany(
                        "UPDATE audit_orgs SET last_seq = ? WHERE num = ?",
                        [(next_seq[org] - 1, num) for org, num in numbers.items()],
                    )
                    conn.executemany(
                        "INSERT INTO audit_events (seq, id, organization_id, occurred_at, action, actor_id, actor_name,"
                        " actor_type, search_text, body, csv_row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        event_rows,
                    )
                    conn.executemany(
                        "INSERT INTO audit_event_targets (seq, position, organization_id, type, target_id)"
                        " VALUES (?, ?, ?, ?, ?)",
                        target_rows,
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO audit_event_actions (organization_id, action) VALUES (?, ?)",
                        sorted({(r.organization_id, r.action) for r, _ in new.values()}),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO audit_event_actors (organization_id, actor_name, actor_id)"
                        " VALUES (?, ?, ?)",
                        sorted(
                            {(r.organization_id, r.actor_name, r.actor_id) for r, _ in new.values() if r.actor_name}
                        ),
                    )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        if new:
            with self._lock:
                self._org_numbers.update(numbers)
        return len(new)

    def index_pending(self, limit: int = 1000) -> int:
        """Add up to `limit` of the events not yet in the free-text index to it (oldest first, in one write
        transaction); returns how many it covered (pruned ones included): 0 when none was waiting."""
        if not self.has_fts:
            return 0
        with self._connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                pending = conn.execute(
                    "SELECT num, indexed_seq, last_seq FROM audit_orgs WHERE last_seq > indexed_seq ORDER BY num"
                ).fetchall()
                done = self._index_orgs(conn, pending, limit)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return done

    def _catch_up(self, num: int) -> None:
        """Index organization `num`'s newest events before a search reads its part of the index (a bounded number:
        the search reads any left row by row). Best effort: a read-only or busy file leaves them to that."""
        try:
            rows = self._fetchall("SELECT last_seq > indexed_seq FROM audit_orgs WHERE num = ?", (num,))
            if not rows or not rows[0][0]:
                return  # the usual case: nothing to write, no write lock taken
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                pending = conn.execute(
                    "SELECT num, indexed_seq, last_seq FROM audit_orgs WHERE num = ? AND last_seq > indexed_seq",
                    (num,),
                ).fetchall()
                self._index_orgs(conn, pending, SEARCH_CATCH_UP)
                conn.execute("COMMIT")
        except (sqlite3.Error, StoreError):
            return

    @staticmethod
    def _index_orgs(conn: sqlite3.Connection, pending: Sequence[tuple[int, int, int]], limit: int) -> int:
        """Index the events past each (number, watermark, last seq) of `pending`, `limit` seqs in all; inside the
        caller's write transaction, which read `pending` (another process may have indexed them since a read
        outside it). Returns how many seqs the watermarks moved over."""
        done = 0
        for num, indexed, last in pending:
            if done >= limit:
                break
            # Seqs are dense (gaps are only the pruned), so this bounds the batch without counting rows first.
            upto = min(last, indexed + (limit - done))
            conn.execute(
                "INSERT INTO audit_events_search (rowid, search_text)"
                " SELECT seq, search_text FROM audit_events WHERE seq > ? AND seq <= ?",
                (indexed, upto),
            )
            conn.execute("UPDATE audit_orgs SET indexed_seq = ? WHERE num = ?", (upto, num))
            done += upto - indexed
        return done

    def prune(self, organization_id: str, older_than: dt.datetime) -> int:
        organization_id = self._check_organization(organization_id)
        cutoff = self._cutoff_micros(older_than)
        total = 0
        while True:
            deleted = self._write(
                "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events"
                " WHERE organization_id = ? AND occurred_at < ? ORDER BY occurred_at LIMIT ?)",
                (organization_id, cutoff, PRUNE_BATCH),
            )
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    def set_retention_days(self, organization_id: str, days: int) -> None:
        organization_id = self._check_organization(organization_id)
        check_retention_days(days)
        self._write(
            "INSERT INTO audit_retention (organization_id, days, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (organization_id) DO UPDATE SET days = excluded.days, updated_at = excluded.updated_at",
            (organization_id, days, dt.datetime.now(dt.UTC).isoformat()),
        )

    def analyze(self) -> None:
        """Refresh the query planner's statistics (sampled, so quick); worth running after a bulk load."""
        with self._connection() as conn:
            conn.execute("ANALYZE")
