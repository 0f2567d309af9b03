"""Batches written in few statement steps (`sqlite_batch`): every step lets go of the GIL and takes it back, which
beside a busy server's event loop is a forced thread switch each, so the committer's and the senders' writes must
not step once per row. The helpers must still write exactly what `executemany` would."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from centure_audit_middleware.delivery.outbox import Outbox
from centure_audit_middleware.events import Target, new_event_id
from centure_audit_middleware.sqlite_batch import MAX_ROWS, for_keys, insert_rows
from centure_audit_middleware.store.query import EventQuery
from centure_audit_middleware.store.sqlite import SqliteStore

from .store_fixtures import ORG_A, make_event


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, flag INTEGER)")
    return conn


def steps(conn: sqlite3.Connection) -> list[str]:
    """The statements `conn` runs from now on, one entry per step that starts one (as `executemany` does per row)."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("variables", [7, 999, 32766])
def test_insert_rows_writes_what_executemany_writes_in_chunks_the_variable_limit_allows(
    conn: sqlite3.Connection, variables: int
) -> None:
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    rows = [(f"k{i}", i) for i in range(1_234)] + [("k5", -1)]  # a duplicate, ignored as executemany would
    seen = steps(conn)
    changed = insert_rows(conn, "INSERT OR IGNORE INTO t (k, n, flag)", rows, row="(?, ?, 1)")
    statements = len(seen)
    assert changed == 1_234
    assert conn.execute("SELECT count(*), sum(n), min(flag), max(flag) FROM t").fetchone() == (1_234, 760_761, 1, 1)
    assert conn.execute("SELECT n FROM t WHERE k = 'k5'").fetchone() == (5,)
    per_statement = min(MAX_ROWS, variables // 2)
    assert statements == -(-len(rows) // per_statement)


def test_insert_rows_with_nothing_runs_nothing(conn: sqlite3.Connection) -> None:
    seen = steps(conn)
    assert insert_rows(conn, "INSERT INTO t (k, n, flag)", [], row="(?, ?, ?)") == 0
    assert seen == []


@pytest.mark.parametrize("variables", [5, 32766])
def test_for_keys_binds_the_leading_parameters_before_every_chunk(conn: sqlite3.Connection, variables: int) -> None:
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    insert_rows(conn, "INSERT INTO t (k, n, flag)", [(f"k{i}", i, 0) for i in range(1_100)], row="(?, ?, ?)")
    keys = [f"k{i}" for i in range(0, 1_100, 2)] + ["absent"]
    changed = for_keys(conn, "UPDATE t SET flag = ?, n = n + ? WHERE k IN ({keys})", keys, before=(1, 1_000))
    assert changed == 550
    assert conn.execute("SELECT count(*) FROM t WHERE flag = 1 AND n >= 1000 AND n % 2 = 0").fetchone() == (550,)
    assert conn.execute("SELECT count(*) FROM t WHERE flag = 0 AND n % 2 = 1").fetchone() == (550,)
    assert for_keys(conn, "DELETE FROM t WHERE k IN ({keys})", []) == 0


def test_the_outbox_commits_claims_and_settles_a_batch_in_a_few_steps(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    now = time.time()
    rows = [(new_event_id(now), now, f'{{"n": {i}}}') for i in range(1_000)]
    seen = steps(outbox._conn())  # (this thread's connection: every call below runs on it)
    outbox.add(rows, ["store", "workos"], [(new_event_id(now), now, "{}", "refused")])
    added = len(seen)
    claims = outbox.claim("workos", 600, lease=60, now=now + 3_600)
    outbox.settle("workos", delivered=[c.event_id for c in claims[:500]], release=[c.event_id for c in claims[500:]])
    assert len(claims) == 600
    assert outbox.stats("workos").pending == 1_000 - 500
    assert outbox.stats("store").pending == 1_000
    # Per row, that was 1,000 + 2,000 + 2 inserts, 600 lease updates and 500 + 100 + 500 settles; now each is a
    # statement per 500 rows, plus BEGIN and COMMIT (and the claim's one SELECT, whose rows are read step by step).
    assert added <= 12, seen[:20]
    assert len(seen) - added <= 14 + 600, seen[added : added + 20]
    assert sum(1 for s in seen[added:] if s.startswith(("UPDATE", "DELETE"))) <= 6


def test_the_sqlite_store_appends_a_batch_in_a_few_steps(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.db")
    store.append([make_event()])  # opens the connection (and runs the migrations) first
    [conn] = store._idle
    events = [
        make_event(seconds=i, targets=[Target("project", f"proj_{i}"), Target("key", f"key_{i}")]) for i in range(1_000)
    ]
    seen = steps(conn)
    assert store.append(events) == 1_000
    assert len(seen) <= 20, seen[:25]
    assert store.count(EventQuery(ORG_A)) == 1_001
    page = store.query(EventQuery(ORG_A, target_type="key", target_id="key_999"))
    assert [e.id for e in page.events] == [events[-1].id]
    assert [e.id for e in store.query(EventQuery(ORG_A, text="proj_998")).events] == [events[998].id]
