"""The SQLite store's deferred free-text index: appends write no index rows; search still finds every event (right
after `flush()`), deletes keep the index exact, several processes share it, and a v1 store migrates."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from centure_audit_middleware import Actor, Auditor, Target, audit, audited
from centure_audit_middleware.sinks import store as store_sink_module
from centure_audit_middleware.sinks.store import StoreSink
from centure_audit_middleware.store import sqlite as sqlite_backend
from centure_audit_middleware.store.base import event_row
from centure_audit_middleware.store.query import EventQuery
from centure_audit_middleware.store.sqlite import ORG_SHIFT, SqliteStore

from .reliability_support import wait_until
from .requirements import require
from .store_fixtures import ORG_A, ORG_B, T0, make_event

require(sqlite_backend._fts5_available(), "this SQLite has no FTS5 (its trigram tokenizer)", module_level=True)


def search(store: SqliteStore, text: str, org: str = ORG_A) -> list[str]:
    return [e.id for e in store.query(EventQuery(org, text=text, limit=500)).events]


def watermarks(store: SqliteStore) -> dict[int, tuple[int, int]]:
    """Each organization's (indexed_seq, last_seq), its seqs counted from its range's start."""
    rows = store._fetchall("SELECT num, indexed_seq, last_seq FROM audit_orgs", ())
    return {num: (indexed - (num << ORG_SHIFT), last - (num << ORG_SHIFT)) for num, indexed, last in rows}


def index_rows(store: SqliteStore) -> int:
    # detail=none: the doc-size table has one row per indexed event.
    return int(store._fetchall("SELECT count(*) FROM audit_events_search_docsize", ())[0][0])


def check_index(path: Path) -> None:
    """FTS5's own check that an external-content index matches its table exactly (every row indexed)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO audit_events_search (audit_events_search) VALUES ('integrity-check')")


def index_all(store: SqliteStore) -> None:
    while store.index_pending(1000):
        pass


# --- the hot insert writes no index rows; search still finds everything ---


def test_append_defers_the_index_and_search_finds_the_tail_at_once(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        events = [make_event(seconds=i, metadata={"note": f"needle {i}"}) for i in range(5)]
        store.append(events)
        assert index_rows(store) == 0  # nothing indexed by the append
        assert watermarks(store) == {1: (0, 5)}
        # The search indexes its organization's tail first, then reads the index.
        assert search(store, "needle 3") == [events[3].id]
        assert index_rows(store) == 5 and watermarks(store) == {1: (5, 5)}
        check_index(tmp_path / "a.db")


def test_search_reads_the_unindexed_tail_when_it_cannot_index(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteStore(path) as writer:
        indexed = make_event(seconds=1, metadata={"note": "haystack old"})
        writer.append([indexed])
        index_all(writer)
        tail = [make_event(seconds=2 + i, metadata={"note": f"haystack new {i}"}) for i in range(3)]
        writer.append(tail)
    # Another process holds the write lock: the searcher cannot index, and must still see the tail.
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with SqliteStore(path, busy_timeout=0.05) as reader:
            assert search(reader, "haystack") == [tail[2].id, tail[1].id, tail[0].id, indexed.id]
            assert search(reader, "new 1") == [tail[1].id]
            assert search(reader, "old") == [indexed.id]
            assert reader.count(EventQuery(ORG_A, text="haystack")) == 4
            assert watermarks(reader) == {1: (1, 4)}  # indeed not indexed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_event_recorded_by_a_real_app_is_found_right_after_flush(tmp_path: Path) -> None:
    auditor = Auditor(sinks=[StoreSink(tmp_path / "audit.db")], outbox=tmp_path / "outbox.db", geoip=False)
    app = FastAPI()

    @app.post("/projects/{project_id}/api-keys")
    @audited("api_key.create", targets=[Target.from_path("project", "project_id")])
    async def create_key(project_id: str) -> dict[str, str]:
        audit.actor(Actor("user_ada", name="Ada Lovelace", metadata={"email": "ada@example.com"}))
        audit.organization(ORG_A)
        audit.metadata(key_name="deploy-bot-7f3a")
        return {"id": "key_1"}

    auditor.install(app)
    try:
        with TestClient(app) as client:
            for i in range(3):
                assert client.post(f"/projects/proj_{i}/api-keys").status_code == 200
        assert auditor.flush(5)
        with SqliteStore(tmp_path / "audit.db", create=False) as store:
            # The first query after flush() finds them: no wait for a background indexer.
            found = store.query(EventQuery(ORG_A, text="deploy-bot-7f3a")).events
            assert [e.targets[0].id for e in found] == ["proj_2", "proj_1", "proj_0"]
            assert [e.id for e in store.query(EventQuery(ORG_A, text="proj_1")).events] == [found[1].id]
            assert search(store, "ada@example") == [e.id for e in found]
    finally:
        auditor.close()


# --- the background batches ---


def test_store_sink_indexes_a_full_batch_or_once_events_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_sink_module, "INDEX_BATCH", 10)
    monkeypatch.setattr(store_sink_module, "INDEX_QUIET", 3600.0)
    with SqliteStore(tmp_path / "a.db") as store:
        sink = StoreSink(store)
        sink.idle()  # the store is there, with nothing to index: nothing happens
        sink.send_many([make_event(seconds=i) for i in range(4)])
        sink.idle()  # 4 < a batch, and events are still coming: left for later
        assert watermarks(store) == {1: (0, 4)}
        sink.send_many([make_event(seconds=10 + i) for i in range(8)])
        sink.idle()  # a full batch waits: one batch indexed
        assert watermarks(store) == {1: (10, 12)}
        sink.idle()  # 2 left, and events may still come: left
        assert watermarks(store) == {1: (10, 12)}
        monkeypatch.setattr(store_sink_module, "INDEX_QUIET", 0.0)
        sink.idle()  # quiet now: the rest
        assert watermarks(store) == {1: (12, 12)}
        check_index(tmp_path / "a.db")


def test_a_sink_that_has_not_opened_its_store_does_not_open_it_to_index(tmp_path: Path) -> None:
    sink = StoreSink(tmp_path / "never.db")
    sink.idle()
    assert not (tmp_path / "never.db").exists()


def test_the_dispatcher_indexes_when_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_sink_module, "INDEX_QUIET", 0.2)
    path = tmp_path / "audit.db"
    auditor = Auditor(sinks=[StoreSink(path)], outbox=tmp_path / "outbox.db", geoip=False)
    try:
        for i in range(30):
            auditor.record("report.export", actor=Actor("user_1"), organization=ORG_A, metadata={"n": i})
        assert auditor.flush(5)
        with SqliteStore(path, create=False) as store:
            # Indexed by the committer's idle rounds, not by a search.
            assert wait_until(lambda: watermarks(store)[1] == (30, 30), 10), watermarks(store)
        check_index(path)
    finally:
        auditor.close()


# --- deletes, seqs, several writers ---


def test_prune_of_indexed_and_unindexed_events_keeps_the_index_exact(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteStore(path) as store:
        events = [make_event(seconds=i, metadata={"note": f"item {i}"}) for i in range(10)]
        store.append(events)
        assert store.index_pending(4) == 4
        # Deletes the 4 indexed ones (the trigger takes their index rows) and 2 never indexed (it must not).
        assert store.prune(ORG_A, T0 + dt.timedelta(seconds=6)) == 6
        assert search(store, "item") == [e.id for e in reversed(events[6:])]
        more = [make_event(seconds=20 + i, metadata={"note": f"item {20 + i}"}) for i in range(3)]
        store.append(more)
        index_all(store)
        check_index(path)
        assert search(store, "item") == [e.id for e in reversed(events[6:] + more)]
        # Everything pruned, then a new event: its seq is past every seq given before (never one indexed before).
        store.prune(ORG_A, T0 + dt.timedelta(days=1))
        last = make_event(seconds=99, metadata={"note": "item last"})
        store.append([last])
        assert store._fetchall("SELECT seq - (1 << 40) FROM audit_events", ()) == [(14,)]
        assert search(store, "item") == [last.id]
        check_index(path)


def test_organizations_have_their_own_watermarks(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        a = [make_event(ORG_A, seconds=i, metadata={"note": "shared word"}) for i in range(3)]
        b = [make_event(ORG_B, seconds=i, metadata={"note": "shared word"}) for i in range(2)]
        store.append(a + b)
        assert search(store, "shared", org=ORG_B) == [e.id for e in reversed(b)]
        assert watermarks(store) == {1: (0, 3), 2: (2, 2)}  # only B's tail, for B's search
        assert store.index_pending(2) == 2  # a bounded batch, across organizations
        assert watermarks(store) == {1: (2, 3), 2: (2, 2)}
        assert search(store, "shared", org=ORG_A) == [e.id for e in reversed(a)]


def _writer(path: str, org: str, count: int) -> None:
    with SqliteStore(path) as store:
        for start in range(0, count, 25):
            store.append([make_event(org, seconds=start + i, metadata={"note": f"w {org}"}) for i in range(25)])
            store.index_pending(30)
            if start % 100 == 0:
                store.prune(org, T0 + dt.timedelta(seconds=start // 2))


def test_processes_sharing_the_store_append_index_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), org, 300)) for org in (ORG_A, ORG_B, ORG_A)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    with SqliteStore(path) as store:
        for org in (ORG_A, ORG_B):
            everything = [e.id for e in store.iter_events(EventQuery(org))]
            assert everything
            assert [e.id for e in store.iter_events(EventQuery(org, text=f"w {org}".lower()))] == everything
        index_all(store)
        check_index(path)


# --- a store of schema v1 (indexed on insert) ---


def _v1_store(path: Path) -> list[str]:
    """A v1 store as the library made it (`append` wrote the index rows): three indexed events."""
    events = [make_event(seconds=i, metadata={"note": f"legacy {i}"}) for i in range(3)]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        conn.execute(sqlite_backend._SCHEMA_TABLE)
        for statement in (*sqlite_backend._V1, *sqlite_backend._V1_FTS):
            conn.execute(statement)
        conn.execute("INSERT INTO centure_audit_schema VALUES ('store', 1, '2025-01-01')")
        conn.execute("INSERT INTO audit_orgs (organization_id, num) VALUES (?, 1)", (ORG_A,))
        for seq, event in enumerate(events, start=(1 << ORG_SHIFT) + 1):
            conn.execute(
                "INSERT INTO audit_events (seq, id, organization_id, occurred_at, action, actor_id, actor_name,"
                " actor_type, search_text, body, csv_row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, *event_row(event, with_csv=False)),
            )
        conn.execute("INSERT INTO audit_events_fts (rowid, search_text) SELECT seq, search_text FROM audit_events")
        conn.execute("COMMIT")
    return [e.id for e in events]


def test_a_v1_store_migrates_and_keeps_its_index(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    legacy = _v1_store(path)
    with SqliteStore(path) as store:
        assert store.has_fts
        versions = store._fetchall("SELECT version FROM centure_audit_schema ORDER BY version", ())
        assert versions == [(1,), (2,)]
        assert watermarks(store) == {1: (3, 3)}  # what v1 indexed is indexed
        triggers = {r[0] for r in store._fetchall("SELECT name FROM sqlite_master WHERE type = 'trigger'", ())}
        assert triggers == {"audit_events_after_delete", "audit_events_search_after_delete"}
        new = make_event(seconds=10, metadata={"note": "legacy 10"})
        store.append([new])
        assert index_rows(store) == 3  # an append no longer indexes: the batches do
        assert search(store, "legacy") == [new.id, *reversed(legacy)]
        store.prune(ORG_A, T0 + dt.timedelta(seconds=1))
        assert search(store, "legacy") == [new.id, legacy[2], legacy[1]]
        check_index(path)
    # A process still on v1 would index on insert into the old table: it is gone, so its append fails (and is
    # retried by its dispatcher) rather than index an event twice.
    with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.OperationalError, match="no such table"):
        conn.execute("INSERT INTO audit_events_fts (rowid, search_text) VALUES (1, 'x')")


def test_a_relays_store_is_indexed_when_its_sender_has_nothing_to_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from centure_audit_middleware.delivery.relay import Relay

    monkeypatch.setattr(store_sink_module, "INDEX_QUIET", 0.2)
    outbox, path = tmp_path / "outbox.db", tmp_path / "audit.db"
    app = Auditor(sinks=[StoreSink(path)], outbox=outbox, geoip=False, delivery="relay")
    for i in range(20):
        app.record("report.export", actor=Actor("user_1"), organization=ORG_A, metadata={"n": i})
    assert app.flush(5)
    app.close()
    relay = Relay([StoreSink(path)], outbox)  # no committer there: the store's sender has the idle moments
    relay.start()
    try:
        assert relay.flush(10)
        with SqliteStore(path, create=False) as store:
            assert wait_until(lambda: watermarks(store)[1] == (20, 20), 10), watermarks(store)
    finally:
        relay.close()
    check_index(path)
