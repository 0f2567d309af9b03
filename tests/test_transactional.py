"""Transactional recording (`audit.bind(tx)`, `audit.record(..., transaction=tx)`): the event commits if and only if
the app's transaction commits (RELIABILITY row 26). A real PostgreSQL server holds the app's table and the outbox;
the real WorkOS SDK delivers to the emulator; the local store is a real SQLite store."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from centure_audit_middleware import Auditor, Target, audit, audited
from centure_audit_middleware.delivery.relay import Relay
from centure_audit_middleware.sinks import MemorySink, StoreSink, WorkOSSink
from centure_audit_middleware.store import open_store
from centure_audit_middleware.store.query import EventQuery
from centure_audit_middleware.testing import AuditLog, WorkOSEmulator
from centure_audit_middleware.transactional import TransactionalRecordingError

from .conftest import ALICE, ORG, fastapi_app_as_alice
from .pg_outbox_fixtures import pg_outbox_url
from .reliability_support import wait_until

__all__ = ["pg_outbox_url"]  # the fixture, imported for pytest

pytestmark = pytest.mark.postgres


class RolledBack(Exception):
    pass


@pytest.fixture
def pool(pg_outbox_url: str) -> Iterator[object]:
    """The app's own connection pool, on the same database (and schema) as the outbox."""
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg_outbox_url, min_size=1, max_size=4) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE orders (id text PRIMARY KEY)")
        yield pool


def orders_app(auditor: Auditor, pool: object) -> FastAPI:
    app = fastapi_app_as_alice()

    @app.post("/orders/{order_id}")
    @audited("order.create", targets=[Target.from_path("order", "order_id")])
    def create_order(order_id: str, fail: bool = False) -> dict[str, str]:
        try:
            with pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
                audit.bind(conn)
                audit.record("order.note", targets=[Target("order", id=order_id)])  # bound too
                if fail:
                    raise RolledBack(order_id)
        except RolledBack:
            raise HTTPException(409, "rolled back") from None
        return {"created": order_id}

    auditor.install(app)
    return app


def delivered_targets(emulator: WorkOSEmulator, action: str) -> Counter[str]:
    return Counter(e.event["targets"][0]["id"] for e in emulator.events if e.event["action"] == action)


def test_a_third_of_a_thousand_transactions_roll_back_and_only_the_committed_are_recorded(
    pg_outbox_url: str, pool: object, workos_emulator: WorkOSEmulator, tmp_path: Path
) -> None:
    """Row 26: 1,000 requests record in their transaction; a random third roll back after recording. The store and
    WorkOS receive exactly the committed two thirds, each once."""
    store_path = tmp_path / "store.db"
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos, StoreSink(store_path)], outbox=pg_outbox_url, geoip=False, record_failures=True)
    rng = random.Random(26)
    failing = {f"o{i}" for i in range(1000) if rng.random() < 1 / 3}
    try:
        client = TestClient(orders_app(auditor, pool))
        for i in range(1000):
            order = f"o{i}"
            response = client.post(f"/orders/{order}", params={"fail": order in failing})
            assert response.status_code == (409 if order in failing else 200)
        assert auditor.flush(60), auditor.stats()
    finally:
        auditor.close(10)
    committed = {f"o{i}" for i in range(1000)} - failing
    assert 250 < len(failing) < 420
    with pool.connection() as conn:  # type: ignore[attr-defined]
        assert {row[0] for row in conn.execute("SELECT id FROM orders")} == committed
    for action in ("order.create", "order.note"):
        targets = delivered_targets(workos_emulator, action)
        assert set(targets) == committed and set(targets.values()) == {1}, action
    store = open_store(str(store_path))
    try:
        stored = Counter(e.targets[0].id for e in store.iter_events(EventQuery(ORG, action="order.create")))
    finally:
        store.close()
    assert set(stored) == committed and set(stored.values()) == {1}


def test_a_committed_event_survives_the_app_process(
    pg_outbox_url: str, pool: object, workos_emulator: WorkOSEmulator
) -> None:
    """Once the app's transaction commits, the event is in the outbox: an app that never sends (relay mode) and is
    gone loses nothing; a relay delivers it."""
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    app_auditor = Auditor(sinks=[workos], outbox=pg_outbox_url, geoip=False, delivery="relay")
    client = TestClient(orders_app(app_auditor, pool))
    assert client.post("/orders/kept").status_code == 200
    assert client.post("/orders/gone", params={"fail": True}).status_code == 409
    app_auditor.close(1)  # the app's process is gone: it never sent anything
    assert workos_emulator.requests == []
    relay = Relay.for_auditor(app_auditor, pg_outbox_url)
    relay.start()
    try:
        assert wait_until(lambda: len(workos_emulator.events) >= 2, 20)
        assert relay.flush(10)
    finally:
        relay.close()
    assert delivered_targets(workos_emulator, "order.create") == Counter({"kept": 1})
    assert delivered_targets(workos_emulator, "order.note") == Counter({"kept": 1})


def test_a_sqlalchemy_session_binds_too(pg_outbox_url: str, workos_emulator: WorkOSEmulator) -> None:
    import sqlalchemy
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(pg_outbox_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE notes (id text PRIMARY KEY)"))
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos], outbox=pg_outbox_url, geoip=False, record_failures=True)
    app = FastAPI()

    @app.post("/notes/{note_id}")
    @audited("note.create", targets=[Target.from_path("note", "note_id")])
    def create(note_id: str, fail: bool = False) -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        with Session(engine) as session:
            session.execute(sqlalchemy.text("INSERT INTO notes (id) VALUES (:id)"), {"id": note_id})
            audit.bind(session)
            if fail:
                session.rollback()
                raise HTTPException(409)
            session.commit()
        return {"created": note_id}

    auditor.install(app)
    try:
        client = TestClient(app)
        for i in range(30):
            client.post(f"/notes/n{i}", params={"fail": i % 3 == 0})
        assert auditor.flush(20), auditor.stats()
    finally:
        auditor.close(5)
        engine.dispose()
    assert set(delivered_targets(workos_emulator, "note.create")) == {f"n{i}" for i in range(30) if i % 3}


def test_a_record_after_the_bound_transaction_ended_is_recorded_outside_it(
    pg_outbox_url: str, pool: object, workos_emulator: WorkOSEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the bound transaction committed, its connection is back in the pool (idle, or soon another request's):
    a later `audit.record()` must not be written through it, where nobody would commit it."""
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos], outbox=pg_outbox_url, geoip=False)
    app = fastapi_app_as_alice()

    @app.post("/orders/{order_id}")
    @audited("order.create", targets=[Target.from_path("order", "order_id")])
    def create_order(order_id: str) -> dict[str, str]:
        with pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
            audit.bind(conn)
        audit.record("order.notified", targets=[Target("order", id=order_id)])  # after the commit
        return {"created": order_id}

    auditor.install(app)
    try:
        with caplog.at_level("ERROR", logger="centure_audit_middleware"):
            assert TestClient(app).post("/orders/late").status_code == 200
        assert auditor.flush(20), auditor.stats()
    finally:
        auditor.close(5)
    assert delivered_targets(workos_emulator, "order.create") == Counter({"late": 1})
    assert delivered_targets(workos_emulator, "order.notified") == Counter({"late": 1})
    assert any("after the bound transaction ended" in r.getMessage() for r in caplog.records)


def test_a_job_records_in_its_transaction(pg_outbox_url: str, pool: object, workos_emulator: WorkOSEmulator) -> None:
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos], outbox=pg_outbox_url, geoip=False)
    try:
        for order, keep in (("job-kept", True), ("job-gone", False)):
            with pool.connection() as conn, conn.transaction(force_rollback=not keep):  # type: ignore[attr-defined]
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (order,))
                auditor.record(
                    "order.import",
                    actor=ALICE,
                    organization=ORG,
                    targets=[Target("order", id=order)],
                    transaction=conn,
                )
        assert auditor.flush(20)
    finally:
        auditor.close(5)
    assert delivered_targets(workos_emulator, "order.import") == Counter({"job-kept": 1})


def test_bind_needs_a_postgresql_outbox(tmp_path: Path, pg_outbox_url: str) -> None:
    import psycopg

    auditor = Auditor(sinks=[MemorySink()], outbox=tmp_path / "outbox.db", geoip=False)
    app = FastAPI()

    @app.post("/x")
    @audited("x.create")
    def create() -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        with psycopg.connect(pg_outbox_url) as conn:
            audit.bind(conn)
        return {}

    auditor.install(app)
    try:
        with pytest.raises(TransactionalRecordingError, match="outbox on PostgreSQL"):
            TestClient(app).post("/x")
    finally:
        auditor.close(1)


def test_bind_refuses_what_it_cannot_write_through(pg_outbox_url: str) -> None:
    import psycopg

    auditor = Auditor(sinks=[MemorySink()], outbox=pg_outbox_url, geoip=False)
    app = FastAPI()

    @app.post("/x")
    @audited("x.create")
    async def create() -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        async with await psycopg.AsyncConnection.connect(pg_outbox_url) as conn:
            audit.bind(conn)
        return {}

    @app.post("/y")
    @audited("y.create")
    async def other() -> dict[str, str]:
        audit.bind("a string")
        return {}

    @app.post("/z")
    @audited("z.create")
    async def sync_for_async() -> dict[str, str]:
        with psycopg.connect(pg_outbox_url) as conn:
            await audit.abind(conn)
        return {}

    auditor.install(app)
    try:
        client = TestClient(app)
        with pytest.raises(TransactionalRecordingError, match=r"synchronous .* await audit\.abind"):
            client.post("/x")
        with pytest.raises(TransactionalRecordingError, match="psycopg connection or a SQLAlchemy"):
            client.post("/y")
        with pytest.raises(TransactionalRecordingError, match=r"AsyncConnection .* audit\.bind\(\)"):
            client.post("/z")
    finally:
        auditor.close(1)


def test_async_apps_bind_with_await_abind(pg_outbox_url: str, workos_emulator: WorkOSEmulator) -> None:
    """psycopg's AsyncConnection and SQLAlchemy's AsyncSession: the events commit with the transaction, or not at
    all; records made after `await audit.abind()` go in with the next one."""
    import psycopg
    import sqlalchemy
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(pg_outbox_url.replace("postgresql://", "postgresql+psycopg://", 1))
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos], outbox=pg_outbox_url, geoip=False, record_failures=True)
    app = fastapi_app_as_alice()

    @app.post("/psycopg/{item}")
    @audited("item.create", targets=[Target.from_path("item", "item")])
    async def with_psycopg(item: str, fail: bool = False) -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(pg_outbox_url) as conn:
            try:
                async with conn.transaction():
                    await conn.execute("INSERT INTO items (id) VALUES (%s)", (item,))
                    await audit.abind(conn)
                    audit.record("item.note", targets=[Target("item", id=item)])
                    await audit.abind(conn)  # the note, recorded after the first
                    if fail:
                        raise RolledBack(item)
            except RolledBack:
                raise HTTPException(409) from None
        return {"id": item}

    @app.post("/sqlalchemy/{item}")
    @audited("item.create", targets=[Target.from_path("item", "item")])
    async def with_sqlalchemy(item: str, fail: bool = False) -> dict[str, str]:
        async with AsyncSession(engine) as session:
            await session.execute(sqlalchemy.text("INSERT INTO items (id) VALUES (:id)"), {"id": item})
            await audit.abind(session)
            if fail:
                await session.rollback()
                raise HTTPException(409)
            await session.commit()
        return {"id": item}

    auditor.install(app)
    try:
        with psycopg.connect(pg_outbox_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id text PRIMARY KEY)")
        client = TestClient(app)
        for i in range(12):
            kind = "psycopg" if i % 2 else "sqlalchemy"
            assert client.post(f"/{kind}/a{i}", params={"fail": i % 3 == 0}).status_code == (409 if i % 3 == 0 else 200)
        assert auditor.flush(20), auditor.stats()
    finally:
        auditor.close(5)
        import asyncio

        asyncio.run(engine.dispose())
    kept = {f"a{i}" for i in range(12) if i % 3}
    assert set(delivered_targets(workos_emulator, "item.create")) == kept
    assert set(delivered_targets(workos_emulator, "item.note")) == {i for i in kept if int(i[1:]) % 2}
    assert set(delivered_targets(workos_emulator, "item.create").values()) == {1}


def test_under_the_audit_log_fixture_bound_events_are_recorded_without_a_database(audit_log: AuditLog) -> None:
    class FakeConnection:  # what an app's test double of its database might be: no PostgreSQL needed
        def cursor(self) -> None:
            raise AssertionError("nothing is written in tests")

    auditor = Auditor.for_tests()
    app = FastAPI()

    @app.post("/orders/{order_id}")
    @audited("order.create", targets=[Target.from_path("order", "order_id")])
    def create(order_id: str) -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        audit.bind(FakeConnection())
        audit.record("order.note", targets=[Target("order", id=order_id)])  # bound: written with the rest
        return {}

    auditor.install(app)
    assert TestClient(app).post("/orders/o1").status_code == 200
    audit_log.assert_recorded("order.create", actor=ALICE.id, targets=[Target("order", id="o1")])
    # A job's record in its transaction (`transaction=`), under the fixture too.
    auditor.record("order.import", actor=ALICE, organization=ORG, transaction=FakeConnection())
    assert audit_log.actions == ["order.create", "order.note", "order.import"]


def test_a_record_after_abind_never_awaited_again_is_recorded_and_said(
    audit_log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    class FakeAsyncConnection:  # an app's test double of its async connection
        def cursor(self) -> None:
            raise AssertionError("nothing is written in tests")

        async def execute(self, *args: object) -> None:
            raise AssertionError("nothing is written in tests")

    auditor = Auditor.for_tests()
    app = fastapi_app_as_alice()

    @app.post("/orders/{order_id}")
    @audited("order.create", targets=[Target.from_path("order", "order_id")])
    async def create(order_id: str) -> dict[str, str]:
        await audit.abind(FakeAsyncConnection())
        audit.record("order.note", targets=[Target("order", id=order_id)])  # and no second abind
        return {}

    auditor.install(app)
    with caplog.at_level("ERROR", logger="centure_audit_middleware"):
        assert TestClient(app).post("/orders/o2").status_code == 200
    assert audit_log.actions == ["order.create", "order.note"]
    assert any("after await audit.abind()" in r.getMessage() for r in caplog.records)


def test_bound_twice_or_durable_too_the_event_is_written_once(audit_log: AuditLog) -> None:
    class FakeConnection:
        def cursor(self) -> None:
            raise AssertionError("nothing is written in tests")

    auditor = Auditor.for_tests()
    app = fastapi_app_as_alice()

    @app.post("/orders/{order_id}")
    @audited("order.create", targets=[Target.from_path("order", "order_id")], durable=True)
    def create(order_id: str) -> dict[str, str]:
        audit.bind(FakeConnection())  # the first transaction
        audit.bind(FakeConnection())  # a second one: only later records go there
        return {}

    auditor.install(app)
    assert TestClient(app).post("/orders/o3").status_code == 200
    assert audit_log.actions == ["order.create"]
